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


def _take(turn: Turn, language: str) -> tuple[list[Picture], list[Refusal]] | None:
    """The message's pictures, taken once per turn (a message's pictures go one place); None when
    there is nothing to keep (no media, already taken, or pictures turned off: said so)."""
    if not turn.msg.has_media or turn.pictures_taken:
        return None
    turn.pictures_taken = True
    pictures, refusals = _received(turn)
    if turn.config.pictures_per_report == 0 and (pictures or refusals):
        turn.say(language, "picture.off")
        return None
    return pictures, refusals


async def keep_with_draft(turn: Turn, language: str, held: int, tip_id: str | None = None) -> int:
    """Keep the message's pictures with the sender's draft (and with its case when one exists,
    an urgent report's). ``held``: how many the draft holds already. Returns how many it holds now."""
    taken = _take(turn, language)
    if taken is None:
        return held
    pictures, refusals = taken
    limit = turn.config.pictures_per_report
    kept = pictures[: max(0, limit - held)]
    for picture in kept:
        await turn.tx.pictures.add(uuid.uuid4().hex, picture.image, turn.now, owner=turn.msg.sender, tip_id=tip_id)
        held += 1
        turn.say(language, "picture.kept", count=held, limit=limit)
    if len(kept) < len(pictures):
        turn.say(language, "picture.full", limit=limit)
    _say_refusals(turn, language, refusals)
    return held


async def add_to_case(turn: Turn, language: str, tip_id: str) -> list[str]:
    """Pictures sent after the report went (just after the receipt, or answering officers): added
    to the case at once, within the case's limit. Returns the ids added."""
    taken = _take(turn, language)
    if taken is None:
        return []
    pictures, refusals = taken
    limit = turn.config.pictures_per_report
    room = max(0, limit - await turn.tx.pictures.count_for_tip(tip_id))
    added = [uuid.uuid4().hex for _ in pictures[:room]]
    for picture_id, picture in zip(added, pictures):
        await turn.tx.pictures.add(picture_id, picture.image, turn.now, tip_id=tip_id)
    if added:
        turn.say(language, "picture.added")
    if len(added) < len(pictures):
        turn.say(language, "picture.full", limit=limit)
    _say_refusals(turn, language, refusals)
    return added
