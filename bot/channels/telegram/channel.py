"""The Telegram channel: private chats run the tip conversation; officer groups get alerts
(``alerts``) and give commands (``officers``).

Updates arrive by webhook (``POST /telegram/webhook``, verified by the secret token Telegram sends
before the body is read) or by long polling (``polling``); both feed the raw JSON object
to :meth:`TelegramChannel.handle`, which says whether the update is done or must come again. An
update is done only once the engine committed it and its replies were sent, so a failure to send
asks for it again (503 to the webhook; in polling, a retry in that chat's lane). The engine
de-duplicates by update id, so the second delivery re-sends the same replies without filing
anything twice. An update python-telegram-bot cannot parse is not refused: a private text message
in it is handled from its raw fields, anything else is acknowledged and counted
(``raw``).

Privacy: chat ids, user ids, names and text are never logged, stored in clear or put in an
exception; log lines name the update id and the first 8 characters of the sender pseudonym. Every
message id of a conversation (the person's and the bot's) is kept, encrypted, so the person can
delete the whole chat from their phone after the receipt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import replace
import json
import logging
import time
from collections import OrderedDict
from typing import Any
from contextlib import suppress
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from telegram import CallbackQuery, InlineKeyboardMarkup, Update
from telegram.constants import ChatType, UpdateType
from telegram.error import BadRequest, InvalidToken, TelegramError
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.channels.telegram.alerts import SINK_PREFIX, TelegramAlertSink, delivery_error
from bot.channels.telegram.limits import FloodLimiter, FloodLimits, transient
from bot.channels.telegram.media import SOURCE as MEDIA_SOURCE
from bot.channels.telegram.media import TelegramPictureSource
from bot.channels.telegram.memory import ConversationMemory
from bot.channels.telegram.officers import OfficerDesk
from bot.channels.telegram.polling import Outcome, Poller
from bot.channels.telegram.messages import (
    CHANNEL,
    DeleteAnswer,
    choice_keyboard,
    choice_value,
    delete_answer,
    delete_offer,
    inbound_from_choice,
    inbound_from_message,
    inbound_from_raw,
    split_text,
    well_formed,
)
from bot.channels.telegram.raw import NotUnderstood, RawText, private_text, update_id_of
from bot.keyed_locks import KeyedLocks
from bot.logs import exception_outline
from bot.messages import InboundMessage, OutboundMessage, Purpose
from bot.outbox import DeliveryError, Sink
from bot.runtime import Runtime
from bot.settings import Settings, SettingsError
from storage.interfaces import Store

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
# Names in the database that every instance agrees on (storage.interfaces.Store.once/exclusive).
WEBHOOK_ONCE = "telegram-webhook"
POLLING_EXCLUSIVE = "telegram-polling"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Edits are ignored, so Telegram is not asked for them: the less it sends, the less passes through.
ALLOWED_UPDATES = (UpdateType.MESSAGE, UpdateType.CALLBACK_QUERY)
OFFER_DELETION_AFTER = (Purpose.RECEIPT, Purpose.ERASED)
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MAX_UPDATE_FAILURES = 5


class TelegramSetupError(RuntimeError):
    """Telegram refused the channel's set-up (bad token, webhook URL rejected)."""


def _hold_library_logs() -> None:
    # PTB logs every request's parameters and every update at DEBUG: chat ids, names, text.
    # ``setup_logging`` quiets it in ``serve``; this holds even where it was not called.
    logger = logging.getLogger("telegram")
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)


class TelegramChannel:
    name = CHANNEL
    _PRESSED_KEPT = 4096  # recent button presses remembered (per prompt message) against double taps

    def __init__(
        self,
        settings: Settings,
        *,
        limits: FloodLimits | None = None,
        poll_timeout: float = 30.0,
        retry_delay: float = 5.0,
        update_retry_delay: float = 1.0,
    ) -> None:
        token = settings.telegram.token
        if token is None or not token.get_secret_value():
            raise ValueError("the Telegram channel needs TIPLINE_TELEGRAM__TOKEN")
        self.mode = settings.telegram_mode
        secret = settings.telegram.webhook_secret
        if self.mode == "webhook":
            # Without the secret anyone who finds the URL could post updates in a person's name.
            if secret is None:
                raise SettingsError("setting TIPLINE_TELEGRAM__WEBHOOK_SECRET: required in Telegram webhook mode")
            if not settings.public_url:
                raise SettingsError("setting TIPLINE_PUBLIC_URL: required in Telegram webhook mode (or set TIPLINE_TELEGRAM__MODE=polling)")
        self._token = token.get_secret_value()
        self._api_url = settings.telegram.api_url.rstrip("/")
        self._secret = secret.get_secret_value().encode("ascii") if secret else None
        self._webhook_url = f"{settings.public_url}{WEBHOOK_PATH}" if settings.public_url else None
        self._officer_chats = tuple(settings.officers.telegram_chat_ids)
        self._moved_groups: dict[int, int] = {}  # officer groups that became supergroups (old -> new id)
        self._officer_desk = OfficerDesk(settings.officers, self._moved_groups)
        self._limits = limits or FloodLimits()
        self._poll_timeout = poll_timeout
        self._retry_delay = retry_delay
        self._update_retry_delay = update_retry_delay
        self._runtime: Runtime | None = None
        self._memory: ConversationMemory | None = None
        self._bot: ExtBot | None = None
        self._locks = KeyedLocks()
        self._pressed: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._failures: OrderedDict[int, int] = OrderedDict()  # update id -> failed attempts
        self.not_understood = NotUnderstood()
        self._poller: Poller | None = None
        self._task: asyncio.Task | None = None  # polling, or registering the webhook late
        self._stopped = asyncio.Event()

    # --- the Channel protocol --------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [Route(WEBHOOK_PATH, self._webhook, methods=["POST"])] if self.mode == "webhook" else []

    def sinks(self) -> dict[str, Sink]:
        if self._bot is None or self._runtime is None:
            return {}
        return {SINK_PREFIX: TelegramAlertSink(self._bot, self._runtime.composer, self._moved_groups)}

    def alert_targets(self) -> tuple[str, ...]:
        return tuple(f"{SINK_PREFIX}:{chat_id}" for chat_id in self._officer_chats)

    async def start(self, runtime: Runtime) -> None:
        _hold_library_logs()
        if urlsplit(self._api_url).scheme == "http" and urlsplit(self._api_url).hostname not in _LOOPBACK:
            log.warning("the Telegram API URL is plain http on another host: the bot token crosses the network unencrypted")
        self._runtime = runtime
        self._memory = ConversationMemory(runtime.store, runtime.engine.storage)
        self._stopped.clear()
        self._bot = ExtBot(
            self._token,
            base_url=f"{self._api_url}/bot",
            base_file_url=f"{self._api_url}/file/bot",
            request=HTTPXRequest(),
            get_updates_request=HTTPXRequest(),
            rate_limiter=FloodLimiter(self._limits),
        )
        runtime.engine.pictures.add_source(MEDIA_SOURCE, TelegramPictureSource(self._bot))
        if self.mode == "polling" and not await runtime.store.exclusive(POLLING_EXCLUSIVE):
            await self._bot.shutdown()
            self._bot = self._runtime = None
            raise TelegramSetupError(
                "another Tipline instance is already polling Telegram for this database; polling runs on one "
                "instance only (set TIPLINE_PUBLIC_URL for webhook mode to run several)"
            )
        try:
            await self._connect()
            connected = True
        except (InvalidToken, BadRequest) as exc:
            await self._bot.shutdown()
            self._bot = self._runtime = None
            raise TelegramSetupError(self._refusal(exc)) from None
        except TelegramError as exc:
            # Telegram keeps updates for a day: starting without it loses nothing, and SMS still runs.
            log.warning("Telegram unreachable at start-up (%s); retrying in the background", type(exc).__name__)
            connected = False
        runtime.tipster_sink.register(CHANNEL, self)
        if self.mode == "polling":
            self._poller = Poller(
                self._bot,
                self.handle,
                self._connect,
                allowed_updates=ALLOWED_UPDATES,
                timeout=self._poll_timeout,
                retry_delay=self._retry_delay,
                update_retry_delay=self._update_retry_delay,
                max_attempts=MAX_UPDATE_FAILURES,
            )
            self._task = asyncio.create_task(self._poller.run(connected), name="telegram-polling")
        elif not connected:
            self._task = asyncio.create_task(self._connect_later(), name="telegram-webhook")
        log.info("telegram channel started (%s)", self.mode)

    async def stop(self) -> None:
        self._stopped.set()
        if self._poller is not None:
            self._poller.stop()
        if self._task is not None:
            try:
                # An update being handled is finished (its replies sent) before the bot closes.
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
        self._task = self._poller = None
        if self._bot is not None:
            await self._bot.shutdown()
        self._bot = self._runtime = None

    async def send_to_tipster(self, address: str, text: str) -> None:
        """An officer's reply (outbox sink ``tipster:telegram``), to the chat the tip came from."""
        if self._bot is None or self._runtime is None:
            raise DeliveryError("the Telegram channel is not running", retry_after=60)
        if not address.removeprefix("-").isdigit():
            raise DeliveryError("the tip's address is not a Telegram chat id", permanent=True)  # never quoted
        sent: list[int] = []
        try:
            await self._send(int(address), text, None, sent)
        except TelegramError as exc:
            raise delivery_error(exc) from None
        finally:
            # The reply is part of the conversation the person may delete from the phone.
            await self._memory.remember(self._runtime.cipher.tipster_pseudonyms(CHANNEL, address).current, [str(i) for i in sent])

    # --- set-up ----------------------------------------------------------------------------------

    def _refusal(self, exc: TelegramError) -> str:
        if isinstance(exc, InvalidToken):
            # PTB's own message quotes the token.
            return "Telegram rejected the bot token (setting TIPLINE_TELEGRAM__TOKEN)"
        return f"Telegram refused the set-up ({exc.message}); check TIPLINE_PUBLIC_URL and TIPLINE_TELEGRAM__*"

    async def _connect(self) -> None:
        assert self._bot is not None
        await self._bot.initialize()  # getMe: checks the token
        assert self._runtime is not None
        store = self._runtime.store
        if self.mode == "webhook":
            await self._register_webhook(store)
        else:
            # getUpdates is refused while a webhook is set; pending updates are kept (not dropped).
            await self._bot.delete_webhook()
            await store.forget_once(WEBHOOK_ONCE)

    async def _register_webhook(self, store: Store) -> None:
        """setWebhook once for every instance sharing the database: again only when the
        configuration changed or Telegram no longer has it (someone deleted it)."""
        assert self._bot is not None and self._secret is not None
        bot, url, secret = self._bot, self._webhook_url, self._secret.decode("ascii")
        fingerprint = hashlib.sha256(f"{url}\n{secret}\n{','.join(ALLOWED_UPDATES)}".encode()).hexdigest()

        async def register() -> None:
            await bot.set_webhook(url=url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES))
            log.info("telegram webhook registered")

        if (await bot.get_webhook_info()).url != url:
            await store.forget_once(WEBHOOK_ONCE)
        if not await store.once(WEBHOOK_ONCE, fingerprint, register):
            log.info("telegram webhook already registered (by this or another instance)")

    async def _connect_later(self) -> None:
        delay = self._retry_delay
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=delay)
            if self._stopped.is_set():
                return
            try:
                await self._connect()
                return
            except (InvalidToken, BadRequest) as exc:
                log.error("%s; Telegram stays off until restart", self._refusal(exc))
                return
            except TelegramError as exc:
                delay = min(delay * 2, 300.0)
                log.warning("Telegram still unreachable (%s); retrying in %.0fs", type(exc).__name__, delay)

    # --- receiving -------------------------------------------------------------------------------

    async def _webhook(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER)
        # Checked before the body is read: an unauthenticated request costs nothing more.
        if self._secret is None or given is None or not hmac.compare_digest(given.encode("latin-1"), self._secret):
            return PlainTextResponse("forbidden", status_code=403)
        if self._bot is None or self._runtime is None:
            return PlainTextResponse("not ready", status_code=503)
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):
            data = None
        if update_id_of(data) is None:
            # Not JSON, not an object, or no integer update_id: not from Telegram.
            return PlainTextResponse("not a Telegram update", status_code=400)
        outcome = await self.handle(data)
        return Response(status_code=outcome.value)

    async def handle(self, data: dict[str, Any]) -> Outcome:
        """One update as Telegram sent it (a JSON object with an integer update_id), from the
        webhook or the poller; never raises. Parsed by python-telegram-bot when it can be; if not,
        a private text message is taken from its raw fields, and anything else is acknowledged."""
        update = self._strict(data)
        if update is not None:
            return await self.process(update)
        raw = private_text(data)
        if raw is not None:
            return await self._process_raw(raw)
        self.not_understood.record(data["update_id"], data)
        return Outcome.DONE

    def _strict(self, data: dict[str, Any]) -> Update | None:
        try:
            return Update.de_json(data, self._bot) if well_formed(data) else None
        except Exception:  # noqa: BLE001 - whatever PTB cannot read goes the raw way
            return None

    async def process(self, update: Update) -> Outcome:
        """Handle one update (webhook or polling); never raises."""
        try:
            if update.callback_query is not None and update.callback_query.message is not None:
                chat = update.callback_query.message.chat
            elif update.message is not None:
                chat = update.message.chat
            else:
                return Outcome.DONE  # edits, channel posts, membership changes: nothing to do
            if chat.type != ChatType.PRIVATE:
                # Groups never run the tipster conversation; officer groups take commands.
                assert self._bot is not None and self._runtime is not None
                await self._group_heard(chat.id)
                return await self._officer_desk.handle(update, self._bot, self._runtime)
            assert self._runtime is not None
            sender = self._runtime.cipher.tipster_pseudonyms(CHANNEL, str(chat.id)).current
            async with self._locks.hold(sender):
                return await self._private(update, chat.id, sender)
        except Exception as exc:  # noqa: BLE001 - a failure here must become "deliver again", not a 500
            return self._failed(update.update_id, exc)

    async def _group_heard(self, chat_id: int) -> None:
        """Any message from an officer group (the service message of the bot being added back, a
        command) proves the bot is in it: alerts that waited for the group as unreachable go now,
        not at their slow retry."""
        assert self._runtime is not None
        configured = next((old for old, new in self._moved_groups.items() if new == chat_id), chat_id)
        if configured not in self._officer_chats:
            return
        try:
            await self._runtime.worker.target_reachable(f"{SINK_PREFIX}:{configured}")
        except Exception as exc:  # noqa: BLE001 - the slow retry still delivers; the update goes on
            log.warning("telegram: alerts waiting for an officer group not released (%s)", type(exc).__name__)

    async def _process_raw(self, raw: RawText) -> Outcome:
        """A private text message PTB could not parse: the same conversation, lock and replies."""
        try:
            assert self._runtime is not None
            log.info("telegram update %s read from its raw fields", raw.update_id)
            sender = self._runtime.cipher.tipster_pseudonyms(CHANNEL, str(raw.chat_id)).current
            async with self._locks.hold(sender):
                return await self._converse(inbound_from_raw(raw, sender), raw.chat_id, sender)
        except Exception as exc:  # noqa: BLE001 - as in process()
            return self._failed(raw.update_id, exc)

    def _failed(self, update_id: int, exc: Exception) -> Outcome:
        runtime = self._runtime
        # A storage failure (a full disk) is the watch's to log, once a minute, not once per update.
        if runtime is None or runtime.engine.storage.report(exc) is None:
            log.error("telegram update %s failed (%s)\n%s", update_id, type(exc).__name__, exception_outline(exc))
        return self._retry_or_give_up(update_id)

    def _retry_or_give_up(self, update_id: int) -> Outcome:
        """Ask for the update again, but not forever: an update that keeps failing (a bug, not an
        outage) would otherwise come back for as long as Telegram keeps it (a day), and hold up
        the later messages of its chat."""
        failures = self._failures.pop(update_id, 0) + 1
        self._failures[update_id] = failures
        while len(self._failures) > self._PRESSED_KEPT:
            self._failures.popitem(last=False)
        if failures >= MAX_UPDATE_FAILURES:
            log.error("telegram update %s failed %d times; dropped", update_id, failures)
            return Outcome.DONE
        return Outcome.RETRY

    async def _private(self, update: Update, chat_id: int, sender: str) -> Outcome:
        assert self._runtime is not None
        query = update.callback_query
        inbound: InboundMessage | None
        if query is not None:
            await self._answer(query)
            deletion = delete_answer(query)
            if deletion is not None:
                return await self._deletion(chat_id, sender, query, deletion)
            value = choice_value(query)
            if value is None or not self._first_press(sender, query, update.update_id):
                return Outcome.DONE
            await self._clear_buttons(chat_id, query.message.message_id)
            inbound = inbound_from_choice(query, value, update.update_id, sender, chat_id)
        else:
            inbound = inbound_from_message(update.message, update.update_id, sender)
            if inbound is None:
                return Outcome.DONE
        return await self._converse(inbound, chat_id, sender)

    async def _converse(self, inbound: InboundMessage, chat_id: int, sender: str) -> Outcome:
        """The engine's turn and its replies; the caller holds the sender's lock."""
        assert self._runtime is not None and self._memory is not None
        # The previous epoch's name too, so a conversation begun before the boundary is found.
        earlier = self._runtime.cipher.tipster_pseudonyms(CHANNEL, str(chat_id)).previous
        replies = await self._runtime.engine.handle(replace(inbound, earlier_sender=earlier))
        sent: list[int] = []
        outcome = await self._send_replies(chat_id, sender, replies, sent)
        own = [inbound.message_ref] if inbound.message_ref else []
        await self._memory.remember(sender, own + [str(message_id) for message_id in sent])
        log.debug("telegram update %s for %s: %d messages sent", inbound.provider_id, sender[:8], len(sent))
        return outcome

    def _first_press(self, sender: str, query: CallbackQuery, update_id: int) -> bool:
        """A prompt's buttons answer once: a double tap (a second update for the same message)
        must not answer the next question too. A redelivery of the same update still counts."""
        key = (sender, query.message.message_id)
        earlier = self._pressed.get(key)
        if earlier is not None and earlier != update_id:
            log.debug("telegram update %s: a second press on an answered prompt ignored", update_id)
            return False
        self._pressed[key] = update_id
        self._pressed.move_to_end(key)
        while len(self._pressed) > self._PRESSED_KEPT:
            self._pressed.popitem(last=False)
        return True

    # --- sending ---------------------------------------------------------------------------------

    async def _send(self, chat_id: int, text: str, markup: InlineKeyboardMarkup | None, sent: list[int]) -> None:
        assert self._bot is not None
        pieces = split_text(text)
        for index, piece in enumerate(pieces):
            message = await self._bot.send_message(
                chat_id,
                piece,
                protect_content=True,  # no forwarding or saving of the conversation
                reply_markup=markup if index == len(pieces) - 1 else None,
            )
            sent.append(message.message_id)

    async def _send_replies(self, chat_id: int, sender: str, replies: list[OutboundMessage], sent: list[int]) -> Outcome:
        assert self._runtime is not None
        try:
            for reply in replies:
                await self._send(chat_id, reply.text, choice_keyboard(reply), sent)
                if reply.purpose in OFFER_DELETION_AFTER:
                    text, markup = delete_offer(self._runtime.catalogues, reply.language)
                    await self._send(chat_id, text, markup, sent)
        except TelegramError as exc:
            return self._send_failed(sender, exc)
        return Outcome.DONE

    def _send_failed(self, sender: str, exc: TelegramError) -> Outcome:
        if transient(exc):
            log.warning("telegram reply to %s failed (%s); Telegram will deliver the update again", sender[:8], type(exc).__name__)
            return Outcome.RETRY
        # Blocked the bot, or a request Telegram will never accept: retrying cannot help.
        log.warning("telegram reply to %s not delivered (%s)", sender[:8], type(exc).__name__)
        return Outcome.DONE

    async def _answer(self, query: CallbackQuery) -> None:
        """Stop the button's spinner. Best effort: the answer matters more than the animation."""
        assert self._bot is not None
        try:
            await self._bot.answer_callback_query(query.id)
        except TelegramError as exc:
            log.debug("telegram callback answer failed (%s)", type(exc).__name__)

    async def _clear_buttons(self, chat_id: int, message_id: int) -> None:
        """Remove the buttons of an answered message, so old buttons cannot answer a later question.
        Best effort: it fails harmlessly on a redelivery (already cleared) or an old message."""
        assert self._bot is not None
        try:
            await self._bot.edit_message_reply_markup(chat_id, message_id, reply_markup=None)
        except TelegramError as exc:
            log.debug("telegram buttons not cleared (%s)", type(exc).__name__)

    # --- deleting the conversation from the phone -------------------------------------------------

    async def _deletion(self, chat_id: int, sender: str, query: CallbackQuery, answer: DeleteAnswer) -> Outcome:
        assert self._runtime is not None and self._bot is not None and self._memory is not None
        offer_id = query.message.message_id
        earlier = self._runtime.cipher.tipster_pseudonyms(CHANNEL, str(chat_id)).previous
        if earlier and earlier != sender:  # the receipt came before the epoch boundary: its ids too
            async with self._runtime.store.transaction() as tx:
                await tx.senders.rekey(earlier, sender, time.time())
        if not answer.confirmed:
            await self._memory.forget(sender)
            await self._clear_buttons(chat_id, offer_id)
            log.info("telegram conversation of %s kept on the phone", sender[:8])
            return Outcome.DONE
        try:
            count, too_old = await self._memory.wipe(self._bot, chat_id, sender, also=offer_id)
            if too_old:
                await self._send(chat_id, self._runtime.catalogues.text(answer.language, "telegram.delete_too_old"), None, [])
        except TelegramError as exc:
            return self._send_failed(sender, exc)
        log.info("telegram conversation of %s deleted (%d messages%s)", sender[:8], count, "; some too old" if too_old else "")
        return Outcome.DONE


def build(
    settings: Settings,
    *,
    limits: FloodLimits | None = None,
    poll_timeout: float = 30.0,
    retry_delay: float = 5.0,
    update_retry_delay: float = 1.0,
) -> TelegramChannel | None:
    """The channel, or None when no bot token is configured."""
    token = settings.telegram.token
    if token is None or not token.get_secret_value():
        return None
    return TelegramChannel(
        settings, limits=limits, poll_timeout=poll_timeout, retry_delay=retry_delay, update_retry_delay=update_retry_delay
    )
