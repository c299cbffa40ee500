"""The tip intake conversation: interprets the flow in ``handlers.flow`` for one message.

The conversation's state is a :class:`handlers.state.Report`; every function here takes it and
changes it in place (the engine saves it, or deletes the draft when a function returns None).
"""

from __future__ import annotations

from bot.messages import Choice, InboundKind, Purpose
from handlers import filing
from handlers.alerts import answer_label
from handlers.flow import BY_ID, FIRST_STEP, QUESTION_AFTER_LANGUAGE, REPORT_STEPS, SKIP_VALUE, Effect, Option, Step, StepKind
from handlers.state import ConversationState, Report
from handlers.turn import Turn
from handlers.words import Word, choice_value, clean, fold, guess_language, has_substance

SUPPORTED_LANGUAGES = ("en", "fr")
SUMMARY_PREVIEW_CHARS = 40  # free text quoted back in the review: a short preview, never all of it


def hinted_language(hint: str | None) -> str | None:
    if not hint:
        return None
    code = hint.lower().replace("_", "-").split("-")[0]
    return code if code in SUPPORTED_LANGUAGES else None


def pieces(text: str, size: int) -> list[str]:
    """A long message kept whole, as pieces of at most ``size`` characters (never cut silently)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# --- starting -----------------------------------------------------------------------------------


async def start(turn: Turn, word: tuple[Word, str | None] | None) -> Report:
    """A message from someone with no draft: open a conversation (returns its state). A Telegram
    deep-link payload arrives here as the text of a START: it is a first message like any other."""
    msg = turn.msg
    text = clean(msg.text)
    state = Report(channel=msg.channel, started_at=turn.now)
    language = hinted_language(msg.language_hint) or (word[1] if word else None) or guess_language(text)
    if text and has_substance(text) and not word:
        state.answers.add_details(pieces(text, turn.config.max_text_chars))
    if msg.has_media:
        turn.say(language or "en", "media.note")
    if language:
        state.language = language
        await _enter(turn, state, QUESTION_AFTER_LANGUAGE)
    else:
        _prompt(turn, state)
    return state


def resume(turn: Turn, state: Report) -> None:
    """Show where an unfinished draft stands (console start-up)."""
    turn.say(state.speaking, "resume")
    _prompt(turn, state)


# --- answering ----------------------------------------------------------------------------------


async def answer(turn: Turn, state: Report, word: tuple[Word, str | None] | None) -> ConversationState | None:
    """Apply one message to a report. Returns the state, or None when the draft is finished."""
    step = BY_ID[state.step]
    language = state.speaking
    text = clean(turn.msg.text)

    if turn.msg.kind is InboundKind.UNSUPPORTED:
        turn.say(language, "unsupported")
        _prompt(turn, state)
        return state
    if turn.msg.kind is InboundKind.START:
        # "/start" again, or a deep link opened mid-conversation: never an answer (a "?start=1"
        # link at the danger question must not raise an urgent alert).
        _prompt(turn, state)
        return state
    if word:
        return await _global_word(turn, state, step, word[0], word[1])
    if turn.msg.has_media and not text:
        turn.say(language, "media.note")
        _prompt(turn, state)
        return state
    if turn.msg.has_media:
        turn.say(language, "media.note")
    return await _answer_step(turn, state, step, text)


async def _global_word(turn: Turn, state: Report, step: Step, word: Word, word_language: str | None) -> ConversationState | None:
    language = state.speaking
    if word is Word.EXIT:
        await filing.erase(turn, state)
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if word is Word.HELP:
        if state.language is None and word_language:
            state.language = language = word_language
        turn.say(language, "help.flow")
        _prompt(turn, state)
        return state
    if word is Word.LANG:
        if step.id != FIRST_STEP:
            state.resume_step = step.id
        state.step = FIRST_STEP
        _prompt(turn, state)
        return state
    if word is Word.BACK:
        return _back(turn, state, step)
    if word is Word.SKIP:
        if step.skippable:
            return await _record(turn, state, step, None)
        turn.say(language, "skip.refused")
        _prompt(turn, state)
        return state
    if word is Word.DONE and step.kind is StepKind.MULTI_TEXT:
        return await _advance(turn, state, step)
    # DONE anywhere else is just an unexpected answer.
    return await _answer_step(turn, state, step, clean(turn.msg.text))


def _back(turn: Turn, state: Report, step: Step) -> Report:
    if step.id == "change":
        state.step = "review"
    elif step.id == FIRST_STEP and state.resume_step:
        state.step, state.resume_step = state.resume_step, None
    elif state.history:
        state.step = state.history[-1]
        state.history = state.history[:-1]
        state.returning = False
    else:
        turn.say(state.speaking, "back.first")
    _prompt(turn, state)
    return state


async def _answer_step(turn: Turn, state: Report, step: Step, text: str) -> ConversationState | None:
    language = state.speaking
    if step.kind is StepKind.CHOICE:
        option = step.option_for(choice_value(text) or "") or _option_by_label(turn, step, text)
        if option is None and step.id == FIRST_STEP:
            return await _language_from_text(turn, state, text)
        if option is None:
            turn.say(language, "reprompt.choice")
            _prompt(turn, state)
            return state
        return await _choose(turn, state, step, option)
    if not text:
        turn.say(language, "reprompt.text")
        _prompt(turn, state)
        return state
    kept = pieces(text, turn.config.max_text_chars)
    if step.kind is StepKind.MULTI_TEXT:
        room = turn.config.max_details_messages - len(state.answers.details)
        if room <= 0:
            turn.say(language, "details.full")  # said, not silently dropped
            return state
        state.answers.add_details(kept[:room])
        await filing.update_case(turn, state)
        turn.say(language, "details.full" if len(kept) > room else "details.more")
        return state
    if len(kept) > 1:
        state.answers.add_details(kept[1:])  # the rest of a very long answer is kept as details
    return await _record(turn, state, step, kept[0])


def _option_by_label(turn: Turn, step: Step, text: str) -> Option | None:
    """Typed words work too: "yes", "oui", "Témoin"."""
    wanted = fold(text)
    if not wanted:
        return None
    for option in step.options:
        if any(fold(turn.text(lang, option.label_key)) == wanted for lang in turn.catalogues.languages):
            return option
    return None


async def _language_from_text(turn: Turn, state: Report, text: str) -> Report:
    """At the language prompt, plain words in a clear language choose it (and are kept if substantial)."""
    language = guess_language(text)
    if language is None:
        turn.say("en", "reprompt.choice")
        _prompt(turn, state)
        return state
    if has_substance(text):
        state.answers.add_details(pieces(text, turn.config.max_text_chars))
    state.language = language
    await _enter(turn, state, QUESTION_AFTER_LANGUAGE)
    return state


async def _choose(turn: Turn, state: Report, step: Step, option: Option) -> ConversationState | None:
    language = state.speaking
    if option.effect is Effect.SET_LANGUAGE:
        state.language = option.answer
        if state.resume_step:
            state.step, state.resume_step = state.resume_step, None
            turn.say(option.answer, "language.changed")
            _prompt(turn, state)
            return state
        await _enter(turn, state, step.next)
        return state
    if option.effect is Effect.SUBMIT:
        return await filing.submit(turn, state)
    if option.effect is Effect.CANCEL:
        await filing.erase(turn, state)
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if option.effect is Effect.CHANGE:
        state.step = "change"
        _prompt(turn, state)
        return state
    if option.goto:
        state.returning = True
        state.step = option.goto
        _prompt(turn, state)
        return state
    if option.effect is Effect.MARK_URGENT:
        await filing.mark_urgent(turn, state)
        turn.say(language, "danger.urgent")
    if option.effect is Effect.SUPPORT_LINE:
        line = turn.config.support_line or turn.text(language, "support.default")
        turn.say(language, "role.support", support_line=line)
    return await _record(turn, state, step, option.answer, written=option.effect is Effect.MARK_URGENT)


async def _record(turn: Turn, state: Report, step: Step, answer: str | None, *, written: bool = False) -> Report:
    """Keep an answer and move on. ``written``: the case already holds it (the urgent alert)."""
    if step.kind is not StepKind.MULTI_TEXT:
        state.answers.set(step.id, answer)
    if not written and not step.meta:
        await filing.update_case(turn, state)
    return await _advance(turn, state, step)


async def _advance(turn: Turn, state: Report, step: Step) -> Report:
    if not step.meta:
        state.history = [*(s for s in state.history if s != step.id), step.id]
    await _enter(turn, state, _following(state, step))
    return state


def _following(state: Report, step: Step) -> str | None:
    """Where the conversation goes after an answer: back to the review after a change; after a
    notice or a meta step, its ``next``; otherwise the first report question not yet answered, in
    the flow's order, except that an urgent report asks the ``urgent_first`` questions first."""
    if state.returning:
        state.returning = False
        return "review"
    if step.meta:
        return step.next
    pending = [s for s in REPORT_STEPS if s.id not in state.history]
    if state.answers.danger == "yes":
        pending.sort(key=lambda s: not s.urgent_first)
    return pending[0].id if pending else BY_ID[REPORT_STEPS[-1].id].next


async def _enter(turn: Turn, state: Report, step_id: str | None) -> None:
    """Move to a step, showing notices on the way, then the step's prompt."""
    while step_id is not None and BY_ID[step_id].kind is StepKind.NOTICE:
        turn.say(state.speaking, BY_ID[step_id].question_key)
        step_id = BY_ID[step_id].next
    if step_id is not None:
        state.step = step_id
        _prompt(turn, state)


# --- prompts ------------------------------------------------------------------------------------


def _prompt(turn: Turn, state: Report) -> None:
    step = BY_ID[state.step]
    language = state.speaking
    if step.id == "review":
        question = turn.text(language, step.question_key, summary=summary(turn, state))
    else:
        question = turn.text(language, step.question_key)
    choices = tuple(Choice(o.value, turn.text(language, o.label_key)) for o in step.options)
    if step.skippable and step.kind is StepKind.CHOICE:
        choices += (Choice(SKIP_VALUE, turn.text(language, "choice.skip")),)
    lines = [question, *(f"{c.value} {c.label}" for c in choices)]
    if step.kind is StepKind.MULTI_TEXT and state.answers.details:
        lines.append(turn.text(language, "details.kept"))
    turn.say_text(language, step.question_key, "\n".join(lines), choices)


def preview(text: str, limit: int = SUMMARY_PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def summary(turn: Turn, state: Report) -> str:
    language = state.speaking
    lines = []
    for step in REPORT_STEPS:
        value = state.answers.get(step.id)
        if step.kind is StepKind.MULTI_TEXT and value:
            shown = turn.text(language, "summary.details_count", count=len(value), preview=preview(value[0]))
        elif step.kind is StepKind.TEXT and isinstance(value, str):
            shown = preview(value)
        else:
            shown = answer_label(turn.catalogues, language, step.id, value)
        lines.append(f"{turn.text(language, step.summary_key)}: {shown}")
    return "\n".join(lines)
