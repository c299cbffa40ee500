"""ADD / AJOUT and CHECK / SUIVI with a receipt: adding to a sent tip and reading officers' replies.

A receipt works from any channel, at any point of a conversation: it is looked up by its keyed
hash, never by who sends it. Failed look-ups are counted per sender (past the limit the sender waits
an hour) and for all senders together (past the global ceiling every look-up pauses for an hour and
officers are told), which with 10^12 codes makes guessing hopeless.
"""

from __future__ import annotations

import uuid

from bot.messages import Purpose
from handlers.alerts import AlertEvent, Notice, enqueue_alert, enqueue_notice
from handlers.filing import file_addition, format_receipt, receipt_digits
from handlers import filing, intake, pictures
from handlers.replies import pieces
from handlers.state import Addition, AnswerWindow, ConversationState, Report, Sent
from handlers.turn import Turn
from handlers.understanding import CHECK, NEW_REPORT, NO, THANKS, YES, Control, Reading
from handlers.words import clean
from storage.records import Followup, Tip, TipStatus

LOCKOUT_WINDOW = 3600.0
_EXAMPLE_CODE = "123-456-789-012"
_CLOSED = (TipStatus.CLOSED, TipStatus.WITHDRAWN)
CHECK_SHOWS_REPLIES = 5  # the latest officer replies shown on every CHECK (not only unread ones)


async def _find(turn: Turn, language: str, word_typed: str, rest: str) -> tuple[Tip | None, str]:
    """The tip named by the receipt at the start of ``rest``, and the text after the code."""
    sender = turn.msg.sender
    failures = await turn.tx.receipt_attempts.failures_since(sender, turn.now - LOCKOUT_WINDOW)
    if failures >= turn.config.receipt_failures_allowed:
        turn.say(language, "receipt.locked")
        return None, ""
    # Global ceiling (all senders): the failure that reaches it pauses every look-up for an hour.
    # Nothing is recorded while paused, so that failure stays the last one until the pause ends.
    ceiling = turn.config.receipt_failures_global_per_hour
    attempts = turn.tx.receipt_attempts
    last = await attempts.last_failure_at()
    if last is not None and turn.now < last + LOCKOUT_WINDOW and await attempts.failures_total_since(last - LOCKOUT_WINDOW) >= ceiling:
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
        if await attempts.failures_total_since(turn.now - LOCKOUT_WINDOW) >= ceiling:
            # This failure tripped the ceiling: one notice to officers for the whole pause.
            turn.alerts_queued += await enqueue_notice(turn.tx, Notice.RECEIPT_GUESSING, turn.config.alert_sinks, turn.now)
    return tip, remainder


def starts_with_code(rest: str) -> bool:
    """Does the text after ADD/CHECK begin with a whole receipt? (Mid-conversation, "add" alone is
    just a word someone typed.)"""
    return _split_code(rest)[0] is not None


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


async def command(turn: Turn, word: str, language: str, rest: str, current: ConversationState | None = None) -> ConversationState | None:
    """ADD/CHECK with a receipt, at any point of a conversation. A report or an ADD in progress is
    kept as it is; CHECK that shows replies opens a short answer window (outside a report)."""
    in_progress = current if isinstance(current, (Report, Addition)) else None
    word_typed = clean(turn.msg.text).split(maxsplit=1)[0]
    tip, remainder = await _find(turn, language, word_typed, rest)
    if tip is None:
        return current
    code = format_receipt(_split_code(rest)[0] or "")
    if word == CHECK:
        replied = await _check(turn, tip, language, code, window=in_progress is None)
        if replied and in_progress is None and tip.status not in _CLOSED:
            return AnswerWindow(tip_id=tip.id, language=language, channel=turn.msg.channel)
        return current
    if tip.status in _CLOSED:
        turn.say(language, "add.closed")
        return current
    if remainder:
        await _add(turn, tip.id, pieces(remainder, turn.config.max_text_chars))
        turn.say(language, "add.sent")
        return current
    if isinstance(in_progress, Report):
        # One draft per person: the report being written is not put aside for an ADD.
        turn.say(language, "add.inline", example=f"{word_typed.upper()} {code}")
        return current
    turn.say(language, "add.question", purpose=Purpose.PROMPT)
    return Addition(tip_id=tip.id, language=language, channel=turn.msg.channel)


async def continue_add(turn: Turn, state: Addition, reading: Reading) -> Addition | None:
    """A message while ADD collects text: DONE sends, EXIT erases (a maybe-EXIT is asked about
    once), a danger phrase makes the case urgent, anything else is added."""
    language = state.language
    if turn.msg.has_media:
        # The case's limit counts what it holds already.
        held = await turn.tx.pictures.count_for_tip(state.tip_id)
        state.pictures = await pictures.keep_with_draft(turn, language, held + state.pictures) - held
        if not reading.text:
            turn.say(language, "add.more")
            return state
    if state.confirming_exit is not None:
        pending, state.confirming_exit = state.confirming_exit, None
        said = turn.vocabulary.answer(reading.text, (YES, NO), language)
        if not reading.danger and (said == YES or reading.is_(Control.EXIT)):
            turn.say(language, "erased", purpose=Purpose.ERASED)
            return None
        state.lines = [*state.lines, pending]
        if said == NO:
            turn.say(language, "add.more")
            return state
    if reading.danger:
        await filing.escalate(turn, state.tip_id)
    if reading.is_(Control.EXIT):
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if reading.maybe(Control.EXIT):
        state.confirming_exit = reading.text
        intake.ask_to_confirm_exit(turn, language)
        return state
    if reading.is_(Control.HELP):
        turn.say(language, "add.question")
        return state
    if reading.control is Control.DONE:
        if await _add(turn, state.tip_id, state.lines, with_pictures=state.pictures > 0):
            turn.say(language, "add.sent")
        else:
            turn.say(language, "add.nothing")
        return None
    text = reading.text
    room = turn.config.max_details_messages - len(state.lines)
    if not text:
        turn.say(language, "add.question")
    elif room <= 0:
        turn.say(language, "details.full")
    else:
        kept = pieces(text, turn.config.max_text_chars)
        state.lines = [*state.lines, *kept[:room]]
        turn.say(language, "details.full" if len(kept) > room else "add.more")
    return state


async def _add(turn: Turn, tip_id: str, lines: list[str], *, with_pictures: bool = False) -> bool:
    """Whether anything was added (nothing is added to a case that is gone or closed)."""
    owner = turn.msg.sender if with_pictures else None
    added = await file_addition(turn.tx, tip_id, lines, turn.config.alert_sinks, turn.now, owner=owner)
    turn.alerts_queued += added
    return added > 0


async def _check(turn: Turn, tip: Tip, language: str, code: str, *, window: bool) -> bool:
    """The case's status and every officer reply so far (the latest ones), then how to answer.
    Returns whether there was any reply."""
    status_key = {TipStatus.ACKNOWLEDGED: "status.acknowledged", TipStatus.CLOSED: "status.closed"}.get(tip.status, "status.open")
    turn.say(language, "check.status", status=turn.text(language, status_key))
    replies = [f for f in await turn.tx.followups.for_tip(tip.id) if f.author == "officer"]
    for reply in replies[-CHECK_SHOWS_REPLIES:]:
        turn.say(language, "check.reply", text=reply.text)
    if not replies:
        turn.say(language, "check.none")
        return False
    await turn.tx.followups.mark_read([f.id for f in replies if f.read_at is None], turn.now)
    if tip.status not in _CLOSED:
        minutes = round(turn.config.answer_window_seconds / 60)
        if window:
            turn.say(language, "check.answer_here", receipt=code, minutes=minutes)
        else:
            turn.say(language, "check.answer_add", receipt=code)
    return True


async def answer(turn: Turn, state: AnswerWindow, reading: Reading) -> ConversationState | None:
    """A message inside an answer window: it answers the officer (attached to the case at once,
    officers told). EXIT erases what was written in the window; HELP says how it works; words
    that start a new report start one; a danger phrase makes the case urgent."""
    language = state.language
    if reading.control is Control.EXIT:
        await turn.tx.followups.delete(state.answer_ids)
        await turn.tx.pictures.delete(state.picture_ids)
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if turn.msg.has_media:
        added = await pictures.add_to_case(turn, language, state.tip_id)
        state.picture_ids = [*state.picture_ids, *added]
        await _pictures_alert(turn, state.tip_id, AlertEvent.ANSWER, added)
        if not reading.text:
            return state
    if reading.is_(Control.HELP):
        turn.say(language, "answer.help", minutes=round(turn.config.answer_window_seconds / 60))
        return state
    if turn.vocabulary.is_entry(reading.text, NEW_REPORT):
        return await intake.start(turn, Reading(""))
    if reading.danger:
        await filing.escalate(turn, state.tip_id)
    text = reading.text
    if not text:
        turn.say(language, "unsupported")
        return state
    tip = await turn.tx.tips.get(state.tip_id)
    if tip is None:
        return None
    added = [Followup(uuid.uuid4().hex, tip.id, "tipster", line, turn.now) for line in pieces(text, turn.config.max_text_chars)]
    for followup in added:
        await turn.tx.followups.add(followup)
    state.answer_ids = [*state.answer_ids, *(f.id for f in added)]
    turn.alerts_queued += await enqueue_alert(
        turn.tx, tip, AlertEvent.ANSWER, turn.config.alert_sinks, turn.now, followup_ids=[f.id for f in added]
    )
    turn.say(language, "tipster.answer_sent")
    return state


async def after_receipt(turn: Turn, state: Sent, reading: Reading) -> ConversationState | None:
    """Just after a receipt: "thanks" or "ok" is small talk (the report is already sent, ADD adds
    to it); anything else opens a new report as usual."""
    language = state.language
    if reading.is_(Control.EXIT):
        turn.say(language, "erased", purpose=Purpose.ERASED)
        return None
    if turn.msg.has_media:
        # Sent right after the receipt, a picture (and its caption) is meant for the report just sent.
        if reading.danger:
            await filing.escalate(turn, state.tip_id)
        added = await pictures.add_to_case(turn, language, state.tip_id)
        caption = pieces(reading.text, turn.config.max_text_chars) if reading.text else []
        filed = await file_addition(turn.tx, state.tip_id, caption, turn.config.alert_sinks, turn.now, pictures=len(added))
        turn.alerts_queued += filed
        if filed and not added:
            turn.say(language, "add.sent")
        return state
    if reading.is_(Control.HELP):
        turn.say(language, "help.idle")
        return state
    if not reading.danger and turn.vocabulary.answer(reading.text, (THANKS,), language) is not None:
        turn.say(language, "sent.already")
        return state
    return await intake.start(turn, reading)


async def _pictures_alert(turn: Turn, tip_id: str, event: AlertEvent, added: list[str]) -> None:
    """Officers hear of pictures added to a case they already have."""
    tip = await turn.tx.tips.get(tip_id) if added else None
    if tip is not None:
        turn.alerts_queued += await enqueue_alert(turn.tx, tip, event, turn.config.alert_sinks, turn.now, pictures=len(added))
