"""Keeping tipster pseudonyms expiring: at start-up and then every minute, make sure the current
epoch has its pepper, destroy the older ones (then truncate the WAL so no copy lingers there), and
forget the sender of tips the urgent-alert limit no longer looks at."""

from __future__ import annotations

import logging

from handlers.filing import URGENT_WINDOW
from storage.crypto import Cipher, pseudonym_epoch
from storage.interfaces import Store

log = logging.getLogger(__name__)


async def upkeep(store: Store, cipher: Cipher, epoch_hours: float, now: float) -> int:
    """One pass; returns how many epoch peppers were destroyed. Cheap when nothing changed."""
    epoch = pseudonym_epoch(now, epoch_hours)
    async with store.transaction() as tx:
        destroyed = await tx.peppers.rotate(epoch)
        alive = await tx.peppers.alive(epoch)
        await tx.senders.forget_tip_senders(now - URGENT_WINDOW)
    assert alive is not None
    cipher.use_epoch_peppers(alive)
    if destroyed:
        await store.checkpoint()  # secure_delete zeroed the row; the WAL's old frames go too
        log.info("pseudonyms: %d old epoch peppers destroyed", destroyed)
    return destroyed
