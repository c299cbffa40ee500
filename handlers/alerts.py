"""Officer alerts: queued in the outbox inside the tip's own transaction, rendered at delivery.

An alert row holds only the event and the tip id; the text is rendered from the tip when it is
sent, in the officers' language, so an alert never carries more than the deployment allows.
A notice row (``{"kind": "notice", "notice": ...}``) goes the same way to the same sinks but is
about the service, not a tip (for instance, someone guessing receipt codes).
"""

from __future__ import annotations

import uuid
from enum import Enum

from bot.i18n import Catalogues
from handlers.flow import BY_ID, REPORT_STEPS, StepKind
from storage.interfaces import Repositories
from storage.records import OutboxItem, OutboxStatus, Tip


class AlertEvent(str, Enum):
    URGENT = "urgent"
    NEW = "new"
    INCOMPLETE = "incomplete"
    WITHDRAWN = "withdrawn"
    ADDITION = "addition"
    ANSWER = "answer"  # the tipster answered an officer's reply
    UPDATE = "update"  # an urgent case filled in while the person is still answering
    CLEARED = "cleared"  # the person corrected "danger now" to no


_TITLE_KEYS = {
    AlertEvent.URGENT: "alert.urgent",
    AlertEvent.NEW: "alert.new",
    AlertEvent.INCOMPLETE: "alert.incomplete",
    AlertEvent.WITHDRAWN: "alert.withdrawn",
    AlertEvent.ADDITION: "alert.addition",
    AlertEvent.ANSWER: "alert.answer",
    AlertEvent.UPDATE: "alert.update",
    AlertEvent.CLEARED: "alert.cleared",
}


async def enqueue_alert(
    tx: Repositories, tip: Tip, event: AlertEvent, sinks: tuple[str, ...], now: float, followup_ids: list[str] | None = None
) -> int:
    """One outbox row per officer sink. ``followup_ids`` name the texts an ADDITION/ANSWER is about."""
    priority = 2 if tip.urgent else 1 if tip.minor else 0
    payload: dict[str, object] = {"kind": "alert", "event": event.value, "tip_id": tip.id}
    if followup_ids:
        payload["followup_ids"] = followup_ids
    for sink in sinks:
        await tx.outbox.add(
            OutboxItem(
                id=uuid.uuid4().hex,
                sink=sink,
                payload=payload,
                status=OutboxStatus.PENDING,
                attempts=0,
                next_at=now,
                created_at=now,
                priority=priority,
            )
        )
    return len(sinks)


class Notice(str, Enum):
    """Officer notices about the service itself, not about a tip (no case number)."""

    RECEIPT_GUESSING = "receipt_guessing"  # the global ceiling on failed receipt look-ups tripped


NOTICE_PRIORITY = 1  # after urgent tips, before ordinary ones


async def enqueue_notice(tx: Repositories, notice: Notice, sinks: tuple[str, ...], now: float) -> int:
    """One outbox row per officer sink, like an alert but naming no tip; rendered at delivery."""
    payload: dict[str, object] = {"kind": "notice", "notice": notice.value}
    for sink in sinks:
        await tx.outbox.add(
            OutboxItem(
                id=uuid.uuid4().hex,
                sink=sink,
                payload=payload,
                status=OutboxStatus.PENDING,
                attempts=0,
                next_at=now,
                created_at=now,
                priority=NOTICE_PRIORITY,
            )
        )
    return len(sinks)


def render_notice(catalogues: Catalogues, language: str, notice: Notice) -> str:
    """Plain text, short enough for an officer SMS; channels escape it for their own markup."""
    return catalogues.text(language, f"notice.{notice.value}")


def answer_label(catalogues: Catalogues, language: str, step_id: str, answer: object) -> str:
    """The localised words for a recorded answer ("-" when skipped)."""
    if answer in (None, "", []):
        return catalogues.text(language, "summary.skipped")
    step = BY_ID[step_id]
    if step.kind is StepKind.CHOICE:
        option = next((o for o in step.options if o.answer == answer), None)
        return catalogues.text(language, option.label_key) if option else str(answer)
    if isinstance(answer, list):
        return " / ".join(str(a) for a in answer)
    return str(answer)


# Kept with a tip's answers when its sender raised more urgent cases in an hour than are alerted.
REPEATED_FLAG = "repeated"
# Kept with a tip's answers when the person wrote in neither supported language.
LANGUAGE_UNKNOWN_FLAG = "language_unknown"


def tip_flags(catalogues: Catalogues, language: str, tip: Tip, *, urgent: bool = True) -> list[str]:
    """URGENT / MINOR INVOLVED, as officers read them (``urgent=False`` leaves URGENT out where the
    title already says it)."""
    flags = [catalogues.text(language, "alert.flag.urgent")] if urgent and tip.urgent else []
    if tip.minor:
        flags.append(catalogues.text(language, "alert.flag.minor"))
    if tip.answers.get(REPEATED_FLAG):
        flags.append(catalogues.text(language, "alert.flag.repeated"))
    return flags


def language_shown(catalogues: Catalogues, language: str, tip: Tip) -> str:
    """The tip's language for officers; "unknown, interpreter needed" when the person wrote in
    neither supported language."""
    return catalogues.text(language, "alert.language_unknown") if tip.answers.get(LANGUAGE_UNKNOWN_FLAG) else tip.language


HEADLINE_PLACE_CHARS = 40  # the place as a phone's notification shows it: the start of what was typed


def headline(catalogues: Catalogues, language: str, tip: Tip) -> str:
    """The first line of an alert, read at a glance: flags, then the place, then the case —
    "URGENT · NOW · MINOR INVOLVED · Motel Lune, Laval — 26-0001"."""
    flags = tip_flags(catalogues, language, tip)
    if tip.answers.get("when") == "now":
        flags.insert(1 if tip.urgent else 0, catalogues.text(language, "alert.flag.now"))
    place = " ".join(str(tip.answers.get("where") or "").split())
    if len(place) > HEADLINE_PLACE_CHARS:
        place = place[: HEADLINE_PLACE_CHARS - 1].rstrip() + "…"
    parts = flags + ([place] if place else [])
    return (" · ".join(parts) + " — " if parts else "") + tip.case_number


def render_alert(
    catalogues: Catalogues, language: str, tip: Tip, event: AlertEvent, *, full_details: bool, additions: tuple[str, ...] = ()
) -> str:
    """Plain text; channels escape it for their own markup. The first line is the headline; the
    second says what happened."""
    t = catalogues.text
    lines = [headline(catalogues, language, tip), t(language, _TITLE_KEYS[event], case=tip.case_number)]
    if event in (AlertEvent.WITHDRAWN, AlertEvent.CLEARED):
        return "\n".join(lines)
    if event in (AlertEvent.ADDITION, AlertEvent.ANSWER):
        if full_details:
            lines.extend(f"+ {text}" for text in additions)
        else:
            lines.append(t(language, "alert.details_hidden", case=tip.case_number))
        return "\n".join(lines)
    for step in REPORT_STEPS:
        if step.id in ("details", "contact", "danger") and not (step.id == "details" and full_details):
            continue
        if step.id not in tip.answers and step.id != "details":
            continue
        lines.append(f"{t(language, step.summary_key)}: {answer_label(catalogues, language, step.id, tip.answers.get(step.id))}")
    if not full_details and tip.answers.get("details"):
        lines.append(t(language, "alert.details_hidden", case=tip.case_number))
    lines.append(f"{t(language, 'alert.field.channel')}: {tip.channel} · {t(language, 'alert.field.language')}: {language_shown(catalogues, language, tip)}")
    lines.append(t(language, "alert.contact.yes" if tip.contact_ok else "alert.contact.no"))
    return "\n".join(lines)
