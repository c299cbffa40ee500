"""What a person gets when their message cannot be stored (a full disk, a read-only file system, a
lock held elsewhere): "we could not take your message, please try again in a few minutes", a
short calm text that names nothing on a lock screen, in the person's language when anything tells
it (``error.retry``), else in English and French at once (``error.retry.both``, one SMS)."""

from __future__ import annotations

import asyncio

from bot.i18n import Catalogues
from bot.messages import InboundMessage, OutboundMessage, Purpose
from handlers import replies
from handlers.language_id import identify
from handlers.state import load_state
from handlers.understanding import Vocabulary
from handlers.words import clean
from storage.interfaces import Store

# How long each read behind the answer may take (the cached answer of a retry, the draft's
# language): it must reach Twilio well within its 15 s, after a write that already waited up to
# 5 s for a lock.
FALLBACK_READ_SECONDS = 1.0


class Refusal:
    def __init__(self, store: Store, catalogues: Catalogues, vocabulary: Vocabulary) -> None:
        self._store, self._catalogues, self._vocabulary = store, catalogues, vocabulary

    async def answer(self, msg: InboundMessage) -> OutboundMessage:
        """"We could not take your message, try again in a few minutes", in the conversation's
        language when its draft can still be read, else the channel's hint, else the language of
        the words themselves; in English and French at once when nothing tells."""
        language = await self._stored_language(msg) or replies.hinted_language(msg.language_hint)
        if language is None and msg.text:
            text = clean(msg.text)
            language = self._vocabulary.read(text).language or identify(text)
        key = "error.retry" if language in self._catalogues.languages else "error.retry.both"
        language = language if key == "error.retry" else "en"
        return OutboundMessage(self._catalogues.text(language, key), (), Purpose.INFO, key, language)

    async def _stored_language(self, msg: InboundMessage) -> str | None:
        """The language of the sender's draft, read (reads often still work when writes do not:
        a full disk, a lock) within FALLBACK_READ_SECONDS; None when it cannot be had."""
        try:
            async with asyncio.timeout(FALLBACK_READ_SECONDS):
                for sender in (msg.sender, msg.earlier_sender) if msg.earlier_sender else (msg.sender,):
                    draft = await self._store.drafts.get(sender)
                    if draft is not None:
                        return load_state(draft.state).language
        except Exception:  # noqa: BLE001 - TimeoutError, the storage's own failure, an unreadable draft
            return None
        return None
