"""The typed, versioned state of a conversation: one model per mode.

A sender has at most one draft. What it holds depends on what the person is doing:

* :class:`Report` - a report being written through the guided flow;
* :class:`Addition` - ADD / AJOUT with a receipt, collecting lines until DONE;
* :class:`AnswerWindow` - the short time after CHECK showed the person an officer's reply, when
  their messages answer it;
* :class:`Sent` - the few minutes after a receipt, when "thanks" is small talk, not a new report.

Drafts are stored (encrypted) as the JSON document :func:`dump_state` makes, carrying ``v`` (the
version) and ``mode``. :func:`load_state` reads every version ever written: documents of version 1
(the untyped dicts of the first release) are upgraded on the way in. A document that cannot be
read raises :class:`StateError`, whose message names fields only, never a value (a value is what
somebody typed).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from handlers.flow import BY_ID, FIRST_STEP, REPORT_STEPS, StepKind

STATE_VERSION = 2


class StateError(Exception):
    """A stored draft that cannot be read as any known state."""


class _Model(BaseModel):
    # Unknown fields are ignored rather than refused: a draft written by a newer release must not
    # lock its sender out of an older one after a roll-back.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class Answers(_Model):
    """The report's answers, one field per report step of ``handlers.flow`` (checked at import).
    A choice holds its option's answer ("yes") or what the person typed; ``None`` is not answered
    or skipped. ``details`` is always a list: skipping it leaves it empty."""

    danger: str | None = None
    role: str | None = None
    kind: str | None = None
    minors: str | None = None
    where: str | None = None
    when: str | None = None
    details: list[str] = Field(default_factory=list)
    contact: str | None = None

    def get(self, step_id: str) -> str | list[str] | None:
        return getattr(self, _field(step_id))

    def set(self, step_id: str, value: str | None) -> None:
        if step_id == "details":
            raise ValueError("details are added with add_details")
        setattr(self, _field(step_id), value)

    def add_details(self, lines: list[str]) -> None:
        self.details = [*self.details, *lines]


def _field(step_id: str) -> str:
    if step_id not in Answers.model_fields:
        raise KeyError(f"no report step {step_id!r}")
    return step_id


class Report(_Model):
    mode: Literal["report"] = "report"
    v: Literal[2] = STATE_VERSION
    step: str = FIRST_STEP
    language: str | None = None
    answers: Answers = Field(default_factory=Answers)
    history: list[str] = Field(default_factory=list)  # answered report steps, for BACK
    channel: str = "unknown"
    started_at: float = 0.0
    returning: bool = False  # a change from the review goes back to the review
    resume_step: str | None = None  # the step LANG interrupted
    tip_id: str | None = None  # the case an urgent alert created
    urgent_repeated: bool = False  # that case was past the sender's hourly urgent-alert limit
    confirming_exit: str | None = None  # a message that may have meant EXIT, until the person says
    reasked: str | None = None  # the step asked once more after an answer it could not place
    language_unknown: bool = False  # the person wrote in neither English nor French
    pictures: int = Field(0, ge=0)  # pictures kept with this draft (storage holds them, by sender)

    @field_validator("step", "resume_step")
    @classmethod
    def _known_step(cls, value: str | None) -> str | None:
        # A conversation rests at a question, never at a notice (those are shown on the way).
        if value is not None and (value not in BY_ID or BY_ID[value].kind is StepKind.NOTICE):
            raise ValueError("not a step a conversation can rest at")
        return value

    @field_validator("history")
    @classmethod
    def _known_history(cls, value: list[str]) -> list[str]:
        return [step_id for step_id in value if step_id in Answers.model_fields]

    @property
    def speaking(self) -> str:
        """The language to answer in (English until one is chosen)."""
        return self.language or "en"

    def answered(self) -> dict[str, Any]:
        """The report's answers by step id, as a tip keeps them: every step that holds something
        or was answered (a skip records ``None``, so officers see it was asked)."""
        found: dict[str, Any] = {}
        for step in REPORT_STEPS:
            value = self.answers.get(step.id)
            if value not in (None, []) or step.id in self.history:
                found[step.id] = list(value) if isinstance(value, list) else value
        return found

    def has_substance(self) -> bool:
        """Worth filing if left unfinished: danger, a place, details or a picture. (A message waiting for
        "Stop and erase?" is not: it may have been an EXIT, and an exit is never filed.)"""
        a = self.answers
        return a.danger == "yes" or bool(a.where) or bool(a.details) or self.pictures > 0

    def keep(self, lines: list[str]) -> None:
        """Keep text the person typed that answers no question as it stands (never dropped)."""
        self.answers.add_details(lines)


class Addition(_Model):
    mode: Literal["add"] = "add"
    v: Literal[2] = STATE_VERSION
    tip_id: str
    lines: list[str] = Field(default_factory=list)
    language: str = "en"
    channel: str = "unknown"
    confirming_exit: str | None = None  # a line that may have meant EXIT, until the person says
    pictures: int = Field(0, ge=0)  # pictures waiting for DONE (storage holds them, by sender)

    @property
    def speaking(self) -> str:
        return self.language


class AnswerWindow(_Model):
    """Opened when CHECK showed the person an officer's reply: what they write next, for a short
    while, answers it. ``answer_ids`` are the follow-ups written in it (EXIT erases them)."""

    mode: Literal["answer"] = "answer"
    v: Literal[2] = STATE_VERSION
    tip_id: str
    language: str = "en"
    channel: str = "unknown"
    answer_ids: list[str] = Field(default_factory=list)
    picture_ids: list[str] = Field(default_factory=list)  # pictures sent in it (EXIT erases them too)

    @property
    def speaking(self) -> str:
        return self.language


class Sent(_Model):
    """Just after a receipt: "thanks" or "ok" is not a new report."""

    mode: Literal["sent"] = "sent"
    v: Literal[2] = STATE_VERSION
    tip_id: str
    language: str = "en"
    channel: str = "unknown"

    @property
    def speaking(self) -> str:
        return self.language


ConversationState = Report | Addition | AnswerWindow | Sent
_ADAPTER: TypeAdapter[ConversationState] = TypeAdapter(Annotated[ConversationState, Field(discriminator="mode")])


def dump_state(state: ConversationState) -> dict[str, Any]:
    return state.model_dump(mode="json")


def load_state(document: object) -> ConversationState:
    """Any stored version, upgraded to the current models."""
    if not isinstance(document, dict):
        raise StateError(f"draft state is a {type(document).__name__}, not an object")
    version = document.get("v", 1)
    if version == 1:
        try:
            document = _upgrade_v1(document)
        except (TypeError, ValueError, AttributeError) as exc:  # a v1 dict of an unexpected shape
            raise StateError(f"draft state v1 could not be upgraded ({type(exc).__name__})") from None
    elif version != STATE_VERSION:
        raise StateError(f"draft state version {version!r} is not known")
    try:
        return _ADAPTER.validate_python(document)
    except ValidationError as exc:
        # Field names only: pydantic's own message quotes the values.
        fields = sorted({".".join(str(p) for p in e["loc"]) or "-" for e in exc.errors()})
        raise StateError(f"draft state v{STATE_VERSION} unreadable at {', '.join(fields)}") from None


def _upgrade_v1(old: dict[str, Any]) -> dict[str, Any]:
    """Version 1 was an untyped dict: a report had no ``mode``; ADD and answer drafts had one."""
    mode = old.get("mode")
    common = {"v": STATE_VERSION, "channel": old.get("channel") or "unknown"}
    if mode == "add":
        lines = old.get("lines") or []
        return {**common, "mode": "add", "tip_id": old.get("tip_id"), "lines": _strings(lines), "language": old.get("language") or "en"}
    if mode == "answer":
        return {**common, "mode": "answer", "tip_id": old.get("tip_id"), "language": old.get("language") or "en"}
    answers = old.get("answers") if isinstance(old.get("answers"), dict) else {}
    upgraded: dict[str, Any] = {}
    for step in REPORT_STEPS:
        value = answers.get(step.id)
        if step.kind is StepKind.MULTI_TEXT:
            # v1 recorded a skipped details step as None, which later crashed on BACK (F2).
            upgraded[step.id] = _strings(value if isinstance(value, list) else [value] if value else [])
        elif value is not None:
            upgraded[step.id] = str(value)
    return {
        **common,
        "mode": "report",
        "step": old.get("step") if old.get("step") in _RESTING else FIRST_STEP,
        "language": old.get("language"),
        "answers": upgraded,
        "history": [s for s in old.get("history") or [] if isinstance(s, str)],
        "started_at": old.get("started_at") or 0.0,
        "returning": bool(old.get("returning")),
        "resume_step": old.get("resume_step") if old.get("resume_step") in _RESTING else None,
        "tip_id": old.get("tip_id"),
    }


_RESTING = {step_id for step_id, step in BY_ID.items() if step.kind is not StepKind.NOTICE}


def _strings(values: object) -> list[str]:
    return [str(v) for v in values if v is not None] if isinstance(values, list) else []


def _check_answers_cover_the_flow() -> None:
    missing = [s.id for s in REPORT_STEPS if s.id not in Answers.model_fields]
    if missing:
        raise RuntimeError(f"handlers.state.Answers has no field for report steps {missing}")


_check_answers_cover_the_flow()
