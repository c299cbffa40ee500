"""The message ids of a Telegram conversation (the person's and the bot's), kept encrypted in the
store so the person can wipe the whole chat from the phone; and the wiping itself."""

from __future__ import annotations

import logging
import time

from telegram import Bot
from telegram.error import BadRequest

from bot.storage_watch import StorageWatch
from storage.interfaces import Store

log = logging.getLogger(__name__)

DELETE_CHUNK = 100  # Telegram's maximum per deleteMessages call


class ConversationMemory:
    def __init__(self, store: Store, watch: StorageWatch | None = None) -> None:
        self.store = store
        self._watch = watch if watch is not None else StorageWatch()

    async def remember(self, sender: str, refs: list[str]) -> None:
        """Best effort: the replies are already out; a failure only affects later deletion."""
        if not refs:
            return
        try:
            async with self.store.transaction() as tx:
                await tx.message_refs.add(sender, refs, time.time())
        except Exception as exc:  # noqa: BLE001 - see above
            # A storage failure is the watch's to log, once a minute, not once per update.
            if self._watch.report(exc) is None:
                log.error("telegram message ids of %s not recorded (%s)", sender[:8], type(exc).__name__)

    async def forget(self, sender: str) -> None:
        async with self.store.transaction() as tx:
            await tx.message_refs.delete(sender)

    async def wipe(self, bot: Bot, chat_id: int, sender: str, also: int) -> tuple[int, bool]:
        """Delete every remembered message (and ``also``, the offer itself) from the chat, then
        forget the ids. Returns (how many ids, whether some were too old for Telegram to delete).
        Errors other than "too old" propagate (the update is then delivered again)."""
        refs = await self.store.message_refs.get(sender)
        ids = sorted({int(ref) for ref in refs if ref.isdigit()} | {also})
        too_old = False
        for start in range(0, len(ids), DELETE_CHUNK):
            try:
                await bot.delete_messages(chat_id, ids[start : start + DELETE_CHUNK])
            except BadRequest:
                too_old = True  # past Telegram's 48 hours (or already gone)
        await self.forget(sender)
        return len(ids), too_old
