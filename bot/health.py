"""What /healthz and /healthz/detail report (bot.web serves them).

The service is well when its database takes a write: a tiny row committed (storage
``write_check``), not merely a ``SELECT 1``, which a full disk, a read-only file system or a lock
held elsewhere all answer happily while every tipster's message fails. It is degraded, with the
reason, when that write fails or when tipsters' messages failed to store lately (the watch in
bot.storage_watch); and, as before, when officer alerts are dead or wait on a target that cannot be
reached.

/healthz stays fast and cannot be used to load the disk: the write runs at most once every
CHECK_EVERY seconds whoever asks, callers meanwhile share its result, and nobody waits for it more
than WAIT seconds (a lock held elsewhere must not make a load balancer's probe hang).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bot.storage_watch import StorageWatch
from storage.faults import IO_ERROR
from storage.interfaces import Store
from storage.records import OutboxStatus

CHECK_EVERY = 5.0
CHECK_EVERY_WHILE_FAILING = 1.0  # so "ok" comes back soon after the space does
WAIT = 2.0


class WriteProbe:
    def __init__(self, every: float | None = None, wait: float = WAIT, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = CHECK_EVERY if every is None else every
        self._wait, self._clock = wait, clock
        self._task: asyncio.Task[str | None] | None = None
        self._started: float | None = None
        self._last: str | None = None

    async def problem(self, store: Store, watch: StorageWatch) -> str | None:
        """Why the database does not take a write now, or None."""
        now = self._clock()
        every = self._every if self._last is None else min(self._every, CHECK_EVERY_WHILE_FAILING)
        if self._task is None and (self._started is None or now - self._started >= every):
            self._started = now
            self._task = asyncio.ensure_future(self._check(store, watch))
        task = self._task
        if task is not None:
            # Waited for, never cancelled: a COMMIT cut short would fail the transactions it
            # shares a batch with. A check still running past the wait is a disk that hangs.
            done, _ = await asyncio.wait({task}, timeout=self._wait + 0.5)
            if not done:
                return IO_ERROR
        return self._last

    async def _check(self, store: Store, watch: StorageWatch) -> str | None:
        try:
            self._last = await store.write_check(self._wait)
        except Exception:  # noqa: BLE001 - a store that cannot even say why
            self._last = IO_ERROR
        finally:
            self._task = None
        if self._last is not None:
            # Logged once a minute with the messages' failures, even when nobody writes in. A
            # check that passes does not declare recovery: small as it is, it may fit where a
            # message does not; the next message stored does.
            watch.failed(self._last)
        return self._last


async def report(store: Store, watch: StorageWatch, probe: WriteProbe, channels: list[str]) -> tuple[dict[str, Any], int]:
    """The detailed report and its HTTP status: 200 when tips are taken (even with alerts waiting),
    503 when they are not (the database does not take writes, or cannot be read at all), so a
    load balancer or Docker's health check notices."""
    problem = await probe.problem(store, watch) or watch.reason
    try:
        if not await store.healthy():
            raise ConnectionError("the database cannot be read")
        counts = await store.outbox.counts()
        # Pending rows whose target cannot be reached until someone fixes it (the bot removed from
        # the officer group): included in "pending", and enough on their own to be "degraded".
        unreachable = sum((await store.outbox.unreachable()).values())
        schema = await store.schema_version()
    except Exception:  # noqa: BLE001 - reported, not raised
        return {"status": "unavailable", "database": False, "storage": problem or IO_ERROR}, 503
    dead = counts[OutboxStatus.DEAD]
    found = {
        "status": "degraded" if problem or dead or unreachable else "ok",
        "database": True,
        "storage": problem or "ok",
        "schema": schema,
        "channels": channels,
        "outbox": {"pending": counts[OutboxStatus.PENDING], "dead": dead, "unreachable": unreachable},
    }
    return found, 503 if problem else 200
