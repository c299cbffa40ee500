"""The outbox under faults: a database that refuses writes after a send (no resend storm), a sink
that hangs (the other sinks go on), and a target's order (a case's URGENT before its New tip)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.outbox import DeliveryError, OutboxWorker
from storage.records import OutboxItem, OutboxStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock


class RefusingWrites:
    """The store, except that while ``full`` every transaction fails as SQLite does on a full
    disk (reads still work, as they do on a full disk)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.full = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self, *, lock: tuple[str, ...] = ()) -> AsyncIterator[Any]:
        if self.full:
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        async with self._store.transaction(lock=lock) as tx:
            yield tx


class Recording:
    """Delivers and records; fails while ``down``; ``in_order`` like the officer sinks."""

    in_order = True

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    async def deliver(self, item: OutboxItem, target: str) -> None:
        if self.down:
            raise DeliveryError("provider down")
        self.sent.append(item.id)


class Hung:
    """A provider that never answers."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def deliver(self, item: OutboxItem, target: str) -> None:
        self.called.set()
        await asyncio.Event().wait()


async def _queue(store: Any, now: float, sink: str, event: str = "new", priority: int = 2) -> str:
    item_id = uuid.uuid4().hex
    async with store.transaction() as tx:
        payload = {"kind": "alert", "event": event}
        await tx.outbox.add(OutboxItem(item_id, sink, payload, OutboxStatus.PENDING, 0, now, now, priority))
    return item_id


async def test_a_send_the_database_cannot_record_is_never_sent_again(store: SqliteStore, clock: Clock) -> None:
    refusing, sms = RefusingWrites(store), Recording()
    worker = OutboxWorker(refusing, {"sms": sms}, clock=clock, jitter=lambda: 0.5)  # type: ignore[arg-type]
    urgent = await _queue(store, clock.now, "sms:oncall", "urgent")
    refusing.full = True  # the disk fills after the alert was queued
    for _ in range(50):
        await worker.run_once()
        clock.advance(1)
    assert sms.sent == [urgent]  # it went out, once, though nothing could be written since
    assert (await store.outbox.get(urgent)).status is OutboxStatus.PENDING
    assert 4 <= refusing.refused <= 10  # the write was tried again, with backoff (1, 2, 4… s), not at every pass
    refusing.full = False  # space is back: the delivery is recorded before anything else
    clock.advance(60)
    await worker.run_once()
    assert (await store.outbox.get(urgent)).status is OutboxStatus.DELIVERED
    assert sms.sent == [urgent] and not worker.journal.waiting


async def test_a_failed_try_the_database_cannot_record_still_waits_its_backoff(store: SqliteStore, clock: Clock) -> None:
    refusing, sms = RefusingWrites(store), Recording()
    worker = OutboxWorker(refusing, {"sms": sms}, clock=clock, jitter=lambda: 0.5)  # type: ignore[arg-type]
    attempts = 0

    async def counting(item: OutboxItem, target: str) -> None:
        nonlocal attempts
        attempts += 1
        raise DeliveryError("provider down")

    sms.deliver = counting  # type: ignore[method-assign]
    row = await _queue(store, clock.now, "sms:oncall")
    refusing.full = True
    for _ in range(25):
        await worker.run_once()
        clock.advance(0.1)  # 2.5 s in all: the first retry is due after 2 s, the second after 4 more
    assert attempts == 2  # not one try per pass: the backoff held in memory
    refusing.full = False
    clock.advance(10)
    sms.deliver = Recording.deliver.__get__(sms)  # type: ignore[method-assign]
    await worker.run_once()
    assert sms.sent == [row] and (await store.outbox.get(row)).status is OutboxStatus.DELIVERED


async def test_while_the_disk_is_full_the_loop_sends_once_and_says_so_once(store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    refusing, sms = RefusingWrites(store), Recording()
    worker = OutboxWorker(refusing, {"sms": sms, "telegram": Recording()})  # type: ignore[arg-type]
    urgent = await _queue(store, time.time(), "sms:oncall", "urgent")
    refusing.full = True
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(worker.run(idle=0.2))
        await asyncio.sleep(2.0)
        worker.stop()
        await asyncio.wait_for(task, 5)
    assert sms.sent == [urgent]
    refused = [r for r in caplog.records if "refuses to record" in r.getMessage()]
    assert len(refused) == 1, caplog.text  # one line a minute, not one per pass
    assert len(caplog.records) <= 5, caplog.text


async def test_a_hung_provider_holds_up_its_own_rows_only(store: SqliteStore) -> None:
    hung, telegram = Hung(), Recording()
    worker = OutboxWorker(store, {"sms": hung, "telegram": telegram})  # type: ignore[arg-type]
    await _queue(store, time.time(), "sms:oncall", "urgent")
    task = asyncio.create_task(worker.run(idle=0.2))
    try:
        await asyncio.wait_for(hung.called.wait(), 2)
        started = time.monotonic()
        alert = await _queue(store, time.time(), "telegram:-100", "urgent")
        worker.wake()
        while not telegram.sent and time.monotonic() - started < 3:
            await asyncio.sleep(0.01)
        assert telegram.sent == [alert] and time.monotonic() - started < 1.0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_cases_urgent_alert_never_arrives_after_its_new_tip(store: SqliteStore, clock: Clock) -> None:
    sms = Recording()
    worker = OutboxWorker(store, {"sms": sms}, clock=clock, jitter=lambda: 0.5)
    sms.down = True
    urgent = await _queue(store, clock.now, "sms:oncall", "urgent")
    await worker.run_once()  # the provider is down: the URGENT alert waits its backoff
    sms.down = False
    filed = await _queue(store, clock.now, "sms:oncall", "new")  # the report is filed meanwhile
    other = await _queue(store, clock.now, "sms:second-phone", "new")  # another phone is not held up
    await worker.run_once()
    assert sms.sent == [other]
    clock.advance(2.0)
    await worker.run_once()
    assert sms.sent == [other, urgent, filed]


async def test_after_an_outage_a_targets_urgent_rows_go_first(store: SqliteStore, clock: Clock) -> None:
    sms = Recording()
    worker = OutboxWorker(store, {"sms": sms}, clock=clock, jitter=lambda: 0.5)
    sms.down = True
    plain = [await _queue(store, clock.now, "sms:oncall", "new", priority=0) for _ in range(3)]
    for _ in range(3):
        await worker.run_once()
        clock.advance(60)
    urgent = await _queue(store, clock.now, "sms:oncall", "urgent", priority=2)
    sms.down = False
    clock.advance(900)
    while await worker.run_once():
        pass
    assert sms.sent == [urgent, *plain]
