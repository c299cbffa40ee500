"""Long polling for the Telegram channel, with the webhook's delivery guarantee.

An update is confirmed to Telegram (by asking for the next offset) only once handling it came to
:attr:`Outcome.DONE`; one that must come again is fetched again. PTB's ``Updater`` confirms updates
as soon as they are fetched, which would lose one whose replies could not be sent, so Tipline
polls with its own small loop instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from enum import Enum

from telegram import Update
from telegram.error import BadRequest, InvalidToken, TelegramError
from telegram.ext import ExtBot

log = logging.getLogger(__name__)

MAX_DELAY = 60.0


class Outcome(Enum):
    """What handling one update came to; the values are the webhook's answers."""

    DONE = 200
    RETRY = 503  # Telegram must deliver the update again


class Poller:
    def __init__(
        self,
        bot: ExtBot,
        process: Callable[[Update], Awaitable[Outcome]],
        connect: Callable[[], Awaitable[None]],
        *,
        allowed_updates: Sequence[str],
        timeout: float = 30.0,
        retry_delay: float = 5.0,
    ) -> None:
        self.bot = bot
        self.process = process
        self.connect = connect
        self.allowed_updates = list(allowed_updates)
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._fetch: asyncio.Future | None = None
        self._stopped = asyncio.Event()
        self._done: set[int] = set()  # updates after a failed one, already handled

    def stop(self) -> None:
        """End the loop: the long poll is abandoned, an update being handled is finished."""
        self._stopped.set()
        if self._fetch is not None:
            self._fetch.cancel()

    async def _pause(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)

    async def run(self, connected: bool) -> None:
        offset: int | None = None
        delay = self.retry_delay
        while not self._stopped.is_set():
            try:
                if not connected:
                    await self.connect()
                    connected = True
                self._fetch = asyncio.ensure_future(
                    self.bot.get_updates(offset=offset, timeout=self.timeout, allowed_updates=self.allowed_updates)
                )
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
            offset, failed = await self.handle_batch(updates, offset)
            if failed:
                await self._pause(delay)  # something must come again: give Telegram a moment
                delay = min(delay * 2, MAX_DELAY)
            else:
                delay = self.retry_delay

    async def handle_batch(self, updates: Sequence[Update], offset: int | None) -> tuple[int | None, bool]:
        """Handle a batch, different chats concurrently and each chat in arrival order (the
        channel takes its per-sender lock before its first await). Returns the next offset and
        whether something must come again."""
        fresh = [u for u in updates if u.update_id not in self._done]
        outcomes = await asyncio.gather(*(self.process(u) for u in fresh))
        failed = [u.update_id for u, outcome in zip(fresh, outcomes) if outcome is Outcome.RETRY]
        if not failed:
            self._done.clear()
            return (max(u.update_id for u in updates) + 1 if updates else offset), False
        # Fetch again from the first failure; those after it that are done are skipped then.
        first = min(failed)
        handled = {u.update_id for u, outcome in zip(fresh, outcomes) if outcome is Outcome.DONE}
        self._done = {update_id for update_id in self._done | handled if update_id > first}
        return first, True
