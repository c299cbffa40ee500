"""The outbox worker: delivers rows written in the same transaction as the tip that caused them.

Rows are delivered in priority order (urgent first), retried with exponential backoff and jitter,
marked delivered only after the sink confirmed, and moved to ``dead`` after ``max_attempts``
(visible in ``/healthz`` and the CLI), except officer alerts, which are never given up. Pending rows survive restarts: the worker simply finds them.
A sink is chosen by the prefix of the row's ``sink`` field ("telegram:-100123" → "telegram").
A row goes only where the deployment sends (``allowed``): its payload is sealed together with its
sink, so a row whose sink was edited in the database does not open and is set aside, never sent.

A target that cannot be reached until someone fixes it (the bot removed from the officer group)
is not a failure to give up on: the sink says ``unreachable`` and its rows stay pending, flagged,
tried again every ``UNREACHABLE_RETRY_SECONDS`` without using up attempts, and counted in
``/healthz``. The worker logs it at ERROR once when a target becomes unreachable and once when it
is reached again, not at every try.

A sink may also offer ``deliver_batch(items, target)``: the worker then hands it all the rows due
for one target at once (in priority order), so it can merge them (the Telegram group's digest when
a burst would pass the group's flood limit). The batch goes where its most urgent row would have.

Several instances may share one outbox (PostgreSQL): a pass *claims* its rows first, leasing them
for ``LEASE_SECONDS`` (skipping rows another instance is claiming), and keeps the lease fresh
while a slow provider answers. An instance killed mid-delivery leaves its rows leased; they are due
again when the lease runs out, so the only way a row goes out twice is a kill between the
provider's "sent" and the commit that records it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import suppress
from collections.abc import Callable, Iterable
from typing import Protocol

from storage.interfaces import Store
from storage.records import OutboxItem

log = logging.getLogger(__name__)

# How often rows for an unreachable target are tried again: slow (one request per target each
# time), but an alert still goes out within minutes of the bot being added back.
UNREACHABLE_RETRY_SECONDS = 300.0
# How long a claimed row is this instance's alone; renewed every third of it while delivering.
LEASE_SECONDS = 15.0


class DeliveryError(Exception):
    """A sink could not deliver. ``retry_after`` (seconds) when the provider said when to retry;
    ``permanent`` when retrying cannot help (the row goes dead at once). ``deferred``: nothing
    failed, the sink chose to wait (its provider's rate budget is spent), so the attempt is not
    counted. ``unreachable``: the target cannot be reached until someone fixes it (the bot was
    removed from the officer group); the rows wait, pending and flagged, retried on the slow
    schedule, their attempts not counted, and never go dead for it. The reason then says what to
    do. ``delivered``: ids of a batch's rows that did go out before the error, so they are marked
    delivered and never sent twice."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        deferred: bool = False,
        unreachable: bool = False,
        delivered: Iterable[str] = (),
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.permanent = permanent
        self.deferred = deferred
        self.unreachable = unreachable
        self.delivered = frozenset(delivered)


class Sink(Protocol):
    async def deliver(self, item: OutboxItem, target: str) -> None: ...


class BatchSink(Sink, Protocol):
    async def deliver_batch(self, items: list[OutboxItem], target: str) -> None:
        """Deliver every row (all for ``target``, urgent first); on success all count as delivered.
        Raise DeliveryError (with ``delivered`` for the rows that went out) otherwise."""
        ...


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        sinks: dict[str, Sink],
        *,
        max_attempts: int = 10,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        unreachable_retry: float = UNREACHABLE_RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        batch: int = 50,
        allowed: Callable[[str], bool] | None = None,
        lease: float = LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.sinks = sinks
        self.lease = lease
        # Whether a row's sink ("telegram:-100123") is one this deployment sends to; None: any.
        self.allowed = allowed
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.unreachable_retry = unreachable_retry
        # Targets (full sink, e.g. "telegram:-100123") last found unreachable, with the reason:
        # the ERROR line is written when a target enters or leaves this state, not at every try.
        self.unreachable_targets: dict[str, str] = {}
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
            async with self.store.transaction() as tx:
                due = await tx.outbox.claim(self._clock(), self.lease, self._batch)
            if not due:
                return 0
            keeper = asyncio.create_task(self._keep_leased([i.id for i in due]), name="outbox-lease")
            try:
                return await self._deliver_claimed(due)
            finally:
                keeper.cancel()
                with suppress(asyncio.CancelledError):
                    await keeper

    async def _keep_leased(self, ids: list[str]) -> None:
        """While this pass runs, its rows stay leased (a provider may take its time)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with self.store.transaction() as tx:
                    await tx.outbox.extend_lease(ids, self._clock() + self.lease)
            except Exception:  # noqa: BLE001 - the next renewal retries; the lease still runs
                log.warning("outbox: a lease could not be renewed", exc_info=True)

    async def _deliver_claimed(self, due: list[OutboxItem]) -> int:
        delivered = 0
        refused = [i for i in due if self._refusal(i)]
        for item in refused:
            await self._failed(item, DeliveryError(self._refusal(item) or "", permanent=True))
        due = [i for i in due if i not in refused]
        batched: set[str] = set()
        for item in due:
            if not hasattr(self.sinks.get(item.sink.partition(":")[0]), "deliver_batch"):
                delivered += await self._deliver([item])
            elif item.sink not in batched:  # the target's rows go together, at its first row's turn
                batched.add(item.sink)
                delivered += await self._deliver([i for i in due if i.sink == item.sink])
        return delivered

    def _refusal(self, item: OutboxItem) -> str | None:
        """Why a row must not be sent at all (it goes dead at once, and is counted), or None."""
        if item.payload is None:
            return "altered in the database: its sink or payload does not match its seal; not sent"
        if self.allowed is not None and not self.allowed(item.sink):
            return f"{item.sink.partition(':')[0]} target is not configured (TIPLINE_OFFICERS__*); not sent"
        return None

    async def _deliver(self, items: list[OutboxItem]) -> int:
        """Hand rows for one target to their sink (one row, or a batch to a BatchSink); mark what
        went out delivered and give the rest the failure treatment. Returns how many went out."""
        prefix, _, target = items[0].sink.partition(":")
        sink = self.sinks.get(prefix)
        error: DeliveryError | None = None
        try:
            if sink is None:
                raise DeliveryError(f"no sink {prefix!r} is configured")
            if len(items) == 1 and not hasattr(sink, "deliver_batch"):
                await sink.deliver(items[0], target)
            else:
                await sink.deliver_batch(items, target)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a sink bug must not stop the worker
            error = DeliveryError(type(exc).__name__)
            log.exception("outbox sink %s raised while delivering %d rows", prefix, len(items))
        done = [i for i in items if error is None or i.id in error.delivered]
        if done:
            async with self.store.transaction() as tx:
                for item in done:
                    await tx.outbox.mark_delivered(item.id, self._clock())
            log.info("outbox %d rows delivered to %s", len(done), prefix)
        failed = [] if error is None else [i for i in items if i.id not in error.delivered]
        self._note_reachability(items[0].sink, error, len(failed), reached=bool(done))
        if error is not None:
            for item in failed:
                await self._failed(item, error)
        return len(done)

    def _note_reachability(self, sink: str, error: DeliveryError | None, waiting: int, *, reached: bool) -> None:
        """One ERROR line when a target becomes unreachable (or its reason changes), one line
        when it is reached again; the retries in between are logged at DEBUG only."""
        if error is not None and error.unreachable:
            if self.unreachable_targets.get(sink) != str(error):
                self.unreachable_targets[sink] = str(error)
                log.error(
                    "outbox: %s: %s; %d rows wait (pending, not given up), tried again every %.0fs",
                    sink, error, waiting, self.unreachable_retry,
                )  # fmt: skip
            else:
                log.debug("outbox: %s still unreachable; %d rows wait", sink, waiting)
        elif sink in self.unreachable_targets and (reached or (error is not None and not error.deferred)):
            del self.unreachable_targets[sink]
            if reached:
                log.warning("outbox: %s is reachable again; the rows that waited are being delivered", sink)
            else:
                log.warning("outbox: %s no longer reported unreachable (%s)", sink, error)

    async def _failed(self, item: OutboxItem, error: DeliveryError) -> None:
        reason, retry_after = str(error), error.retry_after
        if error.unreachable:
            # Nobody can deliver until the target is fixed: wait, flagged, without using up
            # attempts, so the row is still there (and goes out) whenever that happens.
            async with self.store.transaction() as tx:
                await tx.outbox.mark_failed(
                    item.id, item.attempts, self._clock() + self.unreachable_retry, reason, False, unreachable=True
                )
            return
        if error.deferred:
            # Waiting for the provider's rate budget is not a failure: no attempt is used up.
            delay = retry_after if retry_after is not None else self.base_delay
            async with self.store.transaction() as tx:
                await tx.outbox.mark_failed(item.id, item.attempts, self._clock() + delay, reason, False)
            log.info("outbox %s deferred (%s); next try in %.1fs", item.id[:8], reason, delay)
            return
        attempts = item.attempts + 1
        # An officer alert is never given up for a provider that keeps failing (an outage of 25
        # minutes used to kill every alert, urgent ones too): it is retried, backoff capped, for
        # as long as it takes. Only a permanent refusal (nothing could ever deliver it) ends it.
        gives_up = not (isinstance(item.payload, dict) and item.payload.get("kind") == "alert")
        dead = error.permanent or (gives_up and attempts >= self.max_attempts)
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

    async def target_reachable(self, sink: str) -> int:
        """The target ``sink`` was heard from (the bot is back in the officer group): its rows
        that wait as unreachable are tried now instead of at their slow retry. How many."""
        if sink not in await self.store.outbox.unreachable():
            return 0
        async with self.store.transaction() as tx:
            released = await tx.outbox.release_unreachable(sink, self._clock())
        if released:
            log.info("outbox: %s was heard from; %d waiting rows tried now", sink, released)
            self.wake()
        return released

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
