"""Officers in their Telegram group: commands typed there, and the buttons under each alert.

:class:`OfficerDesk` takes every update from a group, supergroup or channel (the tipster
conversation runs in private chats only) and decides, in this order:

* a chat not in ``TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS``: silence, nothing kept, the engine never
  sees it (a stranger who adds the bot to a group learns nothing);
* in an officer group, only text starting with "/" is a command (with the bot's privacy mode on,
  Telegram only delivers those anyway); ordinary talk stays silent. A command addressed to another
  bot ("/list@other_bot") is not ours;
* only the users in ``TIPLINE_OFFICERS__TELEGRAM_USER_IDS`` command; anyone else in the group is
  ignored (silence). Access fails closed: with no list, a command gets one line saying officer
  commands are off until the list is set, unless ``TIPLINE_OFFICERS__EVERY_MEMBER_IS_OFFICER`` is
  true. Bots never command, and that includes an admin posting anonymously as the group
  (Telegram shows them as a bot): the audit log needs a person;
* a press on an alert's Acknowledge / Show button (callback data ``o:ack:<case>`` /
  ``o:show:<case>``) is exactly typing ``/ack <case>`` / ``/show <case>``.

The engine sees an ``InboundMessage`` whose ``officer`` is the pseudonym of the Telegram user
(that is what the audit log records) and whose sender is the pseudonym of the group. Answers go
back to the group as plain text: no parse mode, since /show quotes what a tipster typed. A failed
send asks Telegram to deliver the update again; the engine de-duplicates by update id and gives
the same answer without a second effect or audit entry.

Logs name the update id and the officer pseudonym's prefix; never a chat id, user id or text.
"""

from __future__ import annotations

import logging
import re

from telegram import Chat, InlineKeyboardButton, InlineKeyboardMarkup, Update, User
from telegram.error import TelegramError
from telegram.ext import ExtBot

from bot.channels.telegram.limits import transient
from bot.channels.telegram.messages import CHANNEL, split_text
from bot.channels.telegram.polling import Outcome
from bot.i18n import Catalogues
from bot.messages import InboundMessage, OutboundMessage
from bot.runtime import Runtime
from bot.settings import OfficerSettings

log = logging.getLogger(__name__)

OFFICER_PSEUDONYM_CHANNEL = "officer-telegram"
BUTTON_PREFIX = "o:"
BUTTON_ACTIONS = ("ack", "show", "photos")  # Photos only under an alert about a case with pictures
# Case numbers look like 26-0001. Anything else in callback data is not ours (Telegram lets a
# client send any callback data, and it must fit the 64 bytes Telegram allows).
_CASE = re.compile(r"^[0-9A-Za-z-]{1,32}$")
# The case an alert (or a command's answer) names, as in "URGENT · Motel Lune — 26-0001".
_CASE_IN_TEXT = re.compile(r"\b(\d{2}-\d{4,6})\b")
_COMMAND_ARGUMENT = re.compile(r"^/([A-Za-z]+)(@\S+)?\s*(#?\d[\d\s-]*\b)?")


def with_replied_case(text: str, replied: str | None) -> str:
    """"/ack" sent as a reply to an alert about 26-0001 → "/ack 26-0001"; "/reply Are you safe?" →
    "/reply 26-0001 Are you safe?". A command that names its own case is left as it is."""
    found = _CASE_IN_TEXT.search(replied or "")
    command = _COMMAND_ARGUMENT.match(text)
    if found is None or command is None or command.group(3):
        return text
    rest = text[command.end() :].strip()
    return f"/{command.group(1)} {found.group(1)}" + (f" {rest}" if rest else "")


def officer_keyboard(catalogues: Catalogues, language: str, case: str, *, photos: bool = False) -> InlineKeyboardMarkup | None:
    """Acknowledge / Show (/ Photos, when the case has pictures) under an alert about ``case``,
    labelled in the officers' language."""
    if not _CASE.match(case):
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(catalogues.text(language, f"officer.button.{action}"), callback_data=f"{BUTTON_PREFIX}{action}:{case}")
                for action in BUTTON_ACTIONS
                if action != "photos" or photos
            ]
        ]
    )


def button_command(data: str | None) -> str | None:
    """The command a button press stands for: "o:ack:26-0001" → "/ack 26-0001"."""
    if not data or not data.startswith(BUTTON_PREFIX):
        return None
    action, _, case = data[len(BUTTON_PREFIX) :].partition(":")
    if action not in BUTTON_ACTIONS or not _CASE.match(case):
        return None
    return f"/{action} {case}"


def _for_another_bot(text: str, bot: ExtBot) -> bool:
    """"/list@other_bot" in a group with several bots is meant for the other one."""
    _, at, name = text.split(maxsplit=1)[0].partition("@")
    if not at:
        return False
    try:
        own = bot.username
    except RuntimeError:  # getMe has not answered yet: the name cannot be checked, accept it
        return False
    return name.lower() != own.lower()


class OfficerDesk:
    def __init__(self, officers: OfficerSettings, moved: dict[int, int] | None = None) -> None:
        self._chats = frozenset(officers.telegram_chat_ids)
        self._moved = moved if moved is not None else {}  # configured group -> its supergroup, when it moved
        self._users = frozenset(officers.telegram_user_ids)
        self._everyone = officers.every_member_is_officer
        self._language = officers.language
        if self._chats and self.closed:
            log.warning(
                "officer commands are refused until TIPLINE_OFFICERS__TELEGRAM_USER_IDS names the officers "
                "(or TIPLINE_OFFICERS__EVERY_MEMBER_IS_OFFICER=true lets every member of the group act on tips)"
            )

    @property
    def closed(self) -> bool:
        """No officer is named and the deployer did not open commands to the whole group."""
        return not self._users and not self._everyone

    async def handle(self, update: Update, bot: ExtBot, runtime: Runtime) -> Outcome:
        """One group update; never raises for a refusal (silence), only for a broken engine."""
        found = self._command(update, bot)
        if found is None:
            log.debug("telegram update %s from a group ignored", update.update_id)
            return Outcome.DONE
        text, chat, user = found
        if update.callback_query is not None:
            await _stop_spinner(bot, update.callback_query.id)
        if self.closed:
            log.warning("telegram officer command refused: TIPLINE_OFFICERS__TELEGRAM_USER_IDS is not set")
            try:
                await bot.send_message(chat.id, runtime.catalogues.text(self._language, "officer.access_off"))
            except TelegramError as exc:
                log.warning("telegram refusal to an officer group not sent (%s)", type(exc).__name__)
            return Outcome.DONE
        cipher = runtime.cipher
        # The officer group and the officer: the fixed pepper (officers are not tipsters, and the
        # audit log names them by pseudonym for good; see Cipher.pseudonym).
        inbound = InboundMessage(
            channel=CHANNEL,
            sender=cipher.pseudonym(CHANNEL, str(chat.id)),
            text=text,
            provider_id=str(update.update_id),
            officer=cipher.pseudonym(OFFICER_PSEUDONYM_CHANNEL, str(user.id)),
        )
        replies = await runtime.engine.handle(inbound)
        try:
            for reply in replies:
                for piece in split_text(reply.text):
                    # Protected: a case's details are not forwarded or saved out of the group.
                    await bot.send_message(chat.id, piece, protect_content=True)
                await self._send_pictures(bot, runtime, chat.id, reply)
        except TelegramError as exc:
            log.warning("telegram answer to officer %s not sent (%s)", inbound.officer[:8], type(exc).__name__)
            return Outcome.RETRY if transient(exc) else Outcome.DONE
        log.info("telegram officer command (update %s, officer %s): %d answers", update.update_id, inbound.officer[:8], len(replies))
        return Outcome.DONE

    async def _send_pictures(self, bot: ExtBot, runtime: Runtime, chat_id: int, reply: OutboundMessage) -> None:
        """A case's pictures (/photos), each protected like the text: Telegram then lets nobody in
        the group forward or save them. Read from storage only now, one at a time."""
        count = len(reply.pictures)
        case = _CASE_IN_TEXT.search(reply.text)
        for index, picture_id in enumerate(reply.pictures, start=1):
            image = await runtime.store.pictures.get(picture_id)
            if image is None:
                continue  # deleted meanwhile (the case was purged)
            caption = runtime.catalogues.text(self._language, "officer.photos.caption", case=case.group(1) if case else "", index=index, count=count)
            await bot.send_photo(chat_id, image, caption=caption, protect_content=True)

    def _command(self, update: Update, bot: ExtBot) -> tuple[str, Chat, User] | None:
        """(command text, group, officer) when the update is an officer's command, else None."""
        query = update.callback_query
        if query is not None:
            if query.message is None:
                return None
            chat, user, text = query.message.chat, query.from_user, button_command(query.data)
        elif update.message is not None:
            message = update.message
            chat, user, text = message.chat, message.from_user, message.text
            if not text or not text.startswith("/") or _for_another_bot(text, bot):
                return None
            replied = message.reply_to_message
            if replied is not None and replied.from_user is not None and replied.from_user.is_bot:
                text = with_replied_case(text, replied.text)
        else:
            return None
        if (chat.id not in self._chats and chat.id not in self._moved.values()) or text is None or user is None or user.is_bot:
            return None
        if self._users and user.id not in self._users:
            return None
        return text, chat, user


async def _stop_spinner(bot: ExtBot, query_id: str) -> None:
    """Answer the button press. Best effort: the command's answer matters more than the animation."""
    try:
        await bot.answer_callback_query(query_id)
    except TelegramError as exc:
        log.debug("telegram callback answer failed (%s)", type(exc).__name__)
