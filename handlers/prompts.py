"""What a report's current step looks like when it is asked: the question, its numbered choices
(buttons on Telegram), and the review's summary, which quotes free text only as a short preview."""

from __future__ import annotations

from bot.messages import Choice
from bot.i18n import Catalogues
from handlers.flow import BY_ID, REPORT_STEPS, SKIP_VALUE, StepKind
from handlers.state import Report
from handlers.turn import Turn

# Free text quoted back in the review: a short preview, never all of it (a 1,600-character answer
# must not make every re-prompt cost 13 SMS segments).
SUMMARY_PREVIEW_CHARS = 40


def answer_label(catalogues: Catalogues, language: str, step_id: str, answer: object) -> str:
    """A recorded answer in the person's own words, as their review shows it ("-" when skipped)."""
    if answer in (None, "", []):
        return catalogues.text(language, "summary.skipped")
    step = BY_ID[step_id]
    if step.kind is StepKind.CHOICE:
        option = next((o for o in step.options if o.answer == answer), None)
        return catalogues.text(language, option.label_key) if option else str(answer)
    if isinstance(answer, list):
        return " / ".join(str(a) for a in answer)
    return str(answer)


def show(turn: Turn, state: Report) -> None:
    """Ask the current step's question."""
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
        elif isinstance(value, str) and (step.kind is StepKind.TEXT or answer_label(turn.catalogues, language, step.id, value) == value):
            shown = preview(value)  # free text, or a choice answered in the person's own words
        else:
            shown = answer_label(turn.catalogues, language, step.id, value)
        lines.append(f"{turn.text(language, step.summary_key)}: {shown}")
        if step.kind is StepKind.MULTI_TEXT and state.pictures:
            lines.append(f"{turn.text(language, 'summary.pictures')}: {state.pictures}")
    return "\n".join(lines)
