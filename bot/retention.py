"""Retention: what is deleted, and when (``python main.py purge`` and a daily job in ``serve``).

SQLite's ``secure_delete`` is on, so deleted rows are overwritten, not just unlinked; PostgreSQL
vacuums the tables after (``Store.checkpoint``).
"""

from __future__ import annotations

from bot.settings import Settings
from storage.interfaces import Store
from handlers.filing import URGENT_WINDOW
from storage.records import TipStatus

DAY = 86400.0
SET_ASIDE_DAYS = 7.0  # a draft that could not be read is kept this long for a look, then deleted


async def purge(store: Store, settings: Settings, now: float) -> dict[str, int]:
    keep = settings.retention
    removed = {"closed tips": 0, "contact addresses": 0, "outbox rows": 0, "provider ids": 0, "message refs": 0, "set-aside drafts": 0, "cached replies": 0, "tip senders": 0, "pictures": 0}
    # Every instance on a shared database runs this daily: one pass at a time, each reading the
    # tips inside its own transaction, so a second pass finds the first one's work done.
    async with store.transaction(lock=("retention",)) as tx:
        closed = await tx.tips.list((TipStatus.CLOSED, TipStatus.WITHDRAWN), limit=None)
        for tip in closed:
            if (tip.closed_at or tip.updated_at) < now - keep.closed_tip_days * DAY:
                await tx.followups.delete_for_tip(tip.id)
                removed["pictures"] += await tx.pictures.delete_for_tip(tip.id)
                await tx.tips.delete(tip.id)
                removed["closed tips"] += 1
            elif tip.contact_address is not None:
                tip.contact_address = None  # a closed case is never replied to
                await tx.tips.save(tip)
                removed["contact addresses"] += 1
        removed["outbox rows"] = await tx.outbox.delete_delivered_before(now - keep.delivered_outbox_days * DAY)
        removed["provider ids"] = await tx.processed.purge_before(now - keep.processed_id_days * DAY)
        # Telegram lets a bot delete messages for 48 hours; after that the ids are of no use.
        removed["message refs"] = await tx.message_refs.purge_before(now - 2 * DAY)
        # A draft set aside because it could not be read lives no longer than an abandoned one would.
        removed["set-aside drafts"] = await tx.drafts.purge_set_aside_before(now - SET_ASIDE_DAYS * DAY)
        removed["cached replies"] = await tx.processed.purge_replies_before(now - keep.cached_reply_hours * 3600)
        # A tip's sender pseudonym serves only the hourly urgent-alert limit (the upkeep clears it too).
        removed["tip senders"] = await tx.senders.forget_tip_senders(now - URGENT_WINDOW)
        # Pictures that no draft and no case leads to any more (a draft lost to a crash, or set
        # aside and purged): a day is far longer than any draft lives between two messages.
        removed["pictures"] += await tx.pictures.purge_orphans(now - DAY)
    await store.checkpoint()  # what was deleted does not linger in the write-ahead log
    return removed
