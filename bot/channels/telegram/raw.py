"""Updates read from their raw JSON, for when python-telegram-bot cannot read them.

PTB builds an ``Update`` strictly: one field of an unexpected type anywhere in an update (a newer
Bot API, an odd client, a field PTB has not caught up with) makes ``Update.de_json`` raise, and
``well_formed`` refuses a few shapes PTB would accept but the channel could not handle. Such an
update must not be lost, nor asked for again and again: if it carries a private chat's text
message, that message is taken from the few raw fields it needs (:func:`private_text`) and goes
through the conversation like any other; anything else is acknowledged and counted by kind
(:class:`NotUnderstood`), the kind being one of a fixed set of labels, never a value from the
update.

The polling loop also needs each update's chat before parsing it (:func:`chat_of`), so that the
updates of one chat are handled in order.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from telegram.constants import UpdateType

log = logging.getLogger(__name__)

# The kinds of update the Bot API defines; a key outside this list is counted as "unknown", so a
# log line never repeats a key somebody invented.
UPDATE_KINDS = tuple(kind.value for kind in UpdateType)
_CHAT_TYPES = ("private", "group", "supergroup", "channel")


def _int(value: Any) -> int | None:
    return value if type(value) is int else None  # not bool, which is an int to isinstance


@dataclass(frozen=True, repr=False)
class RawText:
    """The fields of a private text message that the conversation needs, each of the right type."""

    update_id: int
    chat_id: int
    text: str
    language_code: str | None
    message_id: int | None

    def __repr__(self) -> str:  # never the chat id or the text, even in a traceback's locals
        return f"RawText(update_id={self.update_id})"


def update_id_of(data: Any) -> int | None:
    return _int(data.get("update_id")) if isinstance(data, dict) else None


def private_text(data: dict[str, Any]) -> RawText | None:
    """A private chat's text message: an int update_id, ``message.chat.id`` an int,
    ``message.chat.type`` "private", ``message.text`` a string; the language code and message id
    when they have the right type. None for anything else."""
    update_id = update_id_of(data)
    message = data.get("message")
    if update_id is None or not isinstance(message, dict):
        return None
    chat = message.get("chat")
    if not isinstance(chat, dict) or _int(chat.get("id")) is None or chat.get("type") != "private":
        return None
    text = message.get("text")
    if not isinstance(text, str):
        return None
    sender = message.get("from")
    language = sender.get("language_code") if isinstance(sender, dict) else None
    return RawText(
        update_id=update_id,
        chat_id=chat["id"],
        text=text,
        language_code=language if isinstance(language, str) else None,
        message_id=_int(message.get("message_id")),
    )


def chat_of(data: Any) -> int | None:
    """The chat an update belongs to (a message's, or the message under a pressed button), when
    the update says so with an int; None otherwise."""
    if not isinstance(data, dict):
        return None
    for key in UPDATE_KINDS:
        value = data.get(key)
        if not isinstance(value, dict):
            continue
        if key == "callback_query":
            value = value.get("message")
            if not isinstance(value, dict):
                return None
        chat = value.get("chat")
        return _int(chat.get("id")) if isinstance(chat, dict) else None
    return None


def kind_of(data: dict[str, Any]) -> str:
    """A label for an update the channel does not handle, from a fixed set."""
    for key in UPDATE_KINDS:
        if key in data:
            return _message_kind(data[key]) if key == "message" else key.replace("_", "-")
    return "unknown"


def _message_kind(message: Any) -> str:
    if not isinstance(message, dict):
        return "message-not-an-object"
    chat = message.get("chat")
    if not isinstance(chat, dict) or _int(chat.get("id")) is None:
        return "message-without-chat"
    chat_type = chat.get("type")
    if chat_type != "private":
        return f"{chat_type}-message" if chat_type in _CHAT_TYPES else "message-in-unknown-chat"
    return "message-without-text"


class NotUnderstood:
    """Counts, by kind, the updates acknowledged without being handled, and logs each with its
    update id, its kind and how many of that kind came since start-up. Memory is bounded: the
    kinds are a fixed set."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, update_id: int, data: dict[str, Any]) -> str:
        kind = kind_of(data)
        self.counts[kind] += 1
        log.warning("telegram update %s not understood (kind: %s; %d so far)", update_id, kind, self.counts[kind])
        return kind
