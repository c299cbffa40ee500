"""The tip intake conversation: interprets the flow in ``handlers.flow`` for one message.

The draft's state is a small JSON document (encrypted by storage):
``step`` the current step id, ``language``, ``answers`` per step, ``history`` of answered steps
for BACK, ``returning`` when a change from review should go back to review, ``resume_step`` when
LANG interrupted a step, and ``tip_id`` once an urgent alert created the case.
"""

from __future__ import annotations

from typing import Any

from bot.messages import Choice, InboundKind, Purpose
from handlers import filing
from handlers.alerts import answer_label
from handlers.flow import BY_ID, FIRST_STEP, QUESTION_AFTER_LANGUAGE, REPORT_STEPS, SKIP_VALUE, Effect, Step, StepKind
from handlers.turn import Turn
from handlers.words import Word, choice_value, clean, fold, guess_language, has_substance
from storage.records import Draft

State = dict[str, Any]
SUPPORTED_LANGUAGES = ("en", "fr")


def new_state(channel: str, now: float) -> State:
    return {"v": 1, "step": FIRST_STEP, "language": None, "answers": {}, "history": [], "channel": channel, "started_at": now}


def language_of(state: State) -> str:
    return state.get("language") or "en"


def hinted_language(hint: str | None) -> str | None:
    if not hint:
        return None
    code = hint.lower().replace("_", "-").split("-")[0]
    return code if code in SUPPORTED_LANGUAGES else None


# --- starting -----------------------------------------------------------------------------------


async def start(turn: Turn, word: tuple[Word, str | None] | None) -> State | None:
    """A message from someone with no draft: open a conversation (returns its state)."""
    msg = turn.msg
    text = clean(msg.text)
    state = new_state(msg.channel, turn.now)
    language = hinted_language(msg.language_hint) or (word[1] if word else None) or guess_language(text)
    if text and has_substance(text) and not word:
        state["answers"]["details"] = [text[: turn.config.max_text_chars]]
    if msg.has_media:
        turn.say(language or "en", "media.note")
    if language:
        state["language"] = language
        await _enter(turn, state, QUESTION_AFTER_LANGUAGE)
    else:
        _prompt(turn, state)
    return state


def resume(turn: Turn, state: State) -> None:
    """Show where an unfinished draft stands (console start-up)."""
    turn.say(language_of(state), "resume")
    _prompt(turn, state)


# --- answering ----------------------------------------------------------------------------------


async def answer(turn: Turn, draft: Draft, word: tuple[Word, str | None] | None) -> State | None:
    """Apply one message to a draft. Returns the new state, or None when the draft is finished."""
    state = draft.state
    step = BY_ID[state["step"]]
    language = language_of(state)
    text = clean(turn.msg.text)

    if turn.msg.kind is InboundKind.UNSUPPORTED:
        turn.say(language, "unsupported")
        _prompt(turn, state)
        return state
    if word:
        return await _global_word(turn, state, step, word[0], word[1])
    if turn.msg.kind is InboundKind.START and not text:
        _prompt(turn, state)
        return state
    if turn.msg.has_media and not text:
        turn.say(language, "media.note")
        _prompt(turn, state)
        return state
    if turn.msg.has_media:
        turn.say(language, "media.note")
    return await _answer_step(turn, state, step, text)


async def _global_word(turn: Turn, state: State, step: Step, word: Word, word_language: str | None) -> State | None:
    language = language_of(state)
    if word is Word.EXIT:
        await filing.erase(turn, state)
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if word is Word.HELP:
        if state.get("language") is None and word_language:
            state["language"] = language = word_language
        turn.say(language, "help.flow")
        _prompt(turn, state)
        return state
    if word is Word.LANG:
        if step.id != FIRST_STEP:
            state["resume_step"] = step.id
        state["step"] = FIRST_STEP
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
    return await _answer_step(turn, state, step, turn.msg.text)


def _back(turn: Turn, state: State, step: Step) -> State:
    history: list[str] = state["history"]
    if step.id == "change":
        state["step"] = "review"
    elif step.id == FIRST_STEP and state.get("resume_step"):
        state["step"] = state.pop("resume_step")
    elif history:
        state["step"] = history.pop()
        state.pop("returning", None)
    else:
        turn.say(language_of(state), "back.first")
    _prompt(turn, state)
    return state


async def _answer_step(turn: Turn, state: State, step: Step, text: str) -> State | None:
    language = language_of(state)
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
    text = text[: turn.config.max_text_chars]
    if step.kind is StepKind.MULTI_TEXT:
        details = state["answers"].setdefault(step.id, [])
        if len(details) >= turn.config.max_details_messages:
            turn.say(language, "details.full")  # said, not silently dropped
            return state
        details.append(text)
        turn.say(language, "details.more")
        return state
    return await _record(turn, state, step, text)


def _option_by_label(turn: Turn, step: Step, text: str):
    """Typed words work too: "yes", "oui", "Témoin"."""
    wanted = fold(text)
    if not wanted:
        return None
    for option in step.options:
        if any(fold(turn.text(lang, option.label_key)) == wanted for lang in turn.catalogues.languages):
            return option
    return None


async def _language_from_text(turn: Turn, state: State, text: str) -> State:
    """At the language prompt, plain words in a clear language choose it (and are kept if substantial)."""
    language = guess_language(text)
    if language is None:
        turn.say("en", "reprompt.choice")
        _prompt(turn, state)
        return state
    if has_substance(text):
        state["answers"].setdefault("details", []).append(text[: turn.config.max_text_chars])
    state["language"] = language
    await _enter(turn, state, QUESTION_AFTER_LANGUAGE)
    return state


async def _choose(turn: Turn, state: State, step: Step, option) -> State | None:
    language = language_of(state)
    if option.effect is Effect.SET_LANGUAGE:
        state["language"] = option.answer
        resume_step = state.pop("resume_step", None)
        if resume_step:
            state["step"] = resume_step
            turn.say(option.answer, "language.changed")
            _prompt(turn, state)
            return state
        await _enter(turn, state, step.next)
        return state
    if option.effect is Effect.SUBMIT:
        await filing.submit(turn, state)
        return None
    if option.effect is Effect.CANCEL:
        await filing.erase(turn, state)
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if option.effect is Effect.CHANGE:
        state["step"] = "change"
        _prompt(turn, state)
        return state
    if option.goto:
        state["returning"] = True
        state["step"] = option.goto
        _prompt(turn, state)
        return state
    if option.effect is Effect.MARK_URGENT:
        await filing.mark_urgent(turn, state)
        turn.say(language, "danger.urgent")
    if option.effect is Effect.SUPPORT_LINE:
        line = turn.config.support_line or turn.text(language, "support.default")
        turn.say(language, "role.support", support_line=line)
    return await _record(turn, state, step, option.answer)


async def _record(turn: Turn, state: State, step: Step, answer: object) -> State:
    state["answers"][step.id] = answer
    return await _advance(turn, state, step)


async def _advance(turn: Turn, state: State, step: Step) -> State:
    if not step.meta:
        history: list[str] = state["history"]
        if step.id in history:
            history.remove(step.id)
        history.append(step.id)
    target = "review" if state.pop("returning", False) else step.next
    await _enter(turn, state, target)
    return state


async def _enter(turn: Turn, state: State, step_id: str | None) -> None:
    """Move to a step, showing notices on the way, then the step's prompt."""
    while step_id is not None:
        step = BY_ID[step_id]
        state["step"] = step_id
        if step.kind is not StepKind.NOTICE:
            break
        turn.say(language_of(state), step.question_key)
        step_id = step.next
    _prompt(turn, state)


# --- prompts ------------------------------------------------------------------------------------


def _prompt(turn: Turn, state: State) -> None:
    step = BY_ID[state["step"]]
    language = language_of(state)
    if step.id == "review":
        question = turn.text(language, step.question_key, summary=summary(turn, state))
    else:
        question = turn.text(language, step.question_key)
    choices = tuple(Choice(o.value, turn.text(language, o.label_key)) for o in step.options)
    if step.skippable and step.kind is StepKind.CHOICE:
        choices += (Choice(SKIP_VALUE, turn.text(language, "choice.skip")),)
    lines = [question, *(f"{c.value} {c.label}" for c in choices)]
    if step.kind is StepKind.MULTI_TEXT and state["answers"].get(step.id):
        lines.append(turn.text(language, "details.kept"))
    turn.say_text(language, step.question_key, "\n".join(lines), choices)


def summary(turn: Turn, state: State) -> str:
    language = language_of(state)
    answers = state["answers"]
    lines = []
    for step in REPORT_STEPS:
        value = answers.get(step.id)
        if step.kind is StepKind.MULTI_TEXT and value:
            preview = value[0] if len(value[0]) <= 40 else value[0][:39] + "…"
            shown = turn.text(language, "summary.details_count", count=len(value), preview=preview)
        else:
            shown = answer_label(turn.catalogues, language, step.id, value)
        lines.append(f"{turn.text(language, step.summary_key)}: {shown}")
    return "\n".join(lines)
