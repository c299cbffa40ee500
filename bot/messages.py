"""The one message type at the channel boundary.

Channel adapters turn provider payloads (a PTB ``Update``, Twilio form fields, a console line) into
an :class:`InboundMessage`, and render :class:`OutboundMessage` values back. Nothing provider-shaped
crosses into ``handlers/`` or ``storage/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class InboundKind(str, Enum):
    TEXT = "text"
    START = "start"  # a channel's "open conversation" (Telegram /start, console start-up)
    UNSUPPORTED = "unsupported"  # stickers, voice, locations…: answered calmly, nothing stored


class Purpose(str, Enum):
    """What an outbound message is for, so a channel can treat some specially
    (e.g. SMS stays silent after a carrier opt-out; Telegram offers deletion after a receipt)."""

    PROMPT = "prompt"
    INFO = "info"
    RECEIPT = "receipt"
    ERASED = "erased"
    OFFICER = "officer"


@dataclass(frozen=True)
class Choice:
    value: str  # what typing it means, e.g. "1"
    label: str  # localised text for a button


@dataclass(frozen=True)
class MediaRef:
    """A picture (or other file) a message carried, as its channel can fetch it: a Twilio media
    path, a Telegram file id. Never logged (repr=False), never stored."""

    source: str  # the channel that can fetch it: "twilio", "telegram"
    locator: str = field(repr=False)
    content_type: str = ""  # as the provider declared it
    size: int | None = None  # bytes, when the provider says before the download
    fetchable: bool = True  # False: it failed the channel's checks (a URL on another host): never fetched


@dataclass(frozen=True)
class InboundMessage:
    channel: str  # "console", "telegram", "sms", "whatsapp"
    sender: str  # pseudonym under the current epoch's pepper, never a provider id
    text: str = ""
    kind: InboundKind = InboundKind.TEXT
    provider_id: str | None = None  # for de-duplication (Twilio MessageSid, Telegram update_id)
    language_hint: str | None = None  # e.g. Telegram's language_code
    # Where a reply could be sent later. Kept in memory only; stored (encrypted) solely when the
    # tipster consents at [contact]. repr=False keeps it out of any log line or traceback.
    reply_address: str | None = field(default=None, repr=False)
    has_media: bool = False  # a file of any kind came with the message
    media: tuple[MediaRef, ...] = ()  # those of them that may be pictures
    officer: str | None = None  # officer pseudonym when it comes from an officer chat
    message_ref: str | None = None  # provider message id of this message (Telegram deletion)
    # The same tipster's pseudonym under the previous epoch's pepper: what is stored under it (a
    # draft, a lock-out, message refs) is re-keyed to ``sender`` in the message's transaction.
    earlier_sender: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    text: str
    choices: tuple[Choice, ...] = ()
    purpose: Purpose = Purpose.PROMPT
    key: str = ""  # the catalogue key that produced the text (tests and channels read it)
    language: str = "en"
    # Stored pictures to send after the text (an officer's /photos): ids, read by the channel when
    # it sends, so a cached reply never holds a picture.
    pictures: tuple[str, ...] = ()
