"""Long polling for the Telegram channel: one chat's trouble never holds up another chat.

The loop fetches updates as raw JSON (``getUpdates`` through the bot's own HTTP client) and hands
each to a *lane*: one per chat, handled in arrival order, all lanes at once. Fetching goes on
while lanes work, and each fetch confirms what the previous one returned (Telegram's offset), so
from then on the poller owns those updates: one whose handling must come again
(:attr:`Outcome.RETRY`: the engine raised, or a reply could not be sent) is tried again in its own
lane after 1 s, 2 s, 4 s… and dropped after ``max_attempts`` with a log line naming its update id.
Only later updates of the same chat wait behind it; the engine de-duplicates by update id, so a
second attempt re-sends the same replies without filing anything twice.

Raw JSON rather than PTB's ``get_updates``: PTB parses the whole batch at once, so one update it
cannot read would make every fetch fail, forever. Here each update is parsed on its own, in the
channel (``TelegramChannel.handle``), which falls back to the raw fields when PTB cannot read it.

Stopping abandons the long poll, not the work: what was fetched is finished (a waiting retry gets
one last attempt at once) before the bot closes. PTB's ``Updater`` is not used: it confirms each
update as soon as it is fetched and handles updates one at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import suppress
from enum import Enum
from typing import Any

from telegram.error import BadRequest, InvalidToken, TelegramError
from telegram.ext import ExtBot

from bot.channels.telegram.raw import chat_of, update_id_of

log = logging.getLogger(__name__)

MAX_DELAY = 60.0  # between failed fetches
MAX_PENDING = 1000  # updates fetched and not yet finished, beyond which fetching waits
READ_MARGIN = 10.0  # seconds a long poll's answer may take beyond the poll's own timeout


class Outcome(Enum):
    """What handling one update came to; the values are the webhook's answers."""

    DONE = 200
    RETRY = 503  # Telegram must deliver the update again (in polling: try it again here)


async def fetch_raw_updates(bot: ExtBot, offset: int | None, timeout: float, allowed_updates: Sequence[str]) -> Any:
    """``getUpdates`` without PTB's parsing: the raw ``result`` (a list of JSON objects). Goes
    through ``Bot._post`` like ``Bot.get_updates`` itself (and ``do_api_request``, which warns
    for a method PTB knows), so the bot's polling connection, error mapping and timeouts apply."""
    seconds = max(1, round(timeout))  # Telegram wants whole seconds; 0 would be a busy loop
    data = {"offset": offset, "timeout": seconds, "allowed_updates": list(allowed_updates)}
    return await bot._post("getUpdates", data, read_timeout=seconds + READ_MARGIN)


class Poller:
    def __init__(
        self,
        bot: ExtBot,
        handle: Callable[[dict[str, Any]], Awaitable[Outcome]],
        connect: Callable[[], Awaitable[None]],
        *,
        allowed_updates: Sequence[str],
        timeout: float = 30.0,
        retry_delay: float = 5.0,
        update_retry_delay: float = 1.0,
        max_attempts: int = 5,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.bot = bot
        self.handle = handle
        self.connect = connect
        self.allowed_updates = list(allowed_updates)
        self.timeout = timeout
        self.retry_delay = retry_delay
        self.update_retry_delay = update_retry_delay
        self.max_attempts = max_attempts
        self.max_pending = max_pending
        self._fetch: asyncio.Future | None = None
        self._stopped = asyncio.Event()
        self._room = asyncio.Event()  # set while fewer than max_pending updates are in hand
        self._room.set()
        self._lanes: dict[Hashable, deque[dict[str, Any]]] = {}  # chat -> its updates, oldest first
        self._workers: dict[Hashable, asyncio.Task] = {}
        self._pending: set[int] = set()  # update ids in a lane, not finished

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stop(self) -> None:
        """End the loop: the long poll is abandoned, what was fetched is finished."""
        self._stopped.set()
        self._room.set()  # wakes a loop waiting for room
        if self._fetch is not None:
            self._fetch.cancel()

    async def _pause(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)

    async def run(self, connected: bool) -> None:
        try:
            await self._poll(connected)
            workers = list(self._workers.values())
            await asyncio.gather(*workers)  # stopping: finish what was fetched
        except asyncio.CancelledError:
            for worker in list(self._workers.values()):
                worker.cancel()
            raise

    async def _poll(self, connected: bool) -> None:
        offset: int | None = None
        delay = self.retry_delay
        while not self._stopped.is_set():
            await self._room.wait()
            if self._stopped.is_set():
                return
            try:
                if not connected:
                    await self.connect()
                    connected = True
                self._fetch = asyncio.ensure_future(fetch_raw_updates(self.bot, offset, self.timeout, self.allowed_updates))
                try:
                    updates = await self._fetch
                finally:
                    self._fetch = None
            except asyncio.CancelledError:
                if self._stopped.is_set():
                    return
                raise
            except (InvalidToken, BadRequest) as exc:
                log.error("Telegram refused polling (%s); Telegram stays off until restart", type(exc).__name__)
                return
            except TelegramError as exc:
                log.warning("telegram polling failed (%s); retrying in %.0fs", type(exc).__name__, delay)
                await self._pause(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            if not isinstance(updates, list):
                log.warning("telegram polling: getUpdates answered something other than a list; retrying in %.0fs", delay)
                await self._pause(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            delay = self.retry_delay
            offset = self.dispatch(updates, offset)

    def dispatch(self, updates: list[Any], offset: int | None) -> int | None:
        """Put each fetched update in its chat's lane; the next offset (which confirms them all)."""
        for data in updates:
            update_id = update_id_of(data)
            if update_id is None:
                log.warning("telegram polling: an update without an update id skipped")
                continue
            offset = max(offset or 0, update_id + 1)
            if update_id in self._pending:
                continue  # fetched again before the offset confirmed it (a lost answer): in hand
            chat = chat_of(data)
            key: Hashable = ("chat", chat) if chat is not None else ("update", update_id)
            self._pending.add(update_id)
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = lane = deque()
                self._workers[key] = asyncio.create_task(self._work(key, lane), name="telegram-lane")
            lane.append(data)
        if len(self._pending) >= self.max_pending:
            self._room.clear()
        return offset

    async def _work(self, key: Hashable, lane: deque[dict[str, Any]]) -> None:
        """One chat's updates, in order. The lane is removed in the same step that finds it
        empty, so :meth:`dispatch` never appends to a lane whose worker has finished."""
        try:
            while lane:
                data = lane[0]
                try:
                    await self._until_done(data)
                finally:
                    lane.popleft()
                    self._pending.discard(data["update_id"])
                    if len(self._pending) < self.max_pending:
                        self._room.set()
        finally:
            del self._lanes[key], self._workers[key]

    async def _until_done(self, data: dict[str, Any]) -> None:
        update_id = data["update_id"]
        last_chance = False
        for attempt in range(1, self.max_attempts + 1):
            if await self._attempt(data) is Outcome.DONE:
                return
            if attempt == self.max_attempts or last_chance:
                break
            if not self._stopped.is_set():
                await self._pause(self.update_retry_delay * 2 ** (attempt - 1))
            last_chance = self._stopped.is_set()  # stopping: one more try at once, then no more
        log.error("telegram update %s failed %d times; dropped%s", update_id, attempt, " at shutdown" if last_chance else "")

    async def _attempt(self, data: dict[str, Any]) -> Outcome:
        try:
            return await self.handle(data)
        except Exception as exc:  # noqa: BLE001 - the channel never raises; if it did, try again
            log.error("telegram update %s failed (%s)", data["update_id"], type(exc).__name__)
            return Outcome.RETRY
