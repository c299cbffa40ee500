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

Each sink has its own *lane*: a loop that delivers only that sink's rows, so a provider that
hangs or fails holds up its own rows and no other (a hung Twilio once delayed Telegram alerts by
minutes). Officer sinks (``in_order``) also keep each target's order: a row waits while an
earlier row for the same target waits, so a case's URGENT alert never arrives after its "New
tip", and after an outage a target's rows go together, urgent first (storage.outbox.Lane).

Several instances may share one outbox (PostgreSQL): a pass *claims* its rows first, leasing them
for ``LEASE_SECONDS`` (skipping rows another instance is claiming), and keeps the lease fresh
while a slow provider answers. An instance killed mid-delivery leaves its rows leased; they are due
again when the lease runs out, so the only way a row goes out twice is a kill between the
provider's "sent" and the commit that records it. On SQLite one process owns the data directory
(storage.data_dir.OneProcess), so a pass only reads its rows: no write is needed to send, and
alerts still go out when the disk is full.

Outcomes are recorded after the sink answered; when the database refuses that write, the outcome
waits in memory (bot.outbox_journal) and the row is not sent again: a full disk never turns one
alert into hundreds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import suppress
from collections.abc import Callable, Iterable
from typing import Protocol

from bot.outbox_journal import Journal, Outcome
from storage.interfaces import Store
from storage.outbox import Lane
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
    """Delivers one row to ``target`` (the part of its sink after the prefix). A sink may set
    ``in_order = True``: its lane then keeps each target's rows in order (officer alerts)."""

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
        self.journal = Journal(store, clock)
        self._lanes: dict[Lane, _LaneState] = {}
        self._stopping = False

    def lanes(self) -> list[Lane]:
        """One lane per sink prefix (in order for sinks that ask for it), and one for rows whose
        sink has no configured prefix (they fail there: "no sink is configured")."""
        prefixes = tuple(sorted(self.sinks))
        lanes = [Lane((p,), in_order=bool(getattr(self.sinks[p], "in_order", False))) for p in prefixes]
        return [*lanes, Lane(prefixes, others=True)]

    def _state(self, lane: Lane) -> _LaneState:
        if lane not in self._lanes:
            self._lanes[lane] = _LaneState()
        return self._lanes[lane]

    def wake(self) -> None:
        self.journal.retry_soon()  # woken after a commit: outcomes kept in memory can go now
        for state in self._lanes.values():
            state.wake.set()

    def backoff(self, attempts: int) -> float:
        """2 s, 4 s, 8 s… capped, each stretched by a random 0.5–1.5 so retries do not stampede."""
        return min(self.max_delay, self.base_delay * 2 ** (attempts - 1)) * (0.5 + self._jitter())

    async def run_once(self) -> int:
        """Deliver every row that is due now, every lane at once; returns how many were delivered.
        A lane's passes never overlap (its loop and a caller's drain), so no row is sent twice."""
        return sum(await asyncio.gather(*(self.run_lane(lane) for lane in self.lanes())))

    async def run_lane(self, lane: Lane) -> int:
        """One pass of one lane; how many rows were delivered."""
        async with self._state(lane).lock:
            await self.journal.flush()  # outcomes the database refused first: before any new send
            held = self.journal.held()
            now = self._clock()
            if self.store.shared:
                async with self.store.transaction() as tx:
                    due = await tx.outbox.claim(now, self.lease, self._batch + len(held), lane)
            else:  # one process owns this database: reading is enough, nothing else takes them
                due = await self.store.outbox.due(now, self._batch + len(held), lane)
            if lane.in_order:
                waiting = {self.journal.waiting[i].sink for i in held}
                due = [i for i in due if i.sink not in waiting]  # a target's order holds here too
            due = [i for i in due if i.id not in held][: self._batch]
            if not due:
                return 0
            if not self.store.shared:
                return await self._deliver_claimed(due)
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
        if refused:
            await self.journal.record({i.id: self._failed(i, DeliveryError(self._refusal(i) or "", permanent=True)) for i in refused})
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
        failed = [] if error is None else [i for i in items if i.id not in error.delivered]
        # One write for the whole batch; when the database refuses it, the journal keeps it (the
        # rows that went out are never handed to a sink again).
        at = self._clock()
        outcomes = {i.id: Outcome(delivered_at=at, sink=i.sink) for i in done}
        if error is not None:
            outcomes.update({i.id: self._failed(i, error) for i in failed})
        await self.journal.record(outcomes)
        if done:
            log.info("outbox %d rows delivered to %s", len(done), prefix)
        self._note_reachability(items[0].sink, error, len(failed), reached=bool(done))
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

    def _failed(self, item: OutboxItem, error: DeliveryError) -> Outcome:
        """The outcome of a failed try: when to try again, and whether the row is given up."""
        reason, retry_after = str(error), error.retry_after
        if error.unreachable:
            # Nobody can deliver until the target is fixed: wait, flagged, without using up
            # attempts, so the row is still there (and goes out) whenever that happens.
            return Outcome(attempts=item.attempts, next_at=self._clock() + self.unreachable_retry, error=reason, unreachable=True, sink=item.sink)
        if error.deferred:
            # Waiting for the provider's rate budget is not a failure: no attempt is used up.
            delay = retry_after if retry_after is not None else self.base_delay
            log.info("outbox %s deferred (%s); next try in %.1fs", item.id[:8], reason, delay)
            return Outcome(attempts=item.attempts, next_at=self._clock() + delay, error=reason, sink=item.sink)
        attempts = item.attempts + 1
        # An officer alert is never given up for a provider that keeps failing (an outage of 25
        # minutes used to kill every alert, urgent ones too): it is retried, backoff capped, for
        # as long as it takes. Only a permanent refusal (nothing could ever deliver it) ends it.
        gives_up = not (isinstance(item.payload, dict) and item.payload.get("kind") == "alert")
        dead = error.permanent or (gives_up and attempts >= self.max_attempts)
        delay = retry_after if retry_after is not None else self.backoff(attempts)
        if dead:
            log.error("outbox %s to %s is dead after %d attempts: %s", item.id[:8], item.sink.partition(":")[0], attempts, reason)
        else:
            log.warning("outbox %s attempt %d failed (%s); retry in %.0fs", item.id[:8], attempts, reason, delay)
        return Outcome(attempts=attempts, next_at=self._clock() + delay, error=reason, dead=dead, sink=item.sink)

    async def run(self, idle: float = 30.0) -> None:
        """Deliver until stopped: one loop per lane, each asleep until woken, its next row is due,
        or ``idle`` passes."""
        lanes = self.lanes()
        for lane in lanes:
            self._state(lane)
        await asyncio.gather(*(self._run_lane_loop(lane, idle) for lane in lanes))

    async def _run_lane_loop(self, lane: Lane, idle: float) -> None:
        state = self._state(lane)
        failures = 0
        while not self._stopping:
            state.wake.clear()
            try:
                delivered = await self.run_lane(lane)
                # Something went out: there may be more right behind it (a full batch).
                wait = 0.0 if delivered else await self._until_due(lane, idle)
                failures = 0
            except Exception:  # noqa: BLE001 - e.g. the database briefly busy or full; try again later
                failures += 1
                wait = min(idle, 0.5 * 2 ** min(failures, 6))
                if failures == 1 or failures % 20 == 0:  # not a line per pass while it lasts
                    log.exception("outbox pass failed (%s lane; %d in a row); next in %.0fs", lane.prefixes[0] if not lane.others else "other", failures, wait)
            try:
                await asyncio.wait_for(state.wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _until_due(self, lane: Lane, idle: float) -> float:
        """Seconds until this lane has work: its next due row, or the journal's next write when
        what is due now is held in memory (so the loop does not spin on rows it will skip)."""
        now = self._clock()
        next_due = await self.store.outbox.next_due_at(lane)
        retry = self.journal.retry_at
        if next_due is not None and next_due <= now and retry is not None:
            next_due = max(retry, now + 0.5)  # only held rows (or a refused write) are due now
        wait = idle if next_due is None else next_due - now
        if retry is not None:
            wait = min(wait, max(0.0, retry - now))
        return max(0.05, min(idle, wait))

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
        self.wake()

    async def drain(self, timeout: float = 10.0) -> None:
        """Deliver what is due now, retrying briefly (the console's end of input)."""
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            await self.run_once()
            next_due = await self.store.outbox.next_due_at()
            if next_due is None or next_due > deadline:
                return
            await asyncio.sleep(max(0.01, min(0.5, next_due - self._clock())))


class _LaneState:
    """A lane's pass lock (its loop and a drain never overlap) and its wake-up."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
