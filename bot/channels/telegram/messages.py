"""Translation between PTB objects and Tipline's message types, both ways, with no I/O.

Inbound: a private chat's ``Message`` or button press becomes an :class:`InboundMessage`; so does
a private text message read from raw JSON (``raw``) when PTB could not parse its update.
Outbound: an :class:`OutboundMessage` becomes text pieces and an inline keyboard; the deletion
offer gets its own two buttons. Callback data is the only state a button carries:
``c:<value>`` answers like typing ``<value>``; ``del:yes:<lang>`` / ``del:no:<lang>`` answer the
deletion offer (the language, so a follow-up message can be in the offer's language).
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity
from telegram.constants import MessageLimit

from bot.channels.telegram.media import media_refs
from bot.channels.telegram.raw import RawText
from bot.i18n import Catalogues
from bot.messages import InboundKind, InboundMessage, OutboundMessage

CHANNEL = "telegram"
CHOICE_PREFIX = "c:"
DELETE_PREFIX = "del:"


@dataclass(frozen=True)
class DeleteAnswer:
    confirmed: bool
    language: str


def _command(message: Message) -> tuple[str, str] | None:
    """(command, rest) when the message starts with a bot command entity: "/start abc" → ("start", "abc")."""
    entities = message.entities or ()
    if not message.text or not entities or entities[0].type != MessageEntity.BOT_COMMAND or entities[0].offset != 0:
        return None
    word, _, rest = message.text.partition(" ")
    return word[1:].split("@", 1)[0].lower(), rest.strip()


def inbound_from_message(message: Message, update_id: int, sender: str) -> InboundMessage | None:
    """A private chat's message. Anything the person sent that Tipline cannot keep as words is
    UNSUPPORTED; a photo or a file comes with references to fetch it (``media``) and its caption as
    text; a video with a caption keeps the caption and says media came with it. Service messages (e.g. the person turned on auto-delete) are None: nothing to answer."""
    user = message.from_user
    common = {
        "channel": CHANNEL,
        "sender": sender,
        "provider_id": str(update_id),
        "language_hint": user.language_code if user else None,
        "reply_address": str(message.chat.id),
        "message_ref": str(message.message_id),
    }
    if message.text is not None:
        command = _command(message)
        if command is not None and command[0] == "start":
            # A deep link (t.me/bot?start=xyz) arrives as "/start xyz": the payload is the text.
            # START with a payload opens a conversation; it is never an answer (the engine's rule).
            return InboundMessage(text=command[1], kind=InboundKind.START, **common)
        return InboundMessage(text=message.text, **common)
    if message.photo or message.document is not None:
        # A picture (or a file that may be one), with or without a caption: the caption is text.
        return InboundMessage(text=message.caption or "", has_media=True, media=media_refs(message), **common)
    if message.caption:
        return InboundMessage(text=message.caption, has_media=True, **common)
    if message.effective_attachment is not None:
        return InboundMessage(kind=InboundKind.UNSUPPORTED, **common)
    return None


def inbound_from_raw(raw: RawText, sender: str) -> InboundMessage:
    """A private text message whose update PTB could not parse, from its raw fields. Its entities
    are not trusted (they may be what broke the update), so /start is recognised by its word:
    Telegram marks a leading "/start" as a command in every message that has one."""
    common = {
        "channel": CHANNEL,
        "sender": sender,
        "provider_id": str(raw.update_id),
        "language_hint": raw.language_code,
        "reply_address": str(raw.chat_id),
        "message_ref": str(raw.message_id) if raw.message_id is not None else None,
    }
    word, _, rest = raw.text.partition(" ")
    if word[:1] == "/" and word[1:].split("@", 1)[0].lower() == "start":
        return InboundMessage(text=rest.strip(), kind=InboundKind.START, **common)
    return InboundMessage(text=raw.text, **common)


def choice_value(query: CallbackQuery) -> str | None:
    data = query.data or ""
    return data[len(CHOICE_PREFIX) :] if data.startswith(CHOICE_PREFIX) else None


def delete_answer(query: CallbackQuery) -> DeleteAnswer | None:
    data = query.data or ""
    if not data.startswith(DELETE_PREFIX):
        return None
    answer, _, language = data[len(DELETE_PREFIX) :].partition(":")
    if answer not in ("yes", "no"):
        return None
    return DeleteAnswer(answer == "yes", language or "en")


def inbound_from_choice(query: CallbackQuery, value: str, update_id: int, sender: str, chat_id: int) -> InboundMessage:
    """A button press reads exactly like typing the choice's number."""
    return InboundMessage(
        channel=CHANNEL,
        sender=sender,
        text=value,
        provider_id=str(update_id),
        language_hint=query.from_user.language_code,
        reply_address=str(chat_id),
    )


def choice_keyboard(reply: OutboundMessage) -> InlineKeyboardMarkup | None:
    if not reply.choices:
        return None
    # One button per row: labels such as "1 Sexual exploitation" stay readable on a phone.
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(f"{c.value} {c.label}", callback_data=f"{CHOICE_PREFIX}{c.value}")] for c in reply.choices]
    )


def delete_offer(catalogues: Catalogues, language: str) -> tuple[str, InlineKeyboardMarkup]:
    text = catalogues.text(language, "telegram.delete_offer")
    buttons = [
        InlineKeyboardButton(catalogues.text(language, "telegram.delete_yes"), callback_data=f"{DELETE_PREFIX}yes:{language}"),
        InlineKeyboardButton(catalogues.text(language, "telegram.delete_no"), callback_data=f"{DELETE_PREFIX}no:{language}"),
    ]
    return text, InlineKeyboardMarkup([buttons])


def split_text(text: str, limit: int = MessageLimit.MAX_TEXT_LENGTH) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at line ends where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            candidate = line
        current = candidate
    if current or not pieces:
        pieces.append(current)
    return pieces


def well_formed(data: dict) -> bool:
    """Does an update hold what Telegram always sends, in the types it sends? python-telegram-bot
    builds an Update from almost anything; an update refused here is not handled as a PTB
    ``Update`` (where it would fail later and be asked for again and again) but from its raw
    fields, or acknowledged and counted (``raw``)."""
    for key in ("message", "edited_message"):
        if key in data and not _message_well_formed(data[key]):
            return False
    query = data.get("callback_query")
    if query is not None:
        if not isinstance(query, dict) or not isinstance(query.get("id"), str) or not isinstance(query.get("data", ""), str):
            return False
        if "message" in query and not _message_well_formed(query["message"]):
            return False
    return True


def _message_well_formed(message: object) -> bool:
    if not isinstance(message, dict) or type(message.get("message_id")) is not int:
        return False
    chat = message.get("chat")
    if not isinstance(chat, dict) or type(chat.get("id")) is not int or not isinstance(chat.get("type"), str):
        return False
    if any(key in message and not isinstance(message[key], str) for key in ("text", "caption")):
        return False
    sender = message.get("from")
    return sender is None or (isinstance(sender, dict) and isinstance(sender.get("language_code", ""), str))
