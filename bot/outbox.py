"""The outbox worker: delivers rows written in the same transaction as the tip that caused them.

Rows are delivered in priority order (urgent first), retried with exponential backoff and jitter,
marked delivered only after the sink confirmed, and moved to ``dead`` after ``max_attempts``
(visible in ``/healthz`` and the CLI). Pending rows survive restarts: the worker simply finds them.
A sink is chosen by the prefix of the row's ``sink`` field ("telegram:-100123" → "telegram").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from storage.interfaces import Store
from storage.records import OutboxItem

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A sink could not deliver. ``retry_after`` (seconds) when the provider said when to retry;
    ``permanent`` when retrying cannot help (the row goes dead at once)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.permanent = permanent


class Sink(Protocol):
    async def deliver(self, item: OutboxItem, target: str) -> None: ...


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        sinks: dict[str, Sink],
        *,
        max_attempts: int = 10,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        batch: int = 50,
    ) -> None:
        self.store = store
        self.sinks = sinks
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._jitter = jitter
        self._batch = batch
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """2 s, 4 s, 8 s… capped, each stretched by a random 0.5–1.5 so retries do not stampede."""
        return min(self.max_delay, self.base_delay * 2 ** (attempts - 1)) * (0.5 + self._jitter())

    async def run_once(self) -> int:
        """Deliver every row that is due now; returns how many were delivered. Passes never
        overlap (the background loop and a caller's drain), so no row is sent twice."""
        async with self._pass:
            delivered = 0
            for item in await self.store.outbox.due(self._clock(), self._batch):
                if await self._deliver(item):
                    delivered += 1
            return delivered

    async def _deliver(self, item: OutboxItem) -> bool:
        prefix, _, target = item.sink.partition(":")
        sink = self.sinks.get(prefix)
        try:
            if sink is None:
                raise DeliveryError(f"no sink {prefix!r} is configured")
            await sink.deliver(item, target)
        except DeliveryError as exc:
            await self._failed(item, str(exc), exc.retry_after, exc.permanent)
            return False
        except Exception as exc:  # noqa: BLE001 - a sink bug must not stop the worker
            await self._failed(item, f"{type(exc).__name__}", None, False)
            log.exception("outbox sink %s raised while delivering %s", prefix, item.id[:8])
            return False
        async with self.store.transaction() as tx:
            await tx.outbox.mark_delivered(item.id, self._clock())
        log.info("outbox %s delivered to %s", item.id[:8], prefix)
        return True

    async def _failed(self, item: OutboxItem, reason: str, retry_after: float | None, permanent: bool) -> None:
        attempts = item.attempts + 1
        dead = permanent or attempts >= self.max_attempts
        delay = retry_after if retry_after is not None else self.backoff(attempts)
        async with self.store.transaction() as tx:
            await tx.outbox.mark_failed(item.id, attempts, self._clock() + delay, reason, dead)
        if dead:
            log.error("outbox %s to %s is dead after %d attempts: %s", item.id[:8], item.sink.partition(":")[0], attempts, reason)
        else:
            log.warning("outbox %s attempt %d failed (%s); retry in %.0fs", item.id[:8], attempts, reason, delay)

    async def run(self, idle: float = 30.0) -> None:
        """Deliver until stopped; sleeps until woken, the next retry is due, or ``idle`` passes."""
        while not self._stopping:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - e.g. the database briefly busy; try again later
                log.exception("outbox pass failed")
            next_due = await self.store.outbox.next_due_at()
            wait = idle if next_due is None else max(0.05, min(idle, next_due - self._clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self, timeout: float = 10.0) -> None:
        """Deliver what is due now, retrying briefly (the console's end of input)."""
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            await self.run_once()
            next_due = await self.store.outbox.next_due_at()
            if next_due is None or next_due > deadline:
                return
            await asyncio.sleep(max(0.01, min(0.5, next_due - self._clock())))
