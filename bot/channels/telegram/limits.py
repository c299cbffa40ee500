"""Telegram flood limits, applied inside python-telegram-bot's request path.

Telegram asks bots to send no more than about one message per second to one chat (short bursts
are tolerated), 20 messages per minute to one group, and about 30 per second overall; past that it
answers 429 with a ``retry_after``. :class:`FloodLimiter` spaces ``send*`` calls by those limits
and, when a 429 comes anyway, waits the time Telegram asked for and tries again.

PTB ships ``AIORateLimiter`` for this, but it has no per-chat limit, needs an extra dependency, and
can only be told "use the default number of retries" per call; the officer alert sink wants "no
retry here" (the outbox reschedules instead), which :class:`Retries` expresses.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger(__name__)

_JSON = bool | dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class FloodLimits:
    """The numbers, so tests (and a deployment with a paid broadcast plan) can change them."""

    chat_burst: int = 3  # private chat: 3 messages per 3 s is ~1/s on average, a reply's few
    chat_period: float = 3.0  # messages still go out together
    group_max: int = 20
    group_period: float = 60.0
    overall_max: int = 30
    overall_period: float = 1.0
    max_retries: int = 3  # after a 429
    max_retry_wait: float = 30.0  # a longer retry_after is not waited for here: the caller retries later


@dataclass(frozen=True)
class Retries:
    """Per-call override of :attr:`FloodLimits.max_retries` (``rate_limit_args`` of an ExtBot call).
    An object rather than an int because PTB drops a falsy ``rate_limit_args`` such as ``0``."""

    count: int


def retry_seconds(exc: RetryAfter) -> float:
    """Seconds Telegram asked us to wait. PTB 22 returns an int with a deprecation warning unless
    ``PTB_TIMEDELTA`` is set, and a timedelta when it is; accept either without the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def transient(exc: TelegramError) -> bool:
    """Worth trying again: throttling, outages, timeouts. A bad request or a person who blocked
    the bot will not get better. (BadRequest is a NetworkError in PTB, so it is tested first.)"""
    if isinstance(exc, BadRequest):
        return False
    return isinstance(exc, (RetryAfter, NetworkError))


class SlidingWindow:
    """At most ``limit`` acquisitions in any ``period`` seconds."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()

    def idle(self) -> bool:
        self._prune(self._clock())
        return not self._times

    def room(self) -> tuple[int, float]:
        """(acquisitions possible now without waiting, seconds until the next one frees when none)."""
        if self.limit <= 0 or self.period <= 0:
            return 1 << 30, 0.0
        now = self._clock()
        self._prune(now)
        free = self.limit - len(self._times)
        return free, 0.0 if free > 0 else self._times[0] + self.period - now

    async def acquire(self) -> None:
        if self.limit <= 0 or self.period <= 0:
            return
        while True:
            now = self._clock()
            self._prune(now)
            if len(self._times) < self.limit:
                self._times.append(now)
                return
            await asyncio.sleep(self._times[0] + self.period - now)


class FloodLimiter(BaseRateLimiter[Retries]):
    _MAX_CHATS = 1024  # windows kept before idle ones are dropped (memory stays flat)

    def __init__(self, limits: FloodLimits | None = None) -> None:
        self.limits = limits or FloodLimits()
        self._overall = SlidingWindow(self.limits.overall_max, self.limits.overall_period)
        self._chats: dict[int | str, SlidingWindow] = {}

    async def initialize(self) -> None:
        """Nothing to open: the windows live in memory."""

    async def shutdown(self) -> None:
        self._chats.clear()

    def _window(self, chat_id: int | str) -> SlidingWindow:
        window = self._chats.get(chat_id)
        if window is None:
            if len(self._chats) >= self._MAX_CHATS:
                for key in [k for k, w in self._chats.items() if w.idle()]:
                    del self._chats[key]
            limits = self.limits
            # Negative ids (and @usernames) are groups, supergroups and channels.
            group = isinstance(chat_id, str) or chat_id < 0
            window = SlidingWindow(*((limits.group_max, limits.group_period) if group else (limits.chat_burst, limits.chat_period)))
            self._chats[chat_id] = window
        return window

    def room(self, chat_id: int | str) -> tuple[int, float]:
        """How many messages ``chat_id`` can be sent now without waiting, and when none can, how
        long until one can. Senders that would rather batch than wait (the officer alert sink)
        ask this before sending; every send through the bot counts, officers' replies included."""
        return self._window(chat_id).room()

    async def _throttle(self, endpoint: str, data: dict[str, Any]) -> None:
        # Only sending counts against the message limits; edits, deletions and callback answers
        # go straight through (they still get the 429 handling below).
        chat_id = data.get("chat_id")
        if not endpoint.startswith("send") or chat_id is None:
            return
        try:
            chat_id = int(chat_id)
        except (TypeError, ValueError):
            chat_id = str(chat_id)
        await self._window(chat_id).acquire()
        await self._overall.acquire()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, _JSON]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Retries | None,
    ) -> _JSON:
        retries = self.limits.max_retries if rate_limit_args is None else rate_limit_args.count
        attempt = 0
        while True:
            await self._throttle(endpoint, data)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                wait = retry_seconds(exc)
                if attempt >= retries or wait > self.limits.max_retry_wait:
                    raise
                attempt += 1
                log.info("telegram %s throttled; retry %d in %.1fs", endpoint, attempt, wait)
                await asyncio.sleep(wait)
