"""The outbox worker: retries with backoff, exactly one delivery, survives restarts, dead letters,
and rows that wait (never dead) for a target nobody can reach until it is fixed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bot.outbox import UNREACHABLE_RETRY_SECONDS, DeliveryError, OutboxWorker
from storage.crypto import Cipher
from storage.records import OutboxItem, OutboxStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock


class FlakySink:
    """Fails ``failures`` times, then records each delivered row id."""

    def __init__(self, failures: int = 0, **error: object) -> None:
        self.failures = failures
        self.error = error
        self.attempts = 0
        self.delivered: list[str] = []

    async def deliver(self, item: OutboxItem, target: str) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise DeliveryError("provider down", **self.error)
        self.delivered.append(item.id)


async def _queue(store: SqliteStore, now: float, sink: str = "flaky:x", priority: int = 0) -> str:
    item_id = uuid.uuid4().hex
    async with store.transaction() as tx:
        await tx.outbox.add(OutboxItem(item_id, sink, {"n": 1}, OutboxStatus.PENDING, 0, now, now, priority))
    return item_id


def _worker(store: SqliteStore, sink: FlakySink, clock: Clock, **options: object) -> OutboxWorker:
    return OutboxWorker(store, {"flaky": sink}, clock=clock, jitter=lambda: 0.5, **options)


async def test_three_failures_then_success_delivers_exactly_once(store: SqliteStore, clock: Clock) -> None:
    sink = FlakySink(failures=3)
    worker = _worker(store, sink, clock)
    item_id = await _queue(store, clock.now)
    delays = []
    for _ in range(10):
        await worker.run_once()
        item = await store.outbox.get(item_id)
        if item.status is OutboxStatus.DELIVERED:
            break
        delays.append(item.next_at - clock.now)
        clock.advance(item.next_at - clock.now)
    assert delays == [2.0, 4.0, 8.0]  # exponential backoff (jitter fixed at 1.0x)
    assert sink.delivered == [item_id] and sink.attempts == 4
    await worker.run_once()
    assert sink.delivered == [item_id]


async def test_retry_after_from_the_provider_is_respected(store: SqliteStore, clock: Clock) -> None:
    worker = _worker(store, FlakySink(failures=1, retry_after=37.0), clock)
    item_id = await _queue(store, clock.now)
    await worker.run_once()
    assert (await store.outbox.get(item_id)).next_at == clock.now + 37.0


async def test_a_restart_in_the_middle_of_retries_still_delivers_once(tmp_path: Path, cipher: Cipher, clock: Clock) -> None:
    first = await SqliteStore.open(tmp_path / "data", cipher)
    item_id = await _queue(first, clock.now)
    await _worker(first, FlakySink(failures=5), clock).run_once()
    await first.close()  # "crash" with the row pending and one attempt made

    second = await SqliteStore.open(tmp_path / "data", cipher)
    sink = FlakySink()
    clock.advance(3600)
    await _worker(second, sink, clock).run_once()
    await _worker(second, sink, clock).run_once()
    item = await second.outbox.get(item_id)
    assert sink.delivered == [item_id] and item.status is OutboxStatus.DELIVERED and item.attempts == 1
    await second.close()


async def test_dead_letter_after_max_attempts_and_permanent_errors(store: SqliteStore, clock: Clock) -> None:
    worker = _worker(store, FlakySink(failures=100), clock, max_attempts=3)
    item_id = await _queue(store, clock.now)
    for _ in range(5):
        await worker.run_once()
        clock.advance(10_000)
    item = await store.outbox.get(item_id)
    assert item.status is OutboxStatus.DEAD and item.attempts == 3 and item.last_error == "provider down"
    permanent = _worker(store, FlakySink(failures=1, permanent=True), clock)
    other = await _queue(store, clock.now)
    await permanent.run_once()
    assert (await store.outbox.get(other)).status is OutboxStatus.DEAD
    assert (await store.outbox.counts())[OutboxStatus.DEAD] == 2


async def test_urgent_rows_go_first_and_unknown_sinks_wait(store: SqliteStore, clock: Clock) -> None:
    sink = FlakySink()
    worker = _worker(store, sink, clock)
    ordinary = await _queue(store, clock.now)
    urgent = await _queue(store, clock.now, priority=2)
    orphan = await _queue(store, clock.now, sink="nowhere:1")
    await worker.run_once()
    assert sink.delivered == [urgent, ordinary]
    orphaned = await store.outbox.get(orphan)
    assert orphaned.status is OutboxStatus.PENDING and orphaned.attempts == 1


async def test_a_sink_that_crashes_does_not_stop_the_worker(store: SqliteStore, clock: Clock) -> None:
    class Broken:
        async def deliver(self, item: OutboxItem, target: str) -> None:
            raise ZeroDivisionError

    worker = OutboxWorker(store, {"broken": Broken(), "flaky": (sink := FlakySink())}, clock=clock)
    bad = await _queue(store, clock.now, sink="broken:1")
    good = await _queue(store, clock.now)
    await worker.run_once()
    assert sink.delivered == [good] and (await store.outbox.get(bad)).last_error == "ZeroDivisionError"


async def test_a_row_whose_sink_was_edited_in_the_database_is_set_aside_not_sent(store: SqliteStore, clock: Clock) -> None:
    """Write access to the database file alone: point an alert row at another target."""
    import sqlite3

    sink = FlakySink()
    worker = _worker(store, sink, clock)
    redirected = await _queue(store, clock.now, sink="flaky:officers")
    kept = await _queue(store, clock.now, sink="flaky:officers")
    with sqlite3.connect(store.path) as raw:
        raw.execute("UPDATE outbox SET sink = 'flaky:attacker' WHERE id = ?", (redirected,))
    assert await store.outbox.altered_count() == 1
    await worker.run_once()
    assert sink.delivered == [kept]  # the others still go, the edited one never does
    item = await store.outbox.get(redirected)
    assert item.payload is None and item.status is OutboxStatus.DEAD and item.last_error.startswith("altered in the database")
    # Copying a sealed payload from a row of the real target does not help either.
    with sqlite3.connect(store.path) as raw:
        raw.execute("UPDATE outbox SET payload = (SELECT payload FROM outbox WHERE id = ?) WHERE id = ?", (kept, redirected))
    assert (await store.outbox.get(redirected)).payload is None


async def test_rows_go_only_to_the_targets_the_deployment_sends_to(store: SqliteStore, clock: Clock) -> None:
    sink = FlakySink()
    worker = _worker(store, sink, clock, allowed=lambda s: s == "flaky:officers")
    configured = await _queue(store, clock.now, sink="flaky:officers")
    elsewhere = await _queue(store, clock.now, sink="flaky:-100999")
    await worker.run_once()
    assert sink.delivered == [configured]
    item = await store.outbox.get(elsewhere)
    assert item.status is OutboxStatus.DEAD and item.last_error == "flaky target is not configured (TIPLINE_OFFICERS__*); not sent"


class UnreachableSink:
    """A target nobody can reach until ``fixed``: answers ``unreachable`` until then."""

    def __init__(self) -> None:
        self.fixed = False
        self.attempts = 0
        self.delivered: list[str] = []

    async def deliver(self, item: OutboxItem, target: str) -> None:
        self.attempts += 1
        if not self.fixed:
            raise DeliveryError("group unreachable: add the bot back", unreachable=True)
        self.delivered.append(item.id)


async def test_an_unreachable_target_keeps_its_row_pending_without_using_attempts(
    store: SqliteStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sink = UnreachableSink()
    worker = OutboxWorker(store, {"group": sink}, clock=clock, max_attempts=3)
    item_id = await _queue(store, clock.now, sink="group:-100", priority=2)
    for _ in range(10):  # far more tries than max_attempts
        await worker.run_once()
        item = await store.outbox.get(item_id)
        assert item.next_at == clock.now + UNREACHABLE_RETRY_SECONDS  # the slow schedule, no backoff
        clock.advance(UNREACHABLE_RETRY_SECONDS)
    assert sink.attempts == 10
    assert (item.status, item.attempts, item.last_error) == (OutboxStatus.PENDING, 0, "group unreachable: add the bot back")
    assert await store.outbox.unreachable() == {"group:-100": 1}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "group:-100" in errors[0].getMessage()  # once per state change, not per try

    sink.fixed = True
    await worker.run_once()
    await worker.run_once()
    delivered = await store.outbox.get(item_id)
    assert sink.delivered == [item_id] and delivered.status is OutboxStatus.DELIVERED
    assert await store.outbox.unreachable() == {}
    assert [r.levelname for r in caplog.records if "reachable again" in r.getMessage()] == ["WARNING"]


async def test_a_target_heard_from_gets_its_waiting_rows_at_once(store: SqliteStore, clock: Clock) -> None:
    sink = UnreachableSink()
    worker = OutboxWorker(store, {"group": sink}, clock=clock)
    waiting = await _queue(store, clock.now, sink="group:-100")
    other = await _queue(store, clock.now, sink="group:-200")
    await worker.run_once()
    assert await worker.target_reachable("group:-999") == 0  # nothing waits for it
    sink.fixed = True
    assert await worker.target_reachable("group:-100") == 1
    await worker.run_once()  # no time has passed: only the released row is due
    assert sink.delivered == [waiting]
    assert (await store.outbox.get(other)).status is OutboxStatus.PENDING


async def test_an_officer_alert_is_never_given_up_during_a_long_outage(store: SqliteStore, clock: Clock) -> None:
    """Issue 16, fault 6: after max_attempts an alert went dead; a 25-minute outage lost them all."""
    sink = FlakySink(failures=40)
    worker = _worker(store, sink, clock, max_attempts=3, max_delay=300.0)
    alert = uuid.uuid4().hex
    async with store.transaction() as tx:
        await tx.outbox.add(OutboxItem(alert, "flaky:x", {"kind": "alert", "event": "urgent"}, OutboxStatus.PENDING, 0, clock.now, clock.now, 2))
    other = await _queue(store, clock.now)  # anything else still dead-letters
    delays = []
    for _ in range(41):
        await worker.run_once()
        item = await store.outbox.get(alert)
        if item.status is OutboxStatus.PENDING:
            delays.append(item.next_at - clock.now)
        clock.advance(301)
    item = await store.outbox.get(alert)
    assert item.status is OutboxStatus.DELIVERED and sink.delivered[-1] == alert
    assert max(delays) <= 300.0  # the backoff is capped: it is tried again at least every 5 minutes
    assert (await store.outbox.get(other)).status is OutboxStatus.DEAD


def test_a_telegram_429_waits_without_counting_an_attempt() -> None:
    from telegram.error import RetryAfter

    from bot.channels.telegram.alerts import delivery_error

    error = delivery_error(RetryAfter(12), officer_group=True)
    assert error.deferred and error.retry_after is not None and error.retry_after >= 12 and not error.permanent
