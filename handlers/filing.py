"""Turning a draft into a tip: the urgent case, the sent report, the erased one, the expired one.

Everything here runs inside the message's transaction: the tip, its outbox alerts and the draft's
removal commit together, before the receipt is shown.
"""

from __future__ import annotations

import unicodedata
import uuid

from bot.messages import Purpose
from handlers.alerts import AlertEvent, enqueue_alert
from handlers.officer_view import LANGUAGE_UNKNOWN_FLAG, REPEATED_FLAG
from handlers.state import Addition, ConversationState, Report, Sent
from handlers.turn import Turn
from storage.crypto import random_digits
from storage.interfaces import Repositories
from storage.records import Followup, Tip, TipStatus
from storage.repositories import utc_year

RECEIPT_DIGITS = 12


def format_receipt(digits: str) -> str:
    """12 digits grouped like a phone number, so it does not stand out on a screen."""
    return "-".join(digits[i : i + 3] for i in range(0, len(digits), 3))


def receipt_digits(text: str) -> str | None:
    """The 12 digits of a receipt typed with any separators, in any script's digits."""
    digits = "".join(str(d) for d in (unicodedata.decimal(c, None) for c in text) if d is not None)
    return digits if len(digits) == RECEIPT_DIGITS else None


async def _tip_for(tx: Repositories, state: Report, sender: str, now: float) -> Tip:
    if state.tip_id:
        existing = await tx.tips.get(state.tip_id)
        if existing is not None:
            return existing
    return Tip(
        id=uuid.uuid4().hex,
        case_number=await tx.tips.next_case_number(utc_year(now)),
        status=TipStatus.IN_PROGRESS,
        sender=sender,
        channel=state.channel,
        language=state.speaking,
        created_at=now,
        updated_at=now,
    )


def _apply_answers(tip: Tip, state: Report, now: float) -> None:
    tip.answers = state.answered()
    if state.urgent_repeated:
        tip.answers[REPEATED_FLAG] = True
    if state.language_unknown:
        tip.answers[LANGUAGE_UNKNOWN_FLAG] = True
    tip.urgent = state.answers.danger == "yes"
    tip.minor = state.answers.minors == "yes"
    tip.language = state.language or tip.language
    tip.updated_at = now


URGENT_WINDOW = 3600.0
# The answers of an urgent case that officers are alerted about as soon as they change.
ALERTED_ON_UPDATE = ("where", "minors", "kind")


async def mark_urgent(turn: Turn, state: Report) -> None:
    """Danger now: the case is created (or flagged again) and officers are alerted at once, with
    what is known so far. A sender who keeps raising urgent cases is not alerted for more than
    ``urgent_alerts_per_hour`` of them an hour: later ones are filed and flagged as repeated, and
    reach officers with the report (at Send, or when it expires)."""
    state.answers.danger = "yes"  # even when the case already is: "No" at the review, then "help me"
    existing = await turn.tx.tips.get(state.tip_id) if state.tip_id else None
    alerted = existing is not None and existing.urgent  # BACK, then Yes again: not paged twice
    if existing is None:
        opened = await turn.tx.tips.urgent_since(turn.msg.sender, turn.now - URGENT_WINDOW)
        state.urgent_repeated = opened >= turn.config.urgent_alerts_per_hour
    tip = existing or await _tip_for(turn.tx, state, turn.msg.sender, turn.now)
    _apply_answers(tip, state, turn.now)
    await turn.tx.tips.save(tip)
    state.tip_id = tip.id
    if state.pictures:
        await turn.tx.pictures.file(turn.msg.sender, tip.id, keep_owner=True)  # /photos shows them now
    if not alerted and not state.urgent_repeated:
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.URGENT, turn.config.alert_sinks, turn.now)


def _worth_an_update(before: dict[str, object], after: dict[str, object]) -> bool:
    """A place given or changed, a kind given or changed, a minor flag raised or taken back."""
    changed = {key for key in ALERTED_ON_UPDATE if after.get(key) != before.get(key)}
    if "minors" in changed and "yes" in (before.get("minors"), after.get("minors")):
        return True
    return any(after.get(key) for key in changed - {"minors"})


def _update_sinks(turn: Turn) -> tuple[str, ...]:
    sinks = turn.config.update_sinks
    return turn.config.alert_sinks if sinks is None else sinks


async def escalate(turn: Turn, tip_id: str) -> None:
    """A danger phrase in an ADD or an answer to officers: the sent case becomes urgent and officers
    are alerted at once (within the sender's hourly limit, like a new urgent report)."""
    tip = await turn.tx.tips.get(tip_id)
    if tip is None or tip.urgent or tip.status in (TipStatus.CLOSED, TipStatus.WITHDRAWN):
        return
    tip.urgent = True
    tip.updated_at = turn.now
    await turn.tx.tips.save(tip)
    if await turn.tx.tips.urgent_since(turn.msg.sender, turn.now - URGENT_WINDOW) <= turn.config.urgent_alerts_per_hour:
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.URGENT, turn.config.alert_sinks, turn.now)


async def update_case(turn: Turn, state: Report) -> None:
    """An answer to a report that already has a case (an urgent one): written to the case at once
    (``/show`` has it), and officers get an update alert when what they act on changed (the place,
    the minor flag, the kind: ``ALERTED_ON_UPDATE``) or a correction when danger was taken back."""
    if not state.tip_id:
        return
    tip = await turn.tx.tips.get(state.tip_id)
    if tip is None or tip.status is not TipStatus.IN_PROGRESS:
        return
    was_urgent = tip.urgent
    before = {key: tip.answers.get(key) for key in ALERTED_ON_UPDATE}
    _apply_answers(tip, state, turn.now)
    await turn.tx.tips.save(tip)
    if state.urgent_repeated:
        return  # filed and flagged; officers hear of it with the report
    if was_urgent and not tip.urgent:
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.CLEARED, turn.config.alert_sinks, turn.now)
    elif tip.urgent and _worth_an_update(before, tip.answers):
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.UPDATE, _update_sinks(turn), turn.now)


async def submit(turn: Turn, state: Report) -> Sent:
    """File the report; the receipt is shown only because this commits before any reply is sent.
    Returns the short after-receipt state (small talk is not a new report)."""
    tip = await _tip_for(turn.tx, state, turn.msg.sender, turn.now)
    _apply_answers(tip, state, turn.now)
    tip.status = TipStatus.OPEN if tip.status is TipStatus.IN_PROGRESS else tip.status
    tip.complete = True
    tip.contact_ok = state.answers.contact == "yes"
    # The reply address is kept only with consent, and only the one this person is writing from.
    tip.contact_address = turn.msg.reply_address if tip.contact_ok else None
    digits = random_digits(RECEIPT_DIGITS)
    tip.receipt_hash = turn.receipt_hash(digits)
    await turn.tx.tips.save(tip)
    await turn.tx.drafts.delete(turn.msg.sender)
    await turn.tx.pictures.file(turn.msg.sender, tip.id)
    turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.NEW, turn.config.alert_sinks, turn.now)
    turn.say(tip.language, "submitted.receipt", purpose=Purpose.RECEIPT, receipt=format_receipt(digits))
    return Sent(tip_id=tip.id, language=tip.language, channel=state.channel)


async def erase(turn: Turn, state: Report) -> None:
    """EXIT / Cancel: the draft goes. If an urgent alert already created a case, its content is
    erased too and officers are told the person stopped (they may already be acting on it)."""
    await turn.tx.drafts.delete(turn.msg.sender)
    tip = await turn.tx.tips.get(state.tip_id) if state.tip_id else None
    if tip is not None and tip.status is TipStatus.IN_PROGRESS:
        tip.answers = {"danger": "yes", **({REPEATED_FLAG: True} if state.urgent_repeated else {})}
        tip.status = TipStatus.WITHDRAWN
        tip.updated_at = turn.now
        await turn.tx.tips.save(tip)
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, AlertEvent.WITHDRAWN, turn.config.alert_sinks, turn.now)


async def expire(tx: Repositories, sender: str, state: ConversationState, sinks: tuple[str, ...], now: float) -> int:
    """A draft left alone past its timeout. Nobody is texted (a phone may have changed hands).

    * a report with substance is filed as an incomplete tip (no receipt, no contact address: the
      person never confirmed); one without substance is erased;
    * an ADD left without DONE is filed as an addition to its case: those lines were meant for it;
    * an answer window or the after-receipt state just ends (everything reached the case already).

    Returns how many alerts (or additions) were queued."""
    await tx.drafts.delete(sender)
    if isinstance(state, Addition):
        return await file_addition(tx, state.tip_id, state.lines, sinks, now, owner=sender)
    if not isinstance(state, Report) or not state.has_substance():
        await tx.pictures.delete_owned(sender)  # nothing to file them with (an erased draft's)
        return 0  # an answer window's answers and a receipt's case are already filed
    tip = await _tip_for(tx, state, sender, now)
    _apply_answers(tip, state, now)
    tip.status = TipStatus.OPEN if tip.status is TipStatus.IN_PROGRESS else tip.status
    tip.complete = False
    tip.contact_ok = False
    await tx.tips.save(tip)
    await tx.pictures.file(sender, tip.id)
    return await enqueue_alert(tx, tip, AlertEvent.INCOMPLETE, sinks, now)


async def file_addition(
    tx: Repositories,
    tip_id: str,
    lines: list[str],
    sinks: tuple[str, ...],
    now: float,
    *,
    owner: str | None = None,
    pictures: int = 0,
) -> int:
    """Lines (and the pictures ``owner`` sent with them, or ``pictures`` already added to the case)
    added to a case (ADD, an ADD left unfinished, a caption after the receipt), with one alert.
    Nothing is added to a case that is gone or closed: the pictures are then erased. Returns how
    many lines and pictures were added."""
    tip = await tx.tips.get(tip_id)
    if tip is None or tip.status in (TipStatus.CLOSED, TipStatus.WITHDRAWN):
        if owner is not None:
            await tx.pictures.delete_owned(owner)
        return 0
    pictures += await tx.pictures.file(owner, tip.id) if owner is not None else 0
    if not lines and not pictures:
        return 0
    added = [Followup(uuid.uuid4().hex, tip.id, "tipster", line, now) for line in lines]
    for followup in added:
        await tx.followups.add(followup)
    await enqueue_alert(tx, tip, AlertEvent.ADDITION, sinks, now, followup_ids=[f.id for f in added], pictures=pictures)
    return len(added) + pictures
