"""Group commit: concurrent transactions share COMMITs, fail alone, and are durable on exit."""

from __future__ import annotations

import asyncio

import pytest

from storage.records import Draft
from storage.sqlite import SqliteStore


class Boom(Exception):
    pass


async def _write(store: SqliteStore, sender: str, fail: bool = False) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft(sender, {"n": sender}, 1.0, 2.0))
        await asyncio.sleep(0)  # let others queue up behind us
        if fail:
            raise Boom


async def test_concurrent_transactions_share_commits_and_one_failure_rolls_back_alone(store: SqliteStore) -> None:
    results = await asyncio.gather(*(_write(store, f"s{i}", fail=(i == 7)) for i in range(50)), return_exceptions=True)
    assert [i for i, r in enumerate(results) if isinstance(r, Boom)] == [7]
    assert await store.drafts.count() == 49  # read through the reader: all of it is committed
    assert await store.drafts.get("s7") is None
    assert 1 <= store.commits < 50


async def test_each_transaction_is_visible_to_readers_when_it_returns(store: SqliteStore) -> None:
    for i in range(3):
        await _write(store, f"seq{i}")
        assert await store.drafts.get(f"seq{i}") is not None
    assert store.commits == 3  # nothing queued: one commit each


async def test_a_waiter_cancelled_in_the_queue_does_not_strand_the_batch(store: SqliteStore) -> None:
    holder_inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with store.transaction() as tx:
            await tx.drafts.save(Draft("holder", {}, 1.0, 2.0))
            holder_inside.set()
            await release.wait()

    first = asyncio.create_task(holder())
    await holder_inside.wait()
    queued = asyncio.create_task(_write(store, "queued"))
    await asyncio.sleep(0.01)
    queued.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.wait_for(first, timeout=5)  # would hang if nobody committed the batch
    assert await store.drafts.get("holder") is not None
    assert await store.drafts.get("queued") is None
