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
from handlers import officer_view as view
from handlers.flow import REPORT_STEPS
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
    tx: Repositories,
    tip: Tip,
    event: AlertEvent,
    sinks: tuple[str, ...],
    now: float,
    followup_ids: list[str] | None = None,
    pictures: int = 0,
) -> int:
    """One outbox row per officer sink. ``followup_ids`` name the texts an ADDITION/ANSWER is about,
    ``pictures`` how many pictures came with it."""
    priority = 2 if tip.urgent else 1 if tip.minor else 0
    payload: dict[str, object] = {"kind": "alert", "event": event.value, "tip_id": tip.id}
    if followup_ids:
        payload["followup_ids"] = followup_ids
    if pictures:
        payload["pictures"] = pictures
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


def render_alert(
    catalogues: Catalogues,
    language: str,
    tip: Tip,
    event: AlertEvent,
    *,
    full_details: bool,
    additions: tuple[str, ...] = (),
    pictures: int = 0,
) -> str:
    """Plain text; channels escape it for their own markup. The first line is the headline; the
    second says what happened. ``pictures``: the case's (an addition's: those it brought)."""
    t = catalogues.text
    lines = [view.headline(catalogues, language, tip), t(language, _TITLE_KEYS[event], case=tip.case_number)]
    if event in (AlertEvent.WITHDRAWN, AlertEvent.CLEARED):
        return "\n".join(lines)
    if event in (AlertEvent.ADDITION, AlertEvent.ANSWER):
        # What arrived, and how to read it in one tap (the Show button, or the command).
        if full_details and additions:
            lines.extend(f"+ {text}" for text in additions)
        elif additions or not pictures:
            lines.append(t(language, "alert.arrived", count=max(1, len(additions)), case=tip.case_number))
        if pictures:
            lines.append(t(language, "alert.pictures", count=pictures, case=tip.case_number))
        return "\n".join(lines)
    for step in REPORT_STEPS:
        if step.id in ("details", "contact", "danger") and not (step.id == "details" and full_details):
            continue
        if step.id not in tip.answers and step.id != "details":
            continue
        lines.append(view.line(catalogues, language, step.id, tip.answers.get(step.id)))
    if not full_details and tip.answers.get("details"):
        lines.append(t(language, "alert.details_hidden", case=tip.case_number))
    if pictures:
        lines.append(t(language, "alert.pictures", count=pictures, case=tip.case_number))
    lines.append(view.channel_line(catalogues, language, tip))
    lines.append(view.contact_line(catalogues, language, tip))
    return "\n".join(lines)
