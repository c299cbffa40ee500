"""Turning a draft into a tip: the urgent case, the sent report, the erased one, the expired one.

Everything here runs inside the message's transaction: the tip, its outbox alerts and the draft's
removal commit together, before the receipt is shown.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from bot.messages import Purpose
from handlers.alerts import AlertEvent, enqueue_alert
from handlers.flow import REPORT_STEPS
from handlers.turn import Turn
from storage.crypto import random_digits
from storage.interfaces import Repositories
from storage.records import Tip, TipStatus
from storage.repositories import utc_year

RECEIPT_DIGITS = 12


def format_receipt(digits: str) -> str:
    """12 digits grouped like a phone number, so it does not stand out on a screen."""
    return "-".join(digits[i : i + 3] for i in range(0, len(digits), 3))


def receipt_digits(text: str) -> str | None:
    digits = re.sub(r"\D", "", text)
    return digits if len(digits) == RECEIPT_DIGITS else None


def report_answers(state: dict[str, Any]) -> dict[str, Any]:
    answers = state["answers"]
    return {step.id: answers[step.id] for step in REPORT_STEPS if step.id in answers}


def has_substance(state: dict[str, Any]) -> bool:
    answers = state["answers"]
    return answers.get("danger") == "yes" or bool(answers.get("where")) or bool(answers.get("details"))


async def _tip_for(tx: Repositories, state: dict[str, Any], sender: str, now: float) -> Tip:
    if state.get("tip_id"):
        existing = await tx.tips.get(state["tip_id"])
        if existing is not None:
            return existing
    tip_id = uuid.uuid4().hex
    return Tip(
        id=tip_id,
        case_number=await tx.tips.next_case_number(utc_year(now)),
        status=TipStatus.IN_PROGRESS,
        sender=sender,
        channel=state.get("channel", "unknown"),
        language=state.get("language") or "en",
        created_at=now,
        updated_at=now,
    )


def _apply_answers(tip: Tip, state: dict[str, Any], now: float) -> None:
    tip.answers = report_answers(state)
    tip.urgent = tip.urgent or tip.answers.get("danger") == "yes"
    tip.minor = tip.answers.get("minors") == "yes"
    tip.language = state.get("language") or tip.language
    tip.updated_at = now


async def mark_urgent(turn: Turn, state: dict[str, Any]) -> None:
    """Danger now: create the case and alert officers immediately, with what is known so far."""
    if state.get("tip_id"):
        return  # already alerted (BACK, then Yes again)
    state["answers"]["danger"] = "yes"
    tip = await _tip_for(turn.tx, state, turn.msg.sender, turn.now)
    _apply_answers(tip, state, turn.now)
    tip.urgent = True
    await turn.tx.tips.save(tip)
    state["tip_id"] = tip.id
    turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.URGENT, turn.config.alert_sinks, turn.now)


async def submit(turn: Turn, state: dict[str, Any]) -> None:
    """File the report; the receipt is shown only because this commits before any reply is sent."""
    tip = await _tip_for(turn.tx, state, turn.msg.sender, turn.now)
    _apply_answers(tip, state, turn.now)
    tip.status = TipStatus.OPEN if tip.status is TipStatus.IN_PROGRESS else tip.status
    tip.complete = True
    tip.contact_ok = tip.answers.get("contact") == "yes"
    # The reply address is kept only with consent, and only the one this person is writing from.
    tip.contact_address = turn.msg.reply_address if tip.contact_ok else None
    digits = random_digits(RECEIPT_DIGITS)
    tip.receipt_hash = turn.receipt_hash(digits)
    await turn.tx.tips.save(tip)
    await turn.tx.drafts.delete(turn.msg.sender)
    turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.NEW, turn.config.alert_sinks, turn.now)
    turn.say(tip.language, "submitted.receipt", purpose=Purpose.RECEIPT, receipt=format_receipt(digits))


async def erase(turn: Turn, state: dict[str, Any]) -> None:
    """EXIT / Cancel: the draft goes. If an urgent alert already created a case, its content is
    erased too and officers are told the person stopped (they may already be acting on it)."""
    await turn.tx.drafts.delete(turn.msg.sender)
    tip_id = state.get("tip_id")
    tip = await turn.tx.tips.get(tip_id) if tip_id else None
    if tip is not None and tip.status is TipStatus.IN_PROGRESS:
        tip.answers = {"danger": "yes"}
        tip.status = TipStatus.WITHDRAWN
        tip.updated_at = turn.now
        await turn.tx.tips.save(tip)
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.WITHDRAWN, turn.config.alert_sinks, turn.now)


async def expire(tx: Repositories, sender: str, state: dict[str, Any], sinks: tuple[str, ...], now: float) -> int:
    """A draft left alone past its timeout: substance is filed as an incomplete tip (no receipt,
    no contact address: the person never confirmed), anything else is erased. Nobody is texted.
    Returns the number of alerts queued."""
    await tx.drafts.delete(sender)
    if state.get("mode") == "add" or not has_substance(state):
        return 0
    tip = await _tip_for(tx, state, sender, now)
    _apply_answers(tip, state, now)
    tip.status = TipStatus.OPEN
    tip.complete = False
    tip.contact_ok = False
    await tx.tips.save(tip)
    return await enqueue_alert(tx, tip, AlertEvent.INCOMPLETE, sinks, now)
