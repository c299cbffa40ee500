"""Pictures a message carried, taken into the conversation: kept with the draft (by sender, so
EXIT erases them), added to a case already sent, or refused with a calm line saying why.

The pictures arrive already fetched and stripped of their metadata (``bot.pictures``); what is
stored is that clean copy, encrypted (``storage.pictures``).
"""

from __future__ import annotations

import uuid

from bot.pictures import Picture, Refusal, Refused
from handlers.turn import Turn

_REFUSAL_KEYS = {
    Refusal.NOT_A_PICTURE: "media.note",
    Refusal.TOO_BIG: "picture.too_big",
    Refusal.UNREADABLE: "picture.unreadable",
    Refusal.NOT_RECEIVED: "picture.not_received",
}


def _received(turn: Turn) -> tuple[list[Picture], list[Refusal]]:
    pictures = [r for r in turn.pictures if isinstance(r, Picture)]
    refusals = [r.reason for r in turn.pictures if isinstance(r, Refused)]
    return pictures, refusals


def _say_refusals(turn: Turn, language: str, refusals: list[Refusal]) -> None:
    """One line per kind of refusal (three videos are one "only pictures"), in a fixed order."""
    if turn.msg.has_media and not turn.msg.media:
        refusals = [*refusals, Refusal.NOT_A_PICTURE]  # a video or a voice note: no picture at all
    for reason in Refusal:
        if reason in refusals:
            turn.say(language, _REFUSAL_KEYS[reason], mb=turn.config.picture_max_bytes // (1024 * 1024))


async def keep_with_draft(turn: Turn, language: str, held: int, tip_id: str | None = None) -> int:
    """Keep the message's pictures with the sender's draft (and with its case when one exists,
    an urgent report's). ``held``: how many the draft holds already. Returns how many it holds now."""
    if not turn.msg.has_media or turn.pictures_taken:
        return held
    turn.pictures_taken = True
    limit = turn.config.pictures_per_report
    pictures, refusals = _received(turn)
    if limit == 0 and (pictures or refusals):
        turn.say(language, "picture.off")
        return held
    full = False
    for picture in pictures:
        if held >= limit:
            full = True
            continue
        await turn.tx.pictures.add(uuid.uuid4().hex, picture.image, turn.now, owner=turn.msg.sender, tip_id=tip_id)
        held += 1
        turn.say(language, "picture.kept", count=held, limit=limit)
    if full:
        turn.say(language, "picture.full", limit=limit)
    _say_refusals(turn, language, refusals)
    return held


async def add_to_case(turn: Turn, language: str, tip_id: str) -> list[str]:
    """Pictures sent after the report went (just after the receipt, or answering officers): added
    to the case at once, within the case's limit. Returns the ids added."""
    if not turn.msg.has_media or turn.pictures_taken:
        return []
    turn.pictures_taken = True
    limit = turn.config.pictures_per_report
    pictures, refusals = _received(turn)
    if limit == 0 and (pictures or refusals):
        turn.say(language, "picture.off")
        return []
    held = await turn.tx.pictures.count_for_tip(tip_id)
    added: list[str] = []
    for picture in pictures:
        if held >= limit:
            break
        picture_id = uuid.uuid4().hex
        await turn.tx.pictures.add(picture_id, picture.image, turn.now, tip_id=tip_id)
        added.append(picture_id)
        held += 1
    if added:
        turn.say(language, "picture.added")
    if len(added) < len(pictures):
        turn.say(language, "picture.full", limit=limit)
    _say_refusals(turn, language, refusals)
    return added
