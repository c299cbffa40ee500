"""One contract suite over the repository interfaces of storage.interfaces, run against every
backend: SQLite and a real PostgreSQL server (started by the tests). Nothing here is
specific to one engine. Writes go through ``store.transaction()``, reads through ``store.<repository>``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest

from storage.crypto import Cipher, unkeyed_chain_hash
from storage.interfaces import Store
from storage.outbox import Lane
from storage.records import Draft, Followup, OutboxEntry, OutboxItem, OutboxStatus, Tip, TipStatus
from storage.postgres import PostgresStore
from storage.sqlite import SqliteStore

T0 = 1_800_000_000.0


@dataclass(frozen=True)
class Backend:
    open: Callable[[pytest.FixtureRequest, Path, Cipher], Awaitable[Store]]
    integrity_error: type[Exception]  # what a duplicate key raises


async def _sqlite(request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> Store:
    return await SqliteStore.open(tmp_path / "data", cipher)


async def _postgres(request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> Store:
    # A real server (tests/postgres_server.py), a new database for each test.
    return await PostgresStore.open(request.getfixturevalue("postgres_url"), cipher)


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(_sqlite, sqlite3.IntegrityError),
    "postgres": Backend(_postgres, asyncpg.UniqueViolationError),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
async def store(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> AsyncIterator[Store]:
    opened = await backend.open(request, tmp_path, cipher)
    yield opened
    await opened.close()


def make_tip(tip_id: str, case: str, **changes: object) -> Tip:
    tip = Tip(
        id=tip_id, case_number=case, status=TipStatus.OPEN, sender=f"sender-{tip_id}", channel="sms",
        language="en", created_at=T0, updated_at=T0, answers={"what": f"answers of {tip_id}"},
    )  # fmt: skip
    return replace(tip, **changes)


def make_item(item_id: str, **changes: object) -> OutboxItem:
    item = OutboxItem(item_id, "console", {"text": item_id}, OutboxStatus.PENDING, 0, T0, T0)
    return replace(item, **changes)


# --- transactions --------------------------------------------------------------------------------


async def test_transaction_that_raises_rolls_back_everything(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await tx.drafts.save(Draft("s1", {"step": 1}, T0, T0 + 60))
            await tx.tips.save(make_tip("t1", await tx.tips.next_case_number(2026)))
            await tx.outbox.add(make_item("o1"))
            await tx.processed.add("sms:SM1", [], T0)
            await tx.audit.append("officer", "t1", "view", T0)
            await tx.message_refs.add("s1", ["1"], T0)
            await tx.receipt_attempts.record_failure("s1", T0)
            assert await tx.drafts.get("s1") is not None  # the transaction sees its own writes
            raise RuntimeError("boom")
    assert await store.drafts.get("s1") is None
    assert await store.tips.get("t1") is None
    assert await store.outbox.get("o1") is None
    assert await store.processed.replies_for("sms:SM1") is None
    assert await store.audit.entries() == []
    assert await store.message_refs.get("s1") == []
    assert await store.receipt_attempts.failures_since("s1", 0) == 0
    async with store.transaction() as tx:  # the counter increment was rolled back too
        assert await tx.tips.next_case_number(2026) == "26-0001"


async def test_reads_do_not_see_an_open_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("s1", {"step": 1}, T0, T0 + 60))
        await tx.tips.save(make_tip("t1", "26-0001"))
        assert await tx.tips.get("t1") is not None
        assert await store.drafts.get("s1") is None
        assert await store.tips.get("t1") is None
        assert await store.drafts.count() == 0
    assert await store.drafts.get("s1") == Draft("s1", {"step": 1}, T0, T0 + 60)
    assert (await store.tips.get("t1")) == make_tip("t1", "26-0001")


async def test_store_is_healthy(store: Store) -> None:
    assert await store.healthy() is True


# --- drafts --------------------------------------------------------------------------------------


async def test_drafts(store: Store) -> None:
    assert await store.drafts.get("nobody") is None
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("late", {"step": "where"}, T0, T0 + 300))
        await tx.drafts.save(Draft("early", {"step": "what", "n": [1, 2]}, T0, T0 + 100))
        await tx.drafts.save(Draft("never", {}, T0, T0 + 10_000))
        await tx.drafts.save(Draft("edge", {}, T0, T0 + 200))
    assert await store.drafts.get("early") == Draft("early", {"step": "what", "n": [1, 2]}, T0, T0 + 100)
    assert await store.drafts.count() == 4
    assert await store.drafts.expired(T0 + 200) == ["early", "edge"]
    assert await store.drafts.expired(T0 + 1000) == ["early", "edge", "late"]
    assert await store.drafts.expired(T0 + 1000, limit=2) == ["early", "edge"]
    assert await store.drafts.expired(T0) == []

    async with store.transaction() as tx:  # save again updates in place
        await tx.drafts.save(Draft("early", {"step": "done"}, T0 + 50, T0 + 5000))
        await tx.drafts.delete("edge")
        await tx.drafts.delete("nobody")
    assert await store.drafts.get("early") == Draft("early", {"step": "done"}, T0 + 50, T0 + 5000)
    assert await store.drafts.get("edge") is None
    assert await store.drafts.count() == 3
    assert await store.drafts.expired(T0 + 1000) == ["late"]


# --- tips ----------------------------------------------------------------------------------------


async def test_tip_round_trip_with_every_field(store: Store) -> None:
    tip = make_tip(
        "t1", "26-0001", status=TipStatus.CLOSED, urgent=True, minor=True, complete=False, contact_ok=True,
        receipt_hash="r" * 64, contact_address="+15550100", closed_at=T0 + 9, close_reason="referred",
        answers={"what": "ZEBRA", "ages": [14], "nested": {"ok": True}}, language="fr", channel="telegram",
    )  # fmt: skip
    async with store.transaction() as tx:
        await tx.tips.save(tip)
        await tx.tips.save(make_tip("t2", "26-0002"))
    assert await store.tips.get("t1") == tip
    assert (await store.tips.get("t2")).contact_address is None
    assert (await store.tips.get("t2")).close_reason is None
    assert await store.tips.by_case("26-0001") == tip
    assert await store.tips.by_case(" 26-0002 ") == make_tip("t2", "26-0002")
    assert await store.tips.by_receipt_hash("r" * 64) == tip
    assert await store.tips.get("t9") is None
    assert await store.tips.by_case("26-0009") is None
    assert await store.tips.by_receipt_hash("x" * 64) is None


async def test_tip_update_and_delete(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(make_tip("t1", "26-0001", contact_address="chat-42"))
        await tx.followups.add(Followup("f1", "t1", "tipster", "more detail", T0 + 1))
    async with store.transaction() as tx:  # e.g. retention dropping the contact address
        await tx.tips.save(make_tip("t1", "26-0001", status=TipStatus.ACKNOWLEDGED, updated_at=T0 + 5))
    updated = await store.tips.get("t1")
    assert updated.status is TipStatus.ACKNOWLEDGED and updated.updated_at == T0 + 5
    assert updated.contact_address is None
    assert [f.id for f in await store.followups.for_tip("t1")] == ["f1"]  # updating keeps follow-ups
    async with store.transaction() as tx:
        await tx.followups.delete_for_tip("t1")
        await tx.tips.delete("t1")
    assert await store.tips.get("t1") is None
    assert await store.tips.list() == []


async def test_case_number_is_unique_across_tips(store: Store, backend: Backend) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(make_tip("t1", "26-0001"))
    with pytest.raises(backend.integrity_error):
        async with store.transaction() as tx:
            await tx.tips.save(make_tip("t2", "26-0001"))
    assert await store.tips.get("t1") == make_tip("t1", "26-0001")  # never silently replaced
    assert await store.tips.get("t2") is None


async def test_tip_list_orders_urgent_then_minor_then_newest(store: Store) -> None:
    tips = [
        make_tip("plain-old", "26-0001", created_at=T0),
        make_tip("plain-new", "26-0002", created_at=T0 + 10),
        make_tip("minor", "26-0003", created_at=T0 + 1, minor=True),
        make_tip("urgent", "26-0004", created_at=T0 + 2, urgent=True),
        make_tip("urgent-minor", "26-0005", created_at=T0 + 1, urgent=True, minor=True),
        make_tip("urgent-new", "26-0006", created_at=T0 + 20, urgent=True),
        make_tip("closed", "26-0007", created_at=T0 + 30, urgent=True, status=TipStatus.CLOSED),
        make_tip("progress", "26-0008", created_at=T0 + 3, status=TipStatus.IN_PROGRESS),
    ]
    async with store.transaction() as tx:
        for tip in tips:
            await tx.tips.save(tip)
    open_ids = [t.id for t in await store.tips.list((TipStatus.OPEN,))]
    assert open_ids == ["urgent-minor", "urgent-new", "urgent", "minor", "plain-new", "plain-old"]
    every = [t.id for t in await store.tips.list()]
    assert every[:2] == ["urgent-minor", "closed"] and len(every) == 8
    assert [t.id for t in await store.tips.list((TipStatus.CLOSED, TipStatus.IN_PROGRESS))] == ["closed", "progress"]
    assert [t.id for t in await store.tips.list((TipStatus.WITHDRAWN,))] == []
    assert [t.id for t in await store.tips.list(limit=3)] == ["urgent-minor", "closed", "urgent-new"]


async def test_case_numbers_are_sequential_per_year(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.tips.next_case_number(2026) == "26-0001"
        assert await tx.tips.next_case_number(2026) == "26-0002"
        assert await tx.tips.next_case_number(2027) == "27-0001"
    async with store.transaction() as tx:
        assert await tx.tips.next_case_number(2026) == "26-0003"
        assert await tx.tips.next_case_number(2100) == "00-0001"
        assert await tx.tips.next_case_number(2027) == "27-0002"


# --- follow-ups ----------------------------------------------------------------------------------


async def test_followups(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(make_tip("t1", "26-0001"))
        await tx.tips.save(make_tip("t2", "26-0002"))
        await tx.followups.add(Followup("f-b", "t1", "officer", "second", T0 + 2))
        await tx.followups.add(Followup("f-a", "t1", "tipster", "first", T0 + 1))
        await tx.followups.add(Followup("f-c", "t1", "officer", "third", T0 + 3, read_at=T0 + 4))
        await tx.followups.add(Followup("f-x", "t2", "tipster", "other tip", T0))
    assert await store.followups.for_tip("t1") == [
        Followup("f-a", "t1", "tipster", "first", T0 + 1),
        Followup("f-b", "t1", "officer", "second", T0 + 2),
        Followup("f-c", "t1", "officer", "third", T0 + 3, read_at=T0 + 4),
    ]
    async with store.transaction() as tx:
        await tx.followups.mark_read(["f-b", "f-c", "missing"], T0 + 10)
    read = {f.id: f.read_at for f in await store.followups.for_tip("t1")}
    assert read == {"f-a": None, "f-b": T0 + 10, "f-c": T0 + 4}  # an earlier read time is kept
    async with store.transaction() as tx:
        await tx.followups.delete_for_tip("t1")
    assert await store.followups.for_tip("t1") == []
    assert [f.text for f in await store.followups.for_tip("t2")] == ["other tip"]
    assert await store.followups.for_tip("none") == []


# --- processed provider ids ----------------------------------------------------------------------


async def test_processed_ids(store: Store, backend: Backend) -> None:
    replies = [{"to": "sms:abc", "text": "Thank you", "n": 1}]
    assert await store.processed.replies_for("twilio:SM1") is None
    async with store.transaction() as tx:
        await tx.processed.add("twilio:SM1", replies, T0)
        await tx.processed.add("telegram:7", [], T0 + 100)
    assert await store.processed.replies_for("twilio:SM1") == replies
    assert await store.processed.replies_for("telegram:7") == []
    with pytest.raises(backend.integrity_error):
        async with store.transaction() as tx:
            await tx.processed.add("twilio:SM1", [], T0 + 1)
    assert await store.processed.replies_for("twilio:SM1") == replies
    async with store.transaction() as tx:
        assert await tx.processed.purge_before(T0 + 50) == 1
    assert await store.processed.replies_for("twilio:SM1") is None
    assert await store.processed.replies_for("telegram:7") == []


async def test_cached_replies_go_before_the_ids_and_with_their_sender(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.processed.add("sms:SM1", [{"text": "summary"}], T0, sender="s1")
        await tx.processed.add("sms:SM2", [{"text": "receipt"}], T0 + 10, sender="s1")
        await tx.processed.add("sms:SM3", [{"text": "other"}], T0, sender="s2")
        assert await tx.processed.forget_replies("s1") == 2
    # Forgotten replies leave the id: a retry is still refused, answered with nothing.
    assert await store.processed.replies_for("sms:SM1") == [] and await store.processed.replies_for("sms:SM2") == []
    assert await store.processed.replies_for("sms:SM3") == [{"text": "other"}]
    async with store.transaction() as tx:
        assert await tx.processed.purge_replies_before(T0 + 1) == 1
    assert await store.processed.replies_for("sms:SM3") == []
    async with store.transaction() as tx:
        assert await tx.processed.purge_before(T0 + 1) == 2  # SM1 and SM3; SM2's id stays
    assert await store.processed.replies_for("sms:SM2") == [] and await store.processed.replies_for("sms:SM1") is None


# --- outbox --------------------------------------------------------------------------------------


async def test_outbox_due_orders_by_priority_then_insertion(store: Store) -> None:
    assert await store.outbox.next_due_at() is None
    async with store.transaction() as tx:
        # created_at runs backwards so that only insertion order can explain the result
        await tx.outbox.add(make_item("low-1", created_at=T0 + 5))
        await tx.outbox.add(make_item("high-1", priority=10, created_at=T0 + 4))
        await tx.outbox.add(make_item("low-2", created_at=T0 + 3))
        await tx.outbox.add(make_item("high-2", priority=10, created_at=T0 + 2))
        await tx.outbox.add(make_item("later", priority=99, next_at=T0 + 60))
    assert [i.id for i in await store.outbox.due(T0)] == ["high-1", "high-2", "low-1", "low-2"]
    assert [i.id for i in await store.outbox.due(T0, limit=3)] == ["high-1", "high-2", "low-1"]
    assert [i.id for i in await store.outbox.due(T0 + 60)][0] == "later"
    assert await store.outbox.next_due_at() == T0
    assert await store.outbox.get("low-2") == make_item("low-2", created_at=T0 + 3)
    assert await store.outbox.get("missing") is None


async def test_outbox_delivery_failure_and_counts(store: Store) -> None:
    async with store.transaction() as tx:
        for name in ("a", "b", "c", "d"):
            await tx.outbox.add(make_item(name, payload={"text": f"payload {name}", "to": ["x"]}))
    async with store.transaction() as tx:
        await tx.outbox.mark_delivered("a", T0 + 1)
        await tx.outbox.mark_failed("b", 1, T0 + 30, "HTTP 503", dead=False)
        await tx.outbox.mark_failed("c", 5, T0 + 30, "HTTP 400", dead=True)
    a, b, c = [await store.outbox.get(i) for i in "abc"]
    assert (a.status, a.delivered_at, a.last_error) == (OutboxStatus.DELIVERED, T0 + 1, None)
    assert (b.status, b.attempts, b.next_at, b.last_error) == (OutboxStatus.PENDING, 1, T0 + 30, "HTTP 503")
    assert (c.status, c.attempts, c.last_error) == (OutboxStatus.DEAD, 5, "HTTP 400")
    assert b.payload == {"text": "payload b", "to": ["x"]}
    assert [i.id for i in await store.outbox.due(T0 + 29)] == ["d"]
    assert [i.id for i in await store.outbox.due(T0 + 1000)] == ["b", "d"]
    assert await store.outbox.counts() == {OutboxStatus.PENDING: 2, OutboxStatus.DELIVERED: 1, OutboxStatus.DEAD: 1}
    assert await store.outbox.next_due_at() == T0
    async with store.transaction() as tx:
        await tx.outbox.mark_delivered("d", T0 + 100)
    assert await store.outbox.next_due_at() == T0 + 30
    async with store.transaction() as tx:
        assert await tx.outbox.delete_delivered_before(T0 + 50) == 1
    assert await store.outbox.get("a") is None and await store.outbox.get("d") is not None
    assert await store.outbox.counts() == {OutboxStatus.PENDING: 1, OutboxStatus.DELIVERED: 1, OutboxStatus.DEAD: 1}



async def test_outbox_listing_shows_pending_and_dead_rows_without_their_payload(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.outbox.add(make_item("old", sink="telegram:-100", created_at=T0 - 60))
        await tx.outbox.add(make_item("urgent", sink="telegram:-100", priority=2))
        await tx.outbox.add(make_item("sent", sink="sms:p1"))
        await tx.outbox.add(make_item("gone", sink="tipster:sms", priority=1))
    async with store.transaction() as tx:
        await tx.outbox.mark_delivered("sent", T0 + 1)
        await tx.outbox.mark_failed("gone", 3, T0 + 9, "HTTP 400", dead=True)
        await tx.outbox.mark_failed("old", 0, T0 + 300, "group unreachable", dead=False, unreachable=True)
    listed = await store.outbox.listing((OutboxStatus.PENDING, OutboxStatus.DEAD))
    assert listed == [
        OutboxEntry("urgent", "telegram:-100", OutboxStatus.PENDING, 2, 0, T0, T0),
        OutboxEntry("gone", "tipster:sms", OutboxStatus.DEAD, 1, 3, T0 + 9, T0, "HTTP 400"),
        OutboxEntry("old", "telegram:-100", OutboxStatus.PENDING, 0, 0, T0 + 300, T0 - 60, "group unreachable", unreachable=True),
    ]
    assert not hasattr(listed[0], "payload")
    assert [e.id for e in await store.outbox.listing((OutboxStatus.DEAD,))] == ["gone"]
    assert [e.id for e in await store.outbox.listing((OutboxStatus.DELIVERED,))] == ["sent"]
    assert [e.id for e in await store.outbox.listing((OutboxStatus.PENDING, OutboxStatus.DEAD), limit=2)] == ["urgent", "gone"]
    assert await store.outbox.listing(()) == []


async def test_outbox_unreachable_rows_stay_pending_and_are_counted_per_sink(store: Store) -> None:
    async with store.transaction() as tx:
        for name, sink in (("a", "telegram:-100"), ("b", "telegram:-100"), ("c", "telegram:-200"), ("d", "telegram:-200")):
            await tx.outbox.add(make_item(name, sink=sink))
    async with store.transaction() as tx:
        for name in "abc":
            await tx.outbox.mark_failed(name, 2, T0 + 300, "unreachable", dead=False, unreachable=True)
        await tx.outbox.mark_failed("d", 1, T0 + 300, "gave up", dead=True, unreachable=True)  # dead is never "waiting"
    assert await store.outbox.unreachable() == {"telegram:-100": 2, "telegram:-200": 1}
    assert (await store.outbox.get("a")).status is OutboxStatus.PENDING
    assert await store.outbox.due(T0 + 10) == []
    async with store.transaction() as tx:  # the group's bot is back: its rows are due now
        assert await tx.outbox.release_unreachable("telegram:-100", T0 + 10) == 2
        assert await tx.outbox.release_unreachable("telegram:-999", T0 + 10) == 0
    assert [i.id for i in await store.outbox.due(T0 + 10)] == ["a", "b"]
    assert (await store.outbox.get("c")).next_at == T0 + 300
    async with store.transaction() as tx:  # any other verdict, or delivery, clears the flag
        await tx.outbox.mark_delivered("a", T0 + 11)
        await tx.outbox.mark_failed("b", 3, T0 + 20, "HTTP 503", dead=False)
    assert await store.outbox.unreachable() == {"telegram:-200": 1}
    assert [e.unreachable for e in await store.outbox.listing((OutboxStatus.PENDING, OutboxStatus.DEAD))] == [False, True, False]


async def test_outbox_requeue_dead_rows_all_or_by_id_prefix(store: Store) -> None:
    async with store.transaction() as tx:
        for name in ("dead-1", "dead-2", "deaf-3", "alive"):
            await tx.outbox.add(make_item(name))
    async with store.transaction() as tx:
        for name in ("dead-1", "dead-2", "deaf-3"):
            await tx.outbox.mark_failed(name, 10, T0 + 900, f"HTTP 400 {name}", dead=True)
        await tx.outbox.mark_failed("alive", 2, T0 + 900, "HTTP 503", dead=False)
    async with store.transaction() as tx:
        assert await tx.outbox.requeue_dead(T0 + 1000, id_prefix="dead-") == 2
        assert await tx.outbox.requeue_dead(T0 + 1000, id_prefix="dea%") == 0  # a prefix, not a pattern
        assert await tx.outbox.requeue_dead(T0 + 1000, id_prefix="nothing") == 0
    again = await store.outbox.get("dead-1")
    assert (again.status, again.attempts, again.next_at, again.last_error) == (OutboxStatus.PENDING, 0, T0 + 1000, "HTTP 400 dead-1")
    assert again.payload == {"text": "dead-1"}
    assert (await store.outbox.get("deaf-3")).status is OutboxStatus.DEAD
    alive = await store.outbox.get("alive")
    assert (alive.status, alive.attempts, alive.next_at) == (OutboxStatus.PENDING, 2, T0 + 900)  # pending rows untouched
    async with store.transaction() as tx:
        assert await tx.outbox.requeue_dead(T0 + 2000) == 1
        assert await tx.outbox.requeue_dead(T0 + 2000) == 0
    assert [i.id for i in await store.outbox.due(T0 + 2000)] == ["dead-1", "dead-2", "deaf-3", "alive"]
    assert (await store.outbox.counts())[OutboxStatus.DEAD] == 0


# --- audit ---------------------------------------------------------------------------------------


async def test_audit_chain(store: Store, cipher: Cipher) -> None:
    appended = []
    async with store.transaction() as tx:
        appended.append(await tx.audit.append("officer-1", "t1", "view", T0))
        appended.append(await tx.audit.append("officer-2", "t1", "close", T0 + 1.5))
    async with store.transaction() as tx:
        appended.append(await tx.audit.append("officer-1", "t2", "reply", 1_800_000_100))  # an int time
    entries = await store.audit.entries()
    assert entries == appended
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == "0" * 64
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == previous.hash
    for entry in entries:  # whoever holds the key ring can re-verify the chain from what was read back
        assert entry.hash == cipher.chain_hash(entry.prev_hash, entry.record())
        assert entry.hash != unkeyed_chain_hash(entry.prev_hash, entry.record())  # not without the keys
    assert len({e.hash for e in entries}) == 3


# --- receipt attempts ----------------------------------------------------------------------------


async def test_receipt_failures_are_counted_in_a_window(store: Store) -> None:
    async with store.transaction() as tx:
        for at in (T0 - 100, T0 - 60, T0 - 10, T0):
            await tx.receipt_attempts.record_failure("s1", at)
        await tx.receipt_attempts.record_failure("s2", T0)
    assert await store.receipt_attempts.failures_since("s1", T0 - 60) == 3
    assert await store.receipt_attempts.failures_since("s1", T0 - 1000) == 4
    assert await store.receipt_attempts.failures_since("s1", T0 + 1) == 0
    assert await store.receipt_attempts.failures_since("s2", T0 - 1000) == 1
    assert await store.receipt_attempts.failures_since("s3", 0) == 0


async def test_receipt_failures_are_counted_across_senders(store: Store) -> None:
    assert await store.receipt_attempts.failures_total_since(0) == 0
    assert await store.receipt_attempts.last_failure_at() is None
    async with store.transaction() as tx:
        for sender, at in (("s1", T0 - 3700), ("s1", T0 - 60), ("s2", T0 - 30), ("s3", T0)):
            await tx.receipt_attempts.record_failure(sender, at)
        # Inside the transaction, what it wrote is counted (the ceiling is checked right after).
        assert await tx.receipt_attempts.failures_total_since(T0 - 3600) == 3
    assert await store.receipt_attempts.failures_total_since(T0 - 3600) == 3
    assert await store.receipt_attempts.failures_total_since(T0 - 30) == 2  # the bound is inclusive
    assert await store.receipt_attempts.failures_total_since(T0 - 10_000) == 4
    assert await store.receipt_attempts.failures_total_since(T0 + 1) == 0
    assert await store.receipt_attempts.last_failure_at() == T0


async def test_receipt_failures_are_kept_a_day_for_the_global_window(store: Store) -> None:
    """Pruning keeps at least the last day: the global ceiling looks back at most two hours."""
    async with store.transaction() as tx:
        await tx.receipt_attempts.record_failure("s1", T0 - 2 * 86400)
        await tx.receipt_attempts.record_failure("s2", T0 - 7200)
        await tx.receipt_attempts.record_failure("s3", T0)
    assert await store.receipt_attempts.failures_total_since(T0 - 7200) == 2
    assert await store.receipt_attempts.failures_total_since(0) <= 3


# --- message refs --------------------------------------------------------------------------------


async def test_message_refs(store: Store) -> None:
    assert await store.message_refs.get("s1") == []
    async with store.transaction() as tx:
        await tx.message_refs.add("s1", ["10", "11"], T0)
        await tx.message_refs.add("s1", ["11", "12", "10"], T0 + 5)
        await tx.message_refs.add("s2", ["99"], T0 - 1000)
    assert await store.message_refs.get("s1") == ["10", "11", "12"]
    async with store.transaction() as tx:
        await tx.message_refs.add("s1", ["13"], T0 + 6)
    assert await store.message_refs.get("s1") == ["10", "11", "12", "13"]
    async with store.transaction() as tx:
        assert await tx.message_refs.purge_before(T0) == 1
    assert await store.message_refs.get("s2") == []
    assert await store.message_refs.get("s1") == ["10", "11", "12", "13"]
    async with store.transaction() as tx:
        await tx.message_refs.delete("s1")
    assert await store.message_refs.get("s1") == []


# --- epoch peppers and senders -------------------------------------------------------------------


async def test_epoch_peppers_are_created_on_demand_and_only_two_are_kept(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.peppers.rotate(10) == 0
        first = await tx.peppers.alive(10)
        assert await tx.peppers.rotate(10) == 0  # the same epoch: the same pepper
    assert first is not None and first.previous is None
    assert await store.peppers.alive(10) == first
    async with store.transaction() as tx:
        assert await tx.peppers.rotate(11) == 0
        assert await tx.peppers.rotate(12) == 1  # epoch 10's is destroyed
    alive = await store.peppers.alive(12)
    assert alive is not None and set(alive.peppers) == {11, 12} and first.peppers[10] not in alive.peppers.values()
    assert await store.peppers.epochs() == [11, 12]
    assert await store.peppers.alive(13) is None


async def test_rekey_moves_a_senders_rows_to_the_new_name(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("old", {"step": "where"}, T0, T0 + 600))
        await tx.receipt_attempts.record_failure("old", T0)
        await tx.message_refs.add("old", ["1"], T0)
        await tx.message_refs.add("new", ["2"], T0)
        await tx.tips.save(make_tip("t1", "26-0001", sender="old", urgent=True))
        assert await tx.senders.rekey("old", "new", T0 + 1) == 4
    draft = await store.drafts.get("new")
    assert draft is not None and draft.state == {"step": "where"} and await store.drafts.get("old") is None
    assert await store.receipt_attempts.failures_since("new", 0) == 1 and await store.receipt_attempts.failures_since("old", 0) == 0
    assert sorted(await store.message_refs.get("new")) == ["1", "2"] and await store.message_refs.get("old") == []
    tip = await store.tips.get("t1")
    assert tip is not None and tip.sender == "new" and not tip.altered
    assert await store.tips.urgent_since("new", 0) == 1


async def test_rekey_keeps_the_current_draft_and_sets_the_older_aside(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("old", {"step": "where"}, T0, T0 + 600))
        await tx.drafts.save(Draft("new", {"step": "when"}, T0, T0 + 600))
        await tx.senders.rekey("old", "new", T0 + 1)
    assert (await store.drafts.get("new")).state == {"step": "when"}
    assert await store.drafts.set_aside_count() == 1
    async with store.transaction() as tx:
        await tx.drafts.erase("new")  # EXIT erases what was set aside too
    assert await store.drafts.set_aside_count() == 0


async def test_tip_senders_are_forgotten_after_the_window(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(make_tip("t1", "26-0001", sender="s1", urgent=True, created_at=T0 - 7200))
        await tx.tips.save(make_tip("t2", "26-0002", sender="s1", urgent=True, created_at=T0))
        assert await tx.senders.forget_tip_senders(T0 - 3600) == 1
    old, new = await store.tips.get("t1"), await store.tips.get("t2")
    assert old.sender == "" and not old.altered and new.sender == "s1"
    assert await store.tips.urgent_since("s1", 0) == 1


async def test_pictures_belong_to_a_draft_then_to_its_case(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(make_tip("t1", "26-0001"))
        await tx.pictures.add("a", b"jpeg-a", 10.0, owner="sender-1")
        await tx.pictures.add("b", b"jpeg-b", 11.0, owner="sender-1")
        await tx.pictures.add("c", b"jpeg-c", 12.0, owner="sender-2")
    assert await store.pictures.get("a") == b"jpeg-a" and await store.pictures.get("missing") is None
    assert await store.pictures.count_for_tip("t1") == 0
    async with store.transaction() as tx:
        assert await tx.pictures.file("sender-1", "t1", keep_owner=True) == 2  # an urgent case: still EXIT's
        assert await tx.pictures.delete_owned("sender-1") == 2
        await tx.pictures.add("d", b"jpeg-d", 13.0, owner="sender-1")
        assert await tx.pictures.file("sender-1", "t1") == 1  # sent: the case's, naming nobody
        assert await tx.pictures.delete_owned("sender-1") == 0
    assert await store.pictures.ids_for_tip("t1") == ["d"]
    async with store.transaction() as tx:
        assert await tx.pictures.delete(["c", "nope"]) == 1
        assert await tx.pictures.delete_for_tip("t1") == 1
    assert await store.pictures.count() == 0


async def test_erasing_a_draft_takes_its_pictures_and_a_new_epoch_moves_them(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("old", {"v": 2, "mode": "report"}, 1.0, 100.0))
        await tx.pictures.add("a", b"jpeg-a", 1.0, owner="old")
        assert await tx.senders.rekey("old", "new", 2.0) >= 2
        assert await tx.pictures.delete_owned("old") == 0
        await tx.drafts.erase("new")
    assert await store.pictures.count() == 0


# --- several instances on one database -----------------------------------------------------------


async def open_second(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> Store:
    """Another handle on the same database, as a second process (or instance) would open it."""
    return await backend.open(request, tmp_path, cipher)


async def test_a_claimed_row_is_leased_to_its_claimer(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.outbox.add(make_item("calm", next_at=T0))
        await tx.outbox.add(make_item("urgent", next_at=T0, priority=2))
        await tx.outbox.add(make_item("later", next_at=T0 + 100))
    async with store.transaction() as tx:
        claimed = await tx.outbox.claim(T0, lease_seconds=30)
    assert [i.id for i in claimed] == ["urgent", "calm"]  # urgent first; not the one due later
    async with store.transaction() as tx:
        assert await tx.outbox.claim(T0 + 10, lease_seconds=30) == []  # leased: nobody else takes them
    assert await store.outbox.next_due_at() == T0 + 30  # not due before the lease runs out
    async with store.transaction() as tx:
        assert await tx.outbox.extend_lease(["calm", "urgent"], T0 + 60) == 2
        await tx.outbox.mark_delivered("urgent", T0 + 11)
        assert await tx.outbox.extend_lease(["urgent"], T0 + 90) == 0  # delivered rows are left alone
    async with store.transaction() as tx:
        assert await tx.outbox.claim(T0 + 59, lease_seconds=30) == []
    async with store.transaction() as tx:
        # The claimer died: at the end of its lease the row is anyone's again.
        assert [i.id for i in await tx.outbox.claim(T0 + 61, lease_seconds=30)] == ["calm"]
    async with store.transaction() as tx:
        await tx.outbox.mark_failed("calm", 1, T0 + 70, "boom", False)  # a failure frees it for its retry
    async with store.transaction() as tx:
        assert [i.id for i in await tx.outbox.claim(T0 + 70, lease_seconds=30, limit=1)] == ["calm"]


async def test_a_lane_takes_its_own_sinks_rows_and_an_in_order_lane_keeps_a_targets_order(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.outbox.add(make_item("urgent-waits", sink="telegram:-1", next_at=T0 + 60, priority=2))  # in backoff
        await tx.outbox.add(make_item("new-tip", sink="telegram:-1", next_at=T0, priority=2))
        await tx.outbox.add(make_item("other-group", sink="telegram:-2", next_at=T0))
        await tx.outbox.add(make_item("sms", sink="sms:ab", next_at=T0))
        await tx.outbox.add(make_item("prefix-alike", sink="telegramx:-1", next_at=T0))
        await tx.outbox.add(make_item("bare", sink="console", next_at=T0))
    telegram = Lane(("telegram",), in_order=True)
    assert [i.id for i in await store.outbox.due(T0, lane=telegram)] == ["other-group"]  # new-tip waits behind urgent
    assert {i.id for i in await store.outbox.due(T0, lane=Lane(("telegram",)))} == {"new-tip", "other-group"}
    assert [i.id for i in await store.outbox.due(T0, lane=Lane(("console",)))] == ["bare"]
    others = Lane(("console", "sms", "telegram"), others=True)
    assert [i.id for i in await store.outbox.due(T0, lane=others)] == ["prefix-alike"]
    # A target is next due when its earliest pending row is; the other group is due now.
    assert await store.outbox.next_due_at(Lane(("sms",), in_order=True)) == T0
    async with store.transaction() as tx:
        await tx.outbox.mark_delivered("other-group", T0)
    assert await store.outbox.next_due_at(telegram) == T0 + 60
    async with store.transaction() as tx:
        assert [i.id for i in await tx.outbox.claim(T0 + 1, 30, lane=telegram)] == []
        claimed = await tx.outbox.claim(T0 + 60, 30, lane=telegram)
    assert [i.id for i in claimed] == ["urgent-waits", "new-tip"]  # together, in the order raised
    async with store.transaction() as tx:
        await tx.outbox.add(make_item("behind-a-lease", sink="telegram:-1", next_at=T0 + 60))
    # Rows another instance holds leased keep the target's later rows back too.
    async with store.transaction() as tx:
        assert [i.id for i in await tx.outbox.claim(T0 + 61, 30, lane=telegram)] == []
        await tx.outbox.mark_delivered("urgent-waits", T0 + 62)
        await tx.outbox.mark_delivered("new-tip", T0 + 62)
        assert [i.id for i in await tx.outbox.claim(T0 + 62, 30, lane=telegram)] == ["behind-a-lease"]


async def test_claims_that_race_never_share_a_row(store: Store, backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> None:
    async with store.transaction() as tx:
        for n in range(40):
            await tx.outbox.add(make_item(f"o{n:02d}", next_at=T0))
    other = await open_second(backend, request, tmp_path, cipher)
    try:
        async def claim(on: Store) -> list[str]:
            got: list[str] = []
            for _ in range(10):
                async with on.transaction() as tx:
                    got += [i.id for i in await tx.outbox.claim(T0, lease_seconds=30, limit=3)]
            return got

        first, second = await asyncio.gather(claim(store), claim(other))
    finally:
        await other.close()
    assert not set(first) & set(second)
    assert sorted(first + second) == [f"o{n:02d}" for n in range(40)]


async def test_transactions_naming_one_sender_take_turns(store: Store, backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> None:
    other = await open_second(backend, request, tmp_path, cipher)
    inside = asyncio.Event()

    async def first() -> None:
        async with store.transaction(lock=("sender-a",)) as tx:
            await tx.drafts.save(Draft("sender-a", {"n": 1}, T0, T0 + 60))
            inside.set()
            await asyncio.sleep(0.3)  # the second must wait for this commit, not read before it
            await tx.drafts.save(Draft("sender-a", {"n": 2}, T0, T0 + 60))

    async def second() -> int:
        await inside.wait()
        async with other.transaction(lock=("sender-a",)) as tx:
            draft = await tx.drafts.get("sender-a")
            assert draft is not None
            await tx.drafts.save(Draft("sender-a", {"n": draft.state["n"] + 1}, T0, T0 + 60))
            return draft.state["n"]

    try:
        _, seen = await asyncio.gather(first(), second())
    finally:
        await other.close()
    assert seen == 2
    assert (await store.drafts.get("sender-a")).state == {"n": 3}


async def test_one_holder_of_an_exclusive_name(store: Store, backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> None:
    other = await open_second(backend, request, tmp_path, cipher)
    try:
        assert await store.exclusive("telegram-polling") is True
        assert await other.exclusive("telegram-polling") is False
        assert await other.exclusive("something-else") is True
        await store.close()  # the holder stops (or dies): the name is free
        assert await other.exclusive("telegram-polling") is True
    finally:
        await other.close()


async def test_once_runs_once_per_fingerprint_across_instances(store: Store, backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, cipher: Cipher) -> None:
    runs: list[str] = []

    async def register() -> None:
        runs.append("set")

    other = await open_second(backend, request, tmp_path, cipher)
    try:
        assert await store.once("webhook", "url-1", register) is True
        assert await other.once("webhook", "url-1", register) is False
        assert await other.once("webhook", "url-2", register) is True  # a new configuration
        await store.forget_once("webhook")
        assert await store.once("webhook", "url-2", register) is True

        async def failing() -> None:
            raise RuntimeError("Telegram said no")

        with pytest.raises(RuntimeError):
            await store.once("webhook", "url-3", failing)
        assert await other.once("webhook", "url-3", register) is True  # a failure is not recorded
    finally:
        await other.close()
    assert runs == ["set", "set", "set", "set"]
