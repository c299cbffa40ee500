"""The guided tip conversation (DESIGN §2) as data.

Each step is a value: an id, the catalogue key of its question, its numbered options (each with the
answer it records and an optional effect), where it goes next, and whether it may be skipped. The
engine in ``handlers.intake`` interprets these values; nothing about the order of questions lives in
code. ``validate_flow`` runs at start-up, and ``flow_diagram`` prints the flow as a Mermaid graph
(``python main.py flow``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class StepKind(str, Enum):
    CHOICE = "choice"  # numbered options
    TEXT = "text"  # one free-text answer
    MULTI_TEXT = "multi_text"  # several messages, ended by DONE / FINI
    NOTICE = "notice"  # shown, then the flow moves on without waiting


class Effect(str, Enum):
    SET_LANGUAGE = "set_language"
    MARK_URGENT = "mark_urgent"  # alert officers immediately, remind to call 911
    SUPPORT_LINE = "support_line"  # a person affected gets the 24/7 support line
    SUBMIT = "submit"
    CHANGE = "change"  # review → pick a step to change
    CANCEL = "cancel"


@dataclass(frozen=True)
class Option:
    value: str  # what the person types ("1")
    answer: str  # what is recorded ("yes")
    label_key: str  # catalogue key of its label
    effect: Effect | None = None
    goto: str | None = None  # overrides the step's next (used by the change menu)
    words: str | None = None  # catalogue word list of what people type for it ("words.yes")


@dataclass(frozen=True)
class Step:
    id: str
    kind: StepKind
    question_key: str
    next: str | None = None
    options: tuple[Option, ...] = ()
    skippable: bool = False
    summary_key: str | None = None  # label in the review summary; None = not summarised
    # True for steps that are not part of the report itself (language, review…): BACK skips them.
    meta: bool = False
    # Asked straight after someone says there is danger now: officers need it first.
    urgent_first: bool = False
    # A reply stating an age below this ("she is 16", "15 ans") picks the first option.
    age_below: int | None = None

    def option_for(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)


def _opts(*options: tuple[str, str, str, str] | tuple[str, str, str, str, Effect]) -> tuple[Option, ...]:
    """(value, answer, label key, word list[, effect]) for each option."""
    return tuple(Option(value, answer, label, *effect, words=words) for value, answer, label, words, *effect in options)


STEPS: tuple[Step, ...] = (
    Step(
        "language",
        StepKind.CHOICE,
        "language.question",
        next="safety",
        options=_opts(("1", "en", "language.en", "words.language.en", Effect.SET_LANGUAGE),
            ("2", "fr", "language.fr", "words.language.fr", Effect.SET_LANGUAGE),),
        meta=True,
    ),
    Step("safety", StepKind.NOTICE, "safety.notice", next="danger", meta=True),
    Step(
        "danger",
        StepKind.CHOICE,
        "danger.question",
        next="role",
        options=_opts(
            ("1", "yes", "answer.yes", "words.yes", Effect.MARK_URGENT),
            ("2", "no", "answer.no", "words.no"),
            ("3", "unsure", "answer.unsure", "words.dont_know"),
        ),
        summary_key="summary.danger",
    ),
    Step(
        "role",
        StepKind.CHOICE,
        "role.question",
        next="kind",
        options=_opts(
            ("1", "affected", "role.affected", "words.role.affected", Effect.SUPPORT_LINE),
            ("2", "witness", "role.witness", "words.role.witness"),
            ("3", "unsaid", "role.unsaid", "words.role.unsaid"),
        ),
        summary_key="summary.role",
    ),
    Step(
        "kind",
        StepKind.CHOICE,
        "kind.question",
        next="minors",
        options=_opts(
            ("1", "sexual", "kind.sexual", "words.kind.sexual"),
            ("2", "labour", "kind.labour", "words.kind.labour"),
            ("3", "other", "kind.other", "words.kind.other"),
        ),
        summary_key="summary.kind",
    ),
    Step(
        "minors",
        StepKind.CHOICE,
        "minors.question",
        next="where",
        options=_opts(
            ("1", "yes", "answer.yes", "words.yes"), ("2", "no", "answer.no", "words.no"), ("3", "unknown", "answer.dont_know", "words.dont_know")
        ),
        summary_key="summary.minors",
        age_below=18,
    ),
    Step("where", StepKind.TEXT, "where.question", next="when", skippable=True, summary_key="summary.where", urgent_first=True),
    Step(
        "when",
        StepKind.CHOICE,
        "when.question",
        next="details",
        options=_opts(
            ("1", "now", "when.now", "words.when.now"),
            ("2", "today", "when.today", "words.when.today"),
            ("3", "week", "when.week", "words.when.week"),
            ("4", "earlier", "when.earlier", "words.when.earlier"),
        ),
        skippable=True,
        summary_key="summary.when",
    ),
    Step("details", StepKind.MULTI_TEXT, "details.question", next="contact", skippable=True, summary_key="summary.details"),
    Step(
        "contact",
        StepKind.CHOICE,
        "contact.question",
        next="review",
        options=_opts(("1", "yes", "answer.yes", "words.yes"), ("2", "no", "answer.no", "words.no")),
        summary_key="summary.contact",
    ),
    Step(
        "review",
        StepKind.CHOICE,
        "review.question",
        options=_opts(
            ("1", "send", "review.send", "words.review.send", Effect.SUBMIT),
            ("2", "change", "review.change", "words.review.change", Effect.CHANGE),
            ("3", "cancel", "review.cancel", "words.exit", Effect.CANCEL),
        ),
        meta=True,
    ),
    Step(
        "change",
        StepKind.CHOICE,
        "change.question",
        options=tuple(
            Option(str(i), target, f"summary.{target}", goto=target)
            for i, target in enumerate(("danger", "role", "kind", "minors", "where", "when", "details", "contact"), start=1)
        ),
        meta=True,
    ),
    Step("submitted", StepKind.NOTICE, "submitted.receipt", meta=True),
)

FIRST_STEP = "language"
QUESTION_AFTER_LANGUAGE = "safety"
BY_ID: dict[str, Step] = {step.id: step for step in STEPS}
# The steps whose answers make up the report, in order (for the summary, alerts and exports).
REPORT_STEPS: tuple[Step, ...] = tuple(step for step in STEPS if step.summary_key)
SKIP_VALUE = "0"


class FlowError(Exception):
    pass


def step(step_id: str) -> Step:
    return BY_ID[step_id]


def catalogue_keys() -> set[str]:
    keys: set[str] = set()
    for s in STEPS:
        keys.add(s.question_key)
        keys.update(o.label_key for o in s.options)
        keys.update(o.words for o in s.options if o.words)
        if s.summary_key:
            keys.add(s.summary_key)
    return keys


def validate_flow(steps: Iterable[Step] = STEPS, known_keys: set[str] | None = None) -> None:
    """Every target exists, every step is reachable, choices are unique; with ``known_keys``,
    every catalogue key the flow uses exists. Raises FlowError naming the first problem."""
    steps = tuple(steps)
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise FlowError("duplicate step ids")
    by_id = {s.id: s for s in steps}
    for s in steps:
        targets = [s.next] + [o.goto for o in s.options]
        for target in targets:
            if target is not None and target not in by_id:
                raise FlowError(f"step {s.id!r} points to unknown step {target!r}")
        values = [o.value for o in s.options]
        if len(set(values)) != len(values):
            raise FlowError(f"step {s.id!r} has duplicate option values")
        if SKIP_VALUE in values:
            raise FlowError(f"step {s.id!r} uses {SKIP_VALUE!r}, which means skip")
        if s.kind is StepKind.CHOICE and not s.options:
            raise FlowError(f"choice step {s.id!r} has no options")
    reachable, todo = set(), [steps[0].id]
    while todo:
        current = by_id[todo.pop()]
        if current.id in reachable:
            continue
        reachable.add(current.id)
        todo.extend(t for t in [current.next, *(o.goto for o in current.options)] if t)
        if any(o.effect is Effect.CHANGE for o in current.options):
            todo.append("change")
        if any(o.effect is Effect.SUBMIT for o in current.options):
            todo.append("submitted")
    unreachable = set(ids) - reachable
    if unreachable:
        raise FlowError(f"unreachable steps: {sorted(unreachable)}")
    if known_keys is not None:
        missing = sorted(k for s in steps for k in _keys_of(s) if k not in known_keys)
        if missing:
            raise FlowError(f"catalogue keys missing: {missing}")


def _keys_of(s: Step) -> list[str]:
    words = [o.words for o in s.options if o.words]
    return [s.question_key, *(o.label_key for o in s.options), *([s.summary_key] if s.summary_key else []), *words]


def flow_diagram(steps: Iterable[Step] = STEPS) -> str:
    """The flow as a Mermaid flowchart."""
    lines = ["flowchart TD"]
    for s in steps:
        lines.append(f'    {s.id}["{s.id} ({s.kind.value})"]')
        if s.next:
            label = "answer" if s.kind is not StepKind.NOTICE else ""
            lines.append(f"    {s.id} -->|{label or 'then'}| {s.next}")
        for o in s.options:
            if o.goto:
                lines.append(f"    {s.id} -->|{o.value}| {o.goto}")
            elif o.effect in (Effect.MARK_URGENT, Effect.SUPPORT_LINE):
                lines.append(f"    {s.id} -.->|{o.value}: {o.effect.value}| {s.next}")
            elif o.effect is Effect.SUBMIT:
                lines.append(f"    {s.id} -->|{o.value} send| submitted")
            elif o.effect is Effect.CHANGE:
                lines.append(f"    {s.id} -->|{o.value} change| change")
            elif o.effect is Effect.CANCEL:
                lines.append(f"    {s.id} -->|{o.value} cancel| erased((erased))")
        if s.skippable:
            lines.append(f"    {s.id} -.->|0 skip| {s.next}")
    return "\n".join(lines)
