"""The tip intake conversation: interprets the flow in ``handlers.flow`` for one message.

The conversation's state is a :class:`handlers.state.Report`; every function here takes it and
changes it in place (the engine saves it, or deletes the draft when a function returns None).

How a message is understood, in order (the words themselves are in the catalogues, read by
``handlers.understanding``):

1. a danger phrase, at any step, marks the report urgent (like answering Yes), keeps the message
   where it belongs and asks Where next if it is not known;
2. a control word (EXIT, HELP, LANG, BACK, SKIP, DONE) acts; one that is only *maybe* EXIT (a typo,
   or inside a short phrase) is asked about once ("Stop and erase?") instead of being stored;
3. an answer: an option's number (any script), its label, or the words people use for it;
4. anything else is kept: as the step's answer as typed, or, when it describes something or names
   a place, in the details (and as the place); the question is asked once more at most.
"""

from __future__ import annotations

from bot.messages import Choice, InboundKind, Purpose
from handlers import filing, pictures, prompts
from handlers.flow import BY_ID, FIRST_STEP, QUESTION_AFTER_LANGUAGE, REPORT_STEPS, Effect, Option, Step, StepKind
from handlers.language_id import identify
from handlers.replies import (
    SUPPORTED_LANGUAGES,
    has_substance,
    hinted_language,
    language_of_text,
    option_for,
    pieces,
    worth_keeping,
)
from handlers.state import ConversationState, Report
from handlers.turn import Turn
from handlers.understanding import DANGER, DANGER_ALONE, NO, PLACE, YES, Certainty, Control, Reading
from handlers.words import choice_value, fold


# --- starting -----------------------------------------------------------------------------------


async def start(turn: Turn, reading: Reading) -> Report:
    """A message from someone with no draft opens a conversation (a Telegram deep-link payload
    arrives here too: it is a first message like any other). What it says is kept."""
    msg = turn.msg
    text = reading.text
    state = Report(channel=msg.channel, started_at=turn.now)
    language = hinted_language(msg.language_hint) or reading.language or language_of_text(turn, text)
    if reading.control is None and worth_keeping(turn, text):
        _keep_described(turn, state, text)
    if not language and text and identify(text) == "other":
        state.language_unknown = True
    state.pictures = await pictures.keep_with_draft(turn, language or "en", 0)
    state.language = language
    if reading.danger:
        await _urgent(turn, state)
    if language:
        await _enter(turn, state, QUESTION_AFTER_LANGUAGE)
    else:
        if state.language_unknown:
            turn.say("en", "language.other", support_line=_support_number(turn))
        prompts.show(turn, state)
    return state


def resume(turn: Turn, state: Report) -> None:
    """Show where an unfinished draft stands (console start-up)."""
    turn.say(state.speaking, "resume")
    prompts.show(turn, state)


# --- answering ----------------------------------------------------------------------------------


async def answer(turn: Turn, state: Report, reading: Reading) -> ConversationState | None:
    """Apply one message to a report. Returns the state, or None when the draft is finished."""
    step = BY_ID[state.step]
    text = reading.text
    if turn.msg.kind is InboundKind.UNSUPPORTED:
        turn.say(state.speaking, "unsupported")
        prompts.show(turn, state)
        return state
    if turn.msg.kind is InboundKind.START:
        # "/start" again, or a deep link opened mid-conversation: never an answer (a "?start=1"
        # link at the danger question must not raise an urgent alert).
        prompts.show(turn, state)
        return state
    if turn.msg.has_media:
        state.pictures = await pictures.keep_with_draft(turn, state.speaking, state.pictures, state.tip_id)
        if not text:
            prompts.show(turn, state)  # a picture alone answers no question: where we are, again
            return state
    if state.confirming_exit is not None:
        return await _confirm_exit(turn, state, step, reading)
    if reading.danger and (state.answers.danger != "yes" or step.id == "danger"):
        # At the danger question itself (BACK, or the change menu) a danger phrase is Yes, even
        # when the report is already urgent.
        return await _danger_said(turn, state, step, text)
    if reading.control is not None:
        acted = await _control(turn, state, step, reading)
        if acted is not _NOT_A_CONTROL:
            return acted  # type: ignore[return-value]
    return await _answer_step(turn, state, step, text)


_NOT_A_CONTROL = object()


async def _control(turn: Turn, state: Report, step: Step, reading: Reading) -> object:
    """Act on a control word; ``_NOT_A_CONTROL`` when it does not apply here (then it is text)."""
    language = state.speaking
    control = reading.control
    if reading.maybe(Control.EXIT):
        state.confirming_exit = reading.text
        ask_to_confirm_exit(turn, language)
        return state
    if reading.maybe(Control.DONE) and step.kind is StepKind.MULTI_TEXT:
        if len(fold(reading.text).split()) > 2:
            state.keep(pieces(reading.text, turn.config.max_text_chars))  # "that's all, the van is white"
        return await _advance(turn, state, step)
    if reading.maybe(Control.LANG) and step.kind is StepKind.CHOICE:
        control = Control.LANG
    elif reading.certainty is not Certainty.CERTAIN:
        return _NOT_A_CONTROL  # a maybe-DONE or maybe-LANG elsewhere is just what they typed
    if control is Control.EXIT:
        await filing.erase(turn, state)
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if control is Control.HELP:
        if state.language is None and reading.language in SUPPORTED_LANGUAGES:
            state.language = language = reading.language
        turn.say(language, "help.flow")
        prompts.show(turn, state)
        return state
    if control is Control.LANG:
        return await _switch_language(turn, state, step, reading.text)
    if control is Control.BACK:
        return _back(turn, state, step)
    if control is Control.SKIP:
        if step.skippable:
            return await _record(turn, state, step, None)
        if step.kind is StepKind.CHOICE and option_for(turn, state, step, reading.text) is not None:
            return _NOT_A_CONTROL  # "none" may answer the question ("none" is also No)
        turn.say(language, "skip.refused")
        prompts.show(turn, state)
        return state
    if control is Control.DONE and step.kind is StepKind.MULTI_TEXT:
        return await _advance(turn, state, step)
    if control is Control.DONE and step.id == "review":
        return await _choose(turn, state, step, step.options[0])  # "done" at the review: send it
    if control is Control.DONE and step.kind is not StepKind.MULTI_TEXT:
        # "that's all" at When or Where is no answer: a question that may be skipped is; any
        # other is asked again.
        if step.skippable:
            return await _record(turn, state, step, None)
        turn.say(language, "reprompt.choice" if step.kind is StepKind.CHOICE else "reprompt.text")
        prompts.show(turn, state)
        return state
    return _NOT_A_CONTROL


def ask_to_confirm_exit(turn: Turn, language: str) -> None:
    """ "Stop and erase? 1 Yes 2 No", asked once instead of storing a message that may be an EXIT."""
    choices = (Choice("1", turn.text(language, "answer.yes")), Choice("2", turn.text(language, "answer.no")))
    text = "\n".join([turn.text(language, "exit.confirm"), *(f"{c.value} {c.label}" for c in choices)])
    turn.say_text(language, "exit.confirm", text, choices)


async def _confirm_exit(turn: Turn, state: Report, step: Step, reading: Reading) -> ConversationState | None:
    """The answer to "Stop and erase?": yes erases; no takes the earlier message as what it
    seemed to be (a slip at a numbered question is dropped and the question asked again); anything
    else is a new message (the earlier one is kept, not stored as an answer)."""
    pending, state.confirming_exit = state.confirming_exit or "", None
    if reading.danger:
        # "yes help me" is a call for help, never a yes to erasing.
        state.keep([pending])
        return await answer(turn, state, reading)
    said = turn.vocabulary.answer(reading.text, (YES, NO), state.speaking)
    if said == YES or reading.is_(Control.EXIT):
        await filing.erase(turn, state)
        turn.say(state.speaking, "erased", purpose=Purpose.ERASED)
        return None
    if said == NO:
        if step.kind is StepKind.CHOICE and option_for(turn, state, step, pending) is None and not has_substance(turn, pending):
            # "exti", then "no, I don't want to stop": a slip, not an answer; ask the question again.
            prompts.show(turn, state)
            return state
        if step.kind is StepKind.TEXT and not has_substance(turn, pending):
            # The same slip at Where is not the place ("Where: exti" over the farm named before);
            # it stays with the details, since "Quito" or "Exit 12" may be one, and Where is asked again.
            state.keep([pending])
            await filing.update_case(turn, state)
            prompts.show(turn, state)
            return state
        return await _answer_step(turn, state, step, pending)
    state.keep([pending])
    return await answer(turn, state, reading)


async def _switch_language(turn: Turn, state: Report, step: Step, text: str) -> ConversationState | None:
    """LANG: "francais svp" switches at once (at the language question it is the answer); plain
    LANG shows the language question."""
    named = turn.vocabulary.language_named(text)
    if named in SUPPORTED_LANGUAGES and step.id == FIRST_STEP:
        return await _choose(turn, state, step, next(o for o in step.options if o.answer == named))
    if named in SUPPORTED_LANGUAGES:
        state.language = named
        turn.say(named, "language.changed")
        prompts.show(turn, state)
        return state
    if step.id != FIRST_STEP:
        state.resume_step = step.id
    state.step = FIRST_STEP
    prompts.show(turn, state)
    return state


def _back(turn: Turn, state: Report, step: Step) -> Report:
    if step.id == "change":
        state.step = "review"
    elif step.id == FIRST_STEP and state.resume_step:
        state.step, state.resume_step = state.resume_step, None
    elif state.history and (step.id != FIRST_STEP or state.language):
        # (Before a language is chosen there is nothing to go back to: "danger" may already be in
        # the history when a danger phrase came first.)
        state.step = state.history[-1]
        state.history = state.history[:-1]
        state.returning = False
    else:
        turn.say(state.speaking, "back.first")
    prompts.show(turn, state)
    return state


async def _answer_step(turn: Turn, state: Report, step: Step, text: str) -> ConversationState | None:
    language = state.speaking
    if step.kind is StepKind.CHOICE:
        option = option_for(turn, state, step, text)
        if option is not None:
            if turn.vocabulary.says_more_than_an_answer(text):
                state.keep(pieces(text, turn.config.max_text_chars))  # "no idea, he took my passport"
            return await _choose(turn, state, step, option)
        if step.id == FIRST_STEP:
            return await _language_from_text(turn, state, text)
        return await _unplaced(turn, state, step, text)
    if not text:
        turn.say(language, "reprompt.text")
        prompts.show(turn, state)
        return state
    kept = pieces(text, turn.config.max_text_chars)
    if step.kind is StepKind.MULTI_TEXT:
        room = turn.config.max_details_messages - len(state.answers.details)
        if room <= 0:
            turn.say(language, "details.full")  # said, not silently dropped
            return state
        state.keep(kept[:room])
        await filing.update_case(turn, state)
        turn.say(language, "details.full" if len(kept) > room else "details.more")
        return state
    if _bare_yes_no(turn, text, language):
        # "y" at Where is no place (it once replaced the motel named before, and was alerted as
        # "Place: y"). Asked once more; a second time the question keeps what it held.
        if state.reasked == step.id:
            return await _record(turn, state, step, state.answers.get(step.id))  # type: ignore[arg-type]
        state.reasked = step.id
        turn.say(language, "reprompt.text")
        prompts.show(turn, state)
        return state
    if choice_value(text) is not None and state.reasked != step.id:
        # "2" at Where is most likely an answer to an earlier question: ask once more.
        state.reasked = step.id
        turn.say(language, "reprompt.text")
        prompts.show(turn, state)
        return state
    if len(kept) > 1:
        state.keep(kept[1:])  # the rest of a very long answer is kept as details
    return await _record(turn, state, step, kept[0])


async def _unplaced(turn: Turn, state: Report, step: Step, text: str) -> ConversationState | None:
    """A reply that is none of the options: kept, never discarded. Something that describes or
    names a place goes to the details (and the place), and the question is asked once more;
    anything else is that step's answer as typed ("farm work", "yesterday")."""
    language = state.speaking
    if not text:
        turn.say(language, "reprompt.choice")
        prompts.show(turn, state)
        return state
    described = has_substance(turn, text) or turn.vocabulary.mentions(text, PLACE)
    if step.meta:
        # At the review or the contact question a name or a word more is kept too ("Rob Smith").
        if described or turn.vocabulary.says_more_than_an_answer(text):
            _keep_described(turn, state, text)
            await filing.update_case(turn, state)
            turn.say(language, "kept.noted")
        else:
            turn.say(language, "reprompt.choice")
        prompts.show(turn, state)
        return state
    if described:
        _keep_described(turn, state, text)
        if state.reasked != step.id:
            state.reasked = step.id
            await filing.update_case(turn, state)
            turn.say(language, "kept.noted")
            prompts.show(turn, state)
            return state
        return await _record(turn, state, step, None)  # asked twice: it stays in the details
    if _bare_yes_no(turn, text, language):
        # A bare "y" or "no" at a question that is not yes/no says nothing about it: never kept as
        # the answer ("What: y"); "no he left" says more and is kept as typed. Asked once more, a
        # second time the question is left unanswered.
        if state.reasked == step.id:
            return await _record(turn, state, step, None)
        state.reasked = step.id
        turn.say(language, "reprompt.choice")
        prompts.show(turn, state)
        return state
    return await _record(turn, state, step, text)


def _bare_yes_no(turn: Turn, text: str, language: str) -> bool:
    """A "y", "no", "ouais" and nothing more ("no he left" says more)."""
    if turn.vocabulary.says_more_than_an_answer(text):
        return False
    return turn.vocabulary.answer(text, (YES, NO), language, numbered=False) is not None


def _keep_described(turn: Turn, state: Report, text: str) -> None:
    """A description typed early goes to the details; one that names a place is also the place
    until the person answers Where (they are asked it all the same)."""
    state.keep(pieces(text, turn.config.max_text_chars))
    if not state.answers.where and turn.vocabulary.mentions(text, PLACE):
        state.answers.where = text[: turn.config.max_text_chars]


async def _language_from_text(turn: Turn, state: Report, text: str) -> Report:
    """At the language prompt every message is kept. Words in English or French choose it; a
    message in another language gets one line pointing to the hotline's interpreters."""
    language = turn.vocabulary.language_named(text) or language_of_text(turn, text)
    if worth_keeping(turn, text):
        state.keep(pieces(text, turn.config.max_text_chars))
    if language in SUPPORTED_LANGUAGES:
        state.language = language
        await _enter(turn, state, QUESTION_AFTER_LANGUAGE)
        return state
    if identify(text) == "other":
        # Never "reply with one of the numbers" in a language the person does not read.
        again, state.language_unknown = state.language_unknown, True
        turn.say("en", "language.other_again" if again else "language.other", support_line=_support_number(turn))
    elif text:
        turn.say("en", "reprompt.choice")
    prompts.show(turn, state)
    return state


def _support_number(turn: Turn) -> str:
    return turn.config.support_line or turn.text("en", "support.default")


async def _danger_said(turn: Turn, state: Report, step: Step, text: str) -> ConversationState | None:
    """A danger phrase at a step of a report not yet urgent: urgent now, like answering Yes; the
    message is kept where it belongs; Where comes next if the place is not known."""
    await _urgent(turn, state)
    if step.id == "danger":
        if not any(turn.vocabulary.is_entry(text, key) for key in (DANGER, DANGER_ALONE, YES)):
            state.keep(pieces(text, turn.config.max_text_chars))  # "yes, he has a knife": more than Yes
        return await _record(turn, state, step, "yes", written=True)
    if step.kind is StepKind.TEXT:
        return await _record(turn, state, step, text[: turn.config.max_text_chars])
    _keep_described(turn, state, text)
    await filing.update_case(turn, state)
    if step.id == FIRST_STEP and state.language is None:
        prompts.show(turn, state)  # the place is asked once the language is known
        return state
    if "where" not in state.history:
        state.resume_step = None
        await _enter(turn, state, "where")
    else:
        prompts.show(turn, state)
    return state


async def _urgent(turn: Turn, state: Report) -> None:
    """Mark the report urgent and tell the person (in both languages while none is chosen)."""
    await filing.mark_urgent(turn, state)
    state.history = [*(s for s in state.history if s != "danger"), "danger"]
    for language in (state.language,) if state.language else SUPPORTED_LANGUAGES:
        turn.say(language, "danger.urgent")


async def _choose(turn: Turn, state: Report, step: Step, option: Option) -> ConversationState | None:
    language = state.speaking
    if option.effect is Effect.SET_LANGUAGE:
        state.language = option.answer
        if state.resume_step:
            state.step, state.resume_step = state.resume_step, None
            turn.say(option.answer, "language.changed")
            prompts.show(turn, state)
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
        prompts.show(turn, state)
        return state
    if option.goto:
        state.returning = True
        state.step = option.goto
        prompts.show(turn, state)
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
    state.reasked = None
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
    return _first_pending(state)


def _first_pending(state: Report) -> str | None:
    pending = [s for s in REPORT_STEPS if s.id not in state.history]
    if state.answers.danger == "yes":
        pending.sort(key=lambda s: not s.urgent_first)
    return pending[0].id if pending else BY_ID[REPORT_STEPS[-1].id].next


async def _enter(turn: Turn, state: Report, step_id: str | None) -> None:
    """Move to a step, showing notices on the way, then the step's prompt. A report question
    already answered (danger said early) is passed for the next one pending."""
    while step_id is not None and BY_ID[step_id].kind is StepKind.NOTICE:
        turn.say(state.speaking, BY_ID[step_id].question_key)
        step_id = BY_ID[step_id].next
    if step_id is not None and step_id in state.history and not state.returning:
        step_id = _first_pending(state)
    if step_id is not None:
        state.step = step_id
        prompts.show(turn, state)
