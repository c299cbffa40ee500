"""The outbox worker with sinks that take a target's due rows together (``deliver_batch``): grouping
and order, partial deliveries never sent twice, deferral that uses no attempt, a crashing sink."""

from __future__ import annotations

import uuid

from bot.outbox import DeliveryError, OutboxWorker
from storage.records import OutboxItem, OutboxStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock


class BatchSink:
    """Records each call; ``errors`` are raised by the next calls, in order."""

    def __init__(self, log: list[tuple[str, str, list[str]]], *errors: Exception) -> None:
        self.log = log
        self.errors = list(errors)

    async def deliver(self, item: OutboxItem, target: str) -> None:
        raise AssertionError("a batch sink gets its rows through deliver_batch")

    async def deliver_batch(self, items: list[OutboxItem], target: str) -> None:
        self.log.append(("batch", target, [i.id for i in items]))
        if self.errors:
            raise self.errors.pop(0)


class SingleSink:
    def __init__(self, log: list[tuple[str, str, list[str]]]) -> None:
        self.log = log

    async def deliver(self, item: OutboxItem, target: str) -> None:
        self.log.append(("single", target, [item.id]))


async def _queue(store: SqliteStore, now: float, sink: str, priority: int = 0) -> str:
    item_id = uuid.uuid4().hex
    async with store.transaction() as tx:
        await tx.outbox.add(OutboxItem(item_id, sink, {"kind": "alert"}, OutboxStatus.PENDING, 0, now, now, priority))
    return item_id


async def _status(store: SqliteStore, item_id: str) -> tuple[OutboxStatus, int]:
    item = await store.outbox.get(item_id)
    return item.status, item.attempts


def _worker(store: SqliteStore, clock: Clock, **sinks: object) -> OutboxWorker:
    return OutboxWorker(store, dict(sinks), clock=clock, jitter=lambda: 0.5, max_attempts=3)  # type: ignore[arg-type]


async def test_a_targets_rows_go_together_urgent_first_at_the_turn_of_its_most_urgent_row(store: SqliteStore, clock: Clock) -> None:
    log: list[tuple[str, str, list[str]]] = []
    worker = _worker(store, clock, group=BatchSink(log), sms=SingleSink(log))
    minor_a = await _queue(store, clock.now, "group:a", priority=1)
    plain_sms = await _queue(store, clock.now, "sms:x", priority=1)
    urgent_a = await _queue(store, clock.now, "group:a", priority=2)
    plain_b = await _queue(store, clock.now, "group:b", priority=0)
    plain_a = await _queue(store, clock.now, "group:a", priority=0)

    assert await worker.run_once() == 5

    # Each sink has its own lane: within the group's, one call for target a, in priority order,
    # at the turn of its most urgent row; the SMS went out in a lane of its own.
    assert [entry for entry in log if entry[0] == "batch"] == [("batch", "a", [urgent_a, minor_a, plain_a]), ("batch", "b", [plain_b])]
    assert [entry for entry in log if entry[0] == "single"] == [("single", "x", [plain_sms])]
    for item_id in (minor_a, plain_sms, urgent_a, plain_b, plain_a):
        assert await _status(store, item_id) == (OutboxStatus.DELIVERED, 0)
    assert await worker.run_once() == 0 and len(log) == 3  # nothing is sent twice


async def test_rows_that_went_out_before_a_failure_are_not_sent_again(store: SqliteStore, clock: Clock) -> None:
    log: list[tuple[str, str, list[str]]] = []
    first, second, third = [await _queue(store, clock.now, "group:a") for _ in range(3)]
    sink = BatchSink(log, DeliveryError("telegram NetworkError: Bad Gateway", delivered=[first]))
    worker = _worker(store, clock, group=sink)

    assert await worker.run_once() == 1
    assert await _status(store, first) == (OutboxStatus.DELIVERED, 0)
    assert await _status(store, second) == await _status(store, third) == (OutboxStatus.PENDING, 1)
    assert (await store.outbox.get(second)).next_at == clock.now + 2.0  # the ordinary backoff

    clock.advance(2.0)
    assert await worker.run_once() == 2
    assert log[-1] == ("batch", "a", [second, third])  # the first one is not in the retry


async def test_a_deferred_batch_waits_as_told_and_uses_no_attempt(store: SqliteStore, clock: Clock) -> None:
    log: list[tuple[str, str, list[str]]] = []
    item_id = await _queue(store, clock.now, "group:a")
    # More deferrals than max_attempts (3): waiting for a rate budget never kills a row.
    sink = BatchSink(log, *[DeliveryError("telegram group flood budget spent", retry_after=7.5, deferred=True) for _ in range(5)])
    worker = _worker(store, clock, group=sink)

    for _ in range(5):
        assert await worker.run_once() == 0
        item = await store.outbox.get(item_id)
        assert (item.status, item.attempts, item.next_at) == (OutboxStatus.PENDING, 0, clock.now + 7.5)
        assert await worker.run_once() == 0  # not due before the time it was told
        clock.advance(7.5)
    assert await worker.run_once() == 1
    assert await _status(store, item_id) == (OutboxStatus.DELIVERED, 0)
    assert len(log) == 6


async def test_a_permanent_batch_failure_kills_only_the_rows_not_delivered(store: SqliteStore, clock: Clock) -> None:
    log: list[tuple[str, str, list[str]]] = []
    sent, refused = [await _queue(store, clock.now, "group:a") for _ in range(2)]
    worker = _worker(store, clock, group=BatchSink(log, DeliveryError("telegram BadRequest: chat not found", permanent=True, delivered=[sent])))

    await worker.run_once()

    assert await _status(store, sent) == (OutboxStatus.DELIVERED, 0)
    assert await _status(store, refused) == (OutboxStatus.DEAD, 1)
    assert (await store.outbox.counts())[OutboxStatus.DEAD] == 1


async def test_a_batch_sink_that_crashes_fails_its_rows_and_the_worker_goes_on(store: SqliteStore, clock: Clock) -> None:
    log: list[tuple[str, str, list[str]]] = []
    worker = _worker(store, clock, group=BatchSink(log, KeyError("bug")), sms=SingleSink(log))
    crashed = await _queue(store, clock.now, "group:a", priority=2)
    other = await _queue(store, clock.now, "sms:x")

    assert await worker.run_once() == 1

    assert await _status(store, crashed) == (OutboxStatus.PENDING, 1)
    assert (await store.outbox.get(crashed)).last_error == "KeyError"
    assert await _status(store, other) == (OutboxStatus.DELIVERED, 0)
