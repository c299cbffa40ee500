"""Pictures of a Telegram message: a photo (its largest size) or a picture sent as a file, fetched
with ``getFile`` and downloaded from the same Bot API server (``base_file_url``), never elsewhere."""

from __future__ import annotations

from telegram import Message
from telegram.error import TelegramError
from telegram.ext import ExtBot

from bot.messages import MediaRef
from bot.pictures import PictureRefused, Refusal

SOURCE = "telegram"


def media_refs(message: Message) -> tuple[MediaRef, ...]:
    """A photo is always a JPEG Telegram made; a document declares its own type (checked again
    when it is decoded). Stickers, videos and voice notes are no pictures: no reference."""
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        return (MediaRef(SOURCE, largest.file_id, "image/jpeg", largest.file_size),)
    document = message.document
    if document is not None:
        return (MediaRef(SOURCE, document.file_id, document.mime_type or "", document.file_size),)
    return ()


class TelegramPictureSource:
    def __init__(self, bot: ExtBot) -> None:
        self._bot = bot

    async def fetch(self, ref: MediaRef, max_bytes: int) -> bytes:
        try:
            file = await self._bot.get_file(ref.locator)
            if file.file_size is not None and file.file_size > max_bytes:
                raise PictureRefused(Refusal.TOO_BIG)
            data = bytes(await file.download_as_bytearray())
        except TelegramError:
            # "file is too big" (over the Bot API's 20 MB) or a network fault: the reason only.
            raise PictureRefused(Refusal.NOT_RECEIVED) from None
        if len(data) > max_bytes:
            raise PictureRefused(Refusal.TOO_BIG)
        return data
