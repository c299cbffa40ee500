"""Officer commands (DESIGN §4), channel-agnostic: a channel marks a message as coming from an
officer chat (``InboundMessage.officer`` = the officer's pseudonym) and this module answers it.

    /list                    open tips, urgent and minor first (audited)
    /show CASE               one tip in full (audited)
    /ack CASE                acknowledge (audited)
    /reply CASE text         anonymous reply to the tipster (audited)
    /close CASE reason       close; the contact address is erased (audited)
    /photos CASE             the case's pictures, sent protected (audited)
    /stats                   counts (audited)

Every list, stats, view, acknowledgement, reply and close is written to the keyed hash-chained
audit log in the same transaction as its effect.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from bot.messages import Purpose
from handlers import officer_view as view
from handlers.flow import REPORT_STEPS
from handlers.turn import Turn
from storage.records import OPEN_STATUSES, Followup, OutboxItem, OutboxStatus, Tip, TipStatus


# "/show26-0001" as a phone keyboard types it: the command's letters, then the case with no space.
_NAME = re.compile(r"([A-Za-z]+)(?:@\S*)?(.*)", re.DOTALL)
# A case as officers type it: 26-0001, 26-1, 0001, 1, #1 (the year defaults to the current one).
_CASE = re.compile(r"#?(?:(\d{2})\s*-\s*)?(\d{1,6})")


def parse_command(text: str) -> tuple[str, str, str] | None:
    """("/reply@tipline_bot 26-0001 hello") → ("reply", "26-0001", "hello"); "/show26-1" → ("show", "26-1", "")."""
    text = text.strip()
    if not text.startswith("/"):
        return None
    found = _NAME.match(text[1:])
    if found is None:
        return None
    name, tail = found.group(1).lower(), found.group(2).strip()
    parts = tail.split(maxsplit=1)
    return name, parts[0] if parts else "", parts[1] if len(parts) > 1 else ""


def case_number(typed: str, now: float) -> str | None:
    """The case number an officer meant: "1", "0001", "#1" → this year's 26-0001; "26-1" → 26-0001.
    None when what was typed is not a case number."""
    found = _CASE.fullmatch(typed.strip())
    if found is None:
        return None
    year = found.group(1) or f"{datetime.fromtimestamp(now, timezone.utc).year % 100:02d}"
    return f"{year}-{int(found.group(2)):04d}"


async def handle(turn: Turn) -> None:
    command = parse_command(turn.msg.text)
    language = turn.config.officer_language
    if command is None:
        return  # ordinary talk in the officers' group: stay silent
    name, typed, rest = command
    if name in ("list", "stats"):
        await (_list if name == "list" else _stats)(turn, language)
        return
    action = _ACTIONS.get(name)
    if action is None:
        _say(turn, language, "officer.usage")  # /help, /start and anything unknown
        return
    if not typed:
        _say(turn, language, "officer.no_case", command=name)
        return
    case = case_number(typed, turn.now)
    tip = await turn.tx.tips.by_case(case) if case else None
    if tip is None or tip.status not in (*OPEN_STATUSES, TipStatus.CLOSED):
        _say(turn, language, "officer.unknown_case", case=case or typed[:20])
        return
    if tip.status is TipStatus.CLOSED and name in ("ack", "close"):
        _say(turn, language, "officer.already_closed", case=tip.case_number)
        return
    await action(turn, language, tip, rest)


def _say(turn: Turn, language: str, key: str, **values: object) -> None:
    turn.say(language, key, purpose=Purpose.OFFICER, **values)


async def _audit(turn: Turn, action: str, tip: Tip | None = None) -> None:
    """An entry in the keyed audit chain, in the command's own transaction; reads of many cases
    (/list, /stats) name no tip."""
    await turn.tx.audit.append(turn.msg.officer or "unknown", tip.id if tip else "", action, turn.now)


async def _list(turn: Turn, language: str) -> None:
    tips = await turn.tx.tips.list(OPEN_STATUSES, limit=50)
    await _audit(turn, "list")
    if not tips:
        _say(turn, language, "officer.list.empty")
        return
    lines = [turn.text(language, "officer.list.header", count=len(tips))]
    for tip in tips:
        flags = view.flags(turn.catalogues, language, tip)
        kind = view.answer(turn.catalogues, language, "kind", tip.answers.get("kind"))
        status = view.status(turn.catalogues, language, tip)
        lines.append(" · ".join([tip.case_number, status, _when(turn, language, tip.created_at), kind, *flags]))
    turn.say_text(language, "officer.list.header", "\n".join(lines), purpose=Purpose.OFFICER)


async def _stats(turn: Turn, language: str) -> None:
    open_tips = await turn.tx.tips.list(OPEN_STATUSES, limit=None)
    closed = await turn.tx.tips.list((TipStatus.CLOSED,), limit=None)
    week = sum(t.created_at >= turn.now - 7 * 86400 for t in open_tips + closed)
    await _audit(turn, "stats")
    _say(
        turn, language, "officer.stats",
        open=len(open_tips), urgent=sum(t.urgent for t in open_tips), minor=sum(t.minor for t in open_tips),
        week=week, closed=len(closed),
    )  # fmt: skip


async def _show(turn: Turn, language: str, tip: Tip, rest: str) -> None:
    t, c = turn.text, turn.catalogues
    lines = [view.headline(c, language, tip), f"{view.status(c, language, tip)} · {_when(turn, language, tip.created_at)}"]
    lines.extend(view.line(c, language, step.id, tip.answers.get(step.id)) for step in REPORT_STEPS if step.id != "contact")
    lines.append(view.contact_line(c, language, tip))
    lines.append(view.channel_line(c, language, tip))
    pictures = await turn.tx.pictures.count_for_tip(tip.id)
    if pictures:
        lines.append(t(language, "alert.pictures", count=pictures, case=tip.case_number))
    followups = await turn.tx.followups.for_tip(tip.id)
    if followups:
        lines.append(t(language, "officer.followups") + ":")
        lines.extend(f"- {t(language, 'officer.author.' + f.author)} ({_when(turn, language, f.created_at)}): {f.text}" for f in followups)
    await _audit(turn, "view", tip)
    turn.say_text(language, "officer.show", "\n".join(lines), purpose=Purpose.OFFICER)


async def _ack(turn: Turn, language: str, tip: Tip, rest: str) -> None:
    if tip.status in (TipStatus.OPEN, TipStatus.IN_PROGRESS):
        tip.status = TipStatus.ACKNOWLEDGED
        tip.updated_at = turn.now
        await turn.tx.tips.save(tip)
    await _audit(turn, "acknowledge", tip)
    _say(turn, language, "officer.ack.done", case=tip.case_number)


async def _reply(turn: Turn, language: str, tip: Tip, rest: str) -> None:
    if not rest.strip():
        _say(turn, language, "officer.reply.no_text", case=tip.case_number)
        return
    if tip.status is TipStatus.CLOSED:
        _say(turn, language, "officer.reply.closed", case=tip.case_number)
        return
    followup = Followup(uuid.uuid4().hex, tip.id, "officer", rest.strip()[: turn.config.max_text_chars], turn.now)
    await turn.tx.followups.add(followup)
    await _audit(turn, "reply", tip)
    if tip.contact_ok and tip.contact_address:
        await turn.tx.outbox.add(
            OutboxItem(
                uuid.uuid4().hex, f"tipster:{tip.channel}", {"kind": "reply", "tip_id": tip.id, "followup_id": followup.id},
                OutboxStatus.PENDING, 0, turn.now, turn.now, priority=1,
            )
        )  # fmt: skip
        turn.alerts_queued += 1
        _say(turn, language, "officer.reply.sent", case=tip.case_number)
    else:
        _say(turn, language, "officer.reply.waiting", case=tip.case_number)


async def _close(turn: Turn, language: str, tip: Tip, rest: str) -> None:
    tip.status = TipStatus.CLOSED
    tip.closed_at = tip.updated_at = turn.now
    tip.close_reason = rest.strip()[:500] or None
    tip.contact_address = None  # a closed case is never replied to
    await turn.tx.tips.save(tip)
    await _audit(turn, "close", tip)
    _say(turn, language, "officer.close.done", case=tip.case_number)


async def _photos(turn: Turn, language: str, tip: Tip, rest: str) -> None:
    """The case's pictures, sent after one line by the channel (Telegram: protected, so they
    cannot be forwarded or saved). Audited like /show, whether or not there are any."""
    ids = await turn.tx.pictures.ids_for_tip(tip.id)
    await _audit(turn, "photos", tip)
    if not ids:
        _say(turn, language, "officer.photos.none", case=tip.case_number)
        return
    text = turn.text(language, "officer.photos.header", case=tip.case_number, count=len(ids))
    turn.say_text(language, "officer.photos.header", text, purpose=Purpose.OFFICER, pictures=tuple(ids))


_ACTIONS = {"show": _show, "ack": _ack, "reply": _reply, "close": _close, "photos": _photos}


def _when(turn: Turn, language: str, timestamp: float) -> str:
    return view.when(turn.catalogues, language, timestamp, turn.now, ZoneInfo(turn.config.officer_timezone))
