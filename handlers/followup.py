"""ADD / AJOUT and CHECK / SUIVI with a receipt: adding to a sent tip and reading officers' replies.

A receipt works from any channel: it is looked up by its keyed hash, never by who sends it. Failed
look-ups are counted per sender; past the limit the sender waits an hour, which with 10^12 codes
makes guessing hopeless.
"""

from __future__ import annotations

import uuid
from typing import Any

from bot.messages import Purpose
from handlers.alerts import AlertEvent, enqueue_alert
from handlers.filing import receipt_digits
from handlers.turn import Turn
from handlers.words import Word, clean
from storage.records import Followup, Tip, TipStatus

LOCKOUT_WINDOW = 3600.0
_EXAMPLE_CODE = "123-456-789-012"
_CLOSED = (TipStatus.CLOSED, TipStatus.WITHDRAWN)


async def _find(turn: Turn, language: str, word_typed: str, rest: str) -> tuple[Tip | None, str]:
    """The tip named by the receipt at the start of ``rest``, and the text after the code."""
    sender = turn.msg.sender
    failures = await turn.tx.receipt_attempts.failures_since(sender, turn.now - LOCKOUT_WINDOW)
    if failures >= turn.config.receipt_failures_allowed:
        turn.say(language, "receipt.locked")
        return None, ""
    code, remainder = _split_code(rest)
    if code is None:
        turn.say(language, "receipt.missing", example=f"{word_typed.upper()} {_EXAMPLE_CODE}")
        return None, ""
    tip = await turn.tx.tips.by_receipt_hash(turn.receipt_hash(code))
    if tip is None:
        await turn.tx.receipt_attempts.record_failure(sender, turn.now)
        turn.say(language, "receipt.unknown")
    return tip, remainder


def _split_code(rest: str) -> tuple[str | None, str]:
    """Digits (with any separators) up to 12 of them, then the rest of the message."""
    digits, consumed = "", 0
    for index, char in enumerate(rest):
        if char.isdigit():
            digits += char
            consumed = index + 1
            if len(digits) == 12:
                break
        elif char.isalpha():
            break
    code = receipt_digits(digits)
    return code, rest[consumed:].strip(" \t\n-:,.") if code else ""


async def command(turn: Turn, word: Word, language: str, rest: str) -> dict[str, Any] | None:
    """Handle ADD/CHECK outside a draft; returns a draft state when ADD waits for more text."""
    word_typed = clean(turn.msg.text).split(maxsplit=1)[0]
    tip, remainder = await _find(turn, language, word_typed, rest)
    if tip is None:
        return None
    if word is Word.CHECK:
        await _check(turn, tip, language)
        return None
    if tip.status in _CLOSED:
        turn.say(language, "add.closed")
        return None
    if remainder:
        await _add(turn, tip, [remainder])
        turn.say(language, "add.sent")
        return None
    turn.say(language, "add.question", purpose=Purpose.PROMPT)
    return {"v": 1, "mode": "add", "tip_id": tip.id, "lines": [], "language": language, "channel": turn.msg.channel}


async def continue_add(turn: Turn, state: dict[str, Any], word: Word | None) -> dict[str, Any] | None:
    """A message while ADD collects text: DONE sends, EXIT erases, anything else is added."""
    language = state["language"]
    if word is Word.EXIT:
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if word is Word.HELP:
        turn.say(language, "add.question")
        return state
    if word is Word.DONE:
        tip = await turn.tx.tips.get(state["tip_id"])
        if tip is None or not state["lines"]:
            turn.say(language, "add.nothing")
        else:
            await _add(turn, tip, state["lines"])
            turn.say(language, "add.sent")
        return None
    text = clean(turn.msg.text)[: turn.config.max_text_chars]
    if not text:
        turn.say(language, "add.question")
    elif len(state["lines"]) >= turn.config.max_details_messages:
        turn.say(language, "details.full")
    else:
        state["lines"].append(text)
        turn.say(language, "add.more")
    return state


async def _add(turn: Turn, tip: Tip, lines: list[str]) -> None:
    added = [Followup(uuid.uuid4().hex, tip.id, "tipster", line, turn.now) for line in lines]
    for followup in added:
        await turn.tx.followups.add(followup)
    turn.alerts_queued += await enqueue_alert(
        turn.tx, tip, AlertEvent.ADDITION, turn.config.alert_sinks, turn.now, followup_ids=[f.id for f in added]
    )


async def _check(turn: Turn, tip: Tip, language: str) -> None:
    status_key = {TipStatus.ACKNOWLEDGED: "status.acknowledged", TipStatus.CLOSED: "status.closed"}.get(tip.status, "status.open")
    turn.say(language, "check.status", status=turn.text(language, status_key))
    unread = [f for f in await turn.tx.followups.for_tip(tip.id) if f.author == "officer" and f.read_at is None]
    for reply in unread:
        turn.say(language, "check.reply", text=reply.text)
    if unread:
        await turn.tx.followups.mark_read([f.id for f in unread], turn.now)
    else:
        turn.say(language, "check.none")
