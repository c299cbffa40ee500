"""Delivery outcomes the database would not take yet (a full disk, a read-only file, a lock).

A row a provider accepted must never go out again because the write that says so failed (a full
disk once paged the on-call officer 380 times in 30 s: sent, not recorded, sent again). The
worker keeps each outcome it could not write here, in memory: the row is not handed to a sink
again while its outcome waits (a delivered row never; a failed one not before its retry time, as
the database would have said), and the writes are tried again with backoff before any new pass.

What this cannot cover: the process dying before the database takes the outcome. The row is then
due again (after its lease) and goes out once more; no provider Tipline uses accepts an
idempotency key for a new message (Twilio's Messages API and Telegram's sendMessage have none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from storage.interfaces import Repositories, Store

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between two lines saying outcomes still wait for the database
MAX_RETRY_DELAY = 10.0


@dataclass(frozen=True)
class Outcome:
    """What became of one try: ``delivered_at`` set when the provider took it; otherwise a failed
    try with the attempts, the retry time and the verdict the worker decided."""

    delivered_at: float | None = None
    attempts: int = 0
    next_at: float = 0.0
    error: str = ""
    dead: bool = False
    unreachable: bool = False
    sink: str = ""  # the row's sink: an in-order lane holds back the target's later rows too

    def holds(self, now: float) -> bool:
        """Whether the row must not be tried again yet."""
        return self.delivered_at is not None or self.dead or self.next_at > now

    async def write(self, tx: Repositories, item_id: str) -> None:
        if self.delivered_at is not None:
            await tx.outbox.mark_delivered(item_id, self.delivered_at)
        else:
            await tx.outbox.mark_failed(item_id, self.attempts, self.next_at, self.error, self.dead, self.unreachable)


class Journal:
    """Outcomes by row id, written as soon as the database takes them."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.waiting: dict[str, Outcome] = {}
        self._clock = clock
        self._failures = 0
        self._retry_at = 0.0
        self._logged_at: float | None = None

    def held(self) -> frozenset[str]:
        """Rows whose outcome waits here and must not be tried now."""
        now = self._clock()
        return frozenset(i for i, outcome in self.waiting.items() if outcome.holds(now))

    @property
    def retry_at(self) -> float | None:
        """When the waiting outcomes are next written, or None when nothing waits."""
        return self._retry_at if self.waiting else None

    def retry_soon(self) -> None:
        """Something was just committed (the worker was woken for new rows): the database takes
        writes again, so what waits is written at the next pass, not after its backoff."""
        self._retry_at = 0.0

    async def record(self, outcomes: dict[str, Outcome]) -> bool:
        """Write these outcomes (with any still waiting) in one transaction; keep them here when
        the database refuses. True when everything is written."""
        self.waiting.update(outcomes)
        return await self._write()

    async def flush(self) -> bool:
        """Write what waits, if its retry time has come. True when nothing waits any more."""
        if not self.waiting:
            return True
        if self._clock() < self._retry_at:
            return False
        return await self._write()

    async def _write(self) -> bool:
        if not self.waiting:
            return True
        batch = dict(self.waiting)
        try:
            async with self.store.transaction() as tx:
                for item_id, outcome in batch.items():
                    await outcome.write(tx, item_id)
        except Exception as exc:  # noqa: BLE001 - kept in memory; tried again with backoff
            self._failures += 1
            now = self._clock()
            self._retry_at = now + min(MAX_RETRY_DELAY, 0.5 * 2 ** min(self._failures, 10))
            if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                log.error(
                    "outbox: the database refuses to record deliveries (%s: %s); %d outcomes kept in memory, "
                    "those rows are not sent again; retrying",
                    type(exc).__name__, str(exc)[:120], len(self.waiting),
                )  # fmt: skip
            return False
        for item_id, outcome in batch.items():
            if self.waiting.get(item_id) == outcome:
                del self.waiting[item_id]
        if self._failures:
            log.warning("outbox: the database records deliveries again; %d outcomes that waited are written", len(batch))
        self._failures, self._logged_at = 0, None
        return not self.waiting
