"""Tipster pseudonyms that expire (issue 12 part 4): a conversation crosses the epoch boundary,
lock-outs and flood limits follow it, and once the pepper has rotated twice nobody holding the key
ring and the database can tie the stored pseudonyms to the phone number."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from contextlib import closing
from pathlib import Path

from bot.engine import Engine
from bot.messages import InboundMessage
from bot.pseudonyms import upkeep
from bot.rate_limit import RateLimiter
from storage.crypto import Cipher, KeyRing, pseudonym_epoch
from storage.sqlite import DB_FILENAME, SqliteStore
from tests.conftest import Clock

NUMBER = "+15145550199"
DAY = 86400.0


def message(cipher: Cipher, text: str, sid: str) -> InboundMessage:
    names = cipher.tipster_pseudonyms("sms", NUMBER)
    return InboundMessage("sms", names.current, text, provider_id=sid, reply_address=NUMBER, earlier_sender=names.previous)


async def at_boundary(store: SqliteStore, cipher: Cipher, clock: Clock, before: float) -> float:
    """Put the clock ``before`` seconds ahead of the next epoch boundary; the upkeep has run."""
    boundary = (pseudonym_epoch(clock.now, 24) + 1) * DAY
    clock.now = boundary - before
    await upkeep(store, cipher, 24, clock.now)
    return boundary


async def say(engine: Engine, cipher: Cipher, text: str, sid: str) -> list[str]:
    return [r.key for r in await engine.handle(message(cipher, text, sid))]


async def test_a_conversation_that_straddles_the_boundary_goes_on(engine: Engine, store: SqliteStore, cipher: Cipher, clock: Clock) -> None:
    boundary = await at_boundary(store, cipher, clock, 120)
    await say(engine, cipher, "A man keeps two women locked in room 12 at the Motel Lune", "SM1")
    before = cipher.tipster_pseudonyms("sms", NUMBER).current
    kept = (await store.drafts.get(before)).state
    clock.now = boundary + 60
    await upkeep(store, cipher, 24, clock.now)
    names = cipher.tipster_pseudonyms("sms", NUMBER)
    assert names.previous == before and names.current != before
    await say(engine, cipher, "1", "SM2")
    draft = await store.drafts.get(names.current)
    assert draft is not None and await store.drafts.get(before) is None  # re-keyed, not started afresh
    assert draft.state["answers"]["details"] == kept["answers"]["details"] != []


async def test_a_lock_out_holds_within_an_epoch_and_across_the_boundary(
    engine: Engine, store: SqliteStore, cipher: Cipher, clock: Clock
) -> None:
    boundary = await at_boundary(store, cipher, clock, 600)
    answers = [await say(engine, cipher, f"CHECK 000-000-000-00{n}", f"SMC{n}") for n in range(6)]
    assert answers[:5] == [["receipt.unknown"]] * 5 and answers[5] == ["receipt.locked"]
    clock.now = boundary + 60
    await upkeep(store, cipher, 24, clock.now)
    assert await say(engine, cipher, "CHECK 000-000-000-009", "SMC9") == ["receipt.locked"]


async def test_a_flood_limit_holds_within_an_epoch_and_across_the_boundary(
    engine: Engine, store: SqliteStore, cipher: Cipher, clock: Clock
) -> None:
    engine.rate_limiter = RateLimiter(burst=3, rate=0.0001)
    boundary = await at_boundary(store, cipher, clock, 60)
    flood = [await say(engine, cipher, f"spam {n}", f"SMF{n}") for n in range(4)]
    assert flood[3] == ["rate.slow_down"]
    clock.now = boundary + 30
    await upkeep(store, cipher, 24, clock.now)
    assert await say(engine, cipher, "spam again", "SMF9") == []  # the same flood: silence


def candidates(ring: KeyRing, peppers: list[bytes]) -> set[str]:
    """What an attacker with the key ring and the database would compute for this number."""
    ids = (NUMBER, "whatsapp:" + NUMBER, NUMBER.lstrip("+"))
    return {
        hmac.new(pepper, f"{channel}|{provider_id}".encode(), hashlib.sha256).hexdigest()
        for pepper in [ring.pepper, *peppers]
        for channel in ("sms", "whatsapp", "telegram", "console")
        for provider_id in ids
    }


async def test_after_two_rotations_no_stored_pseudonym_leads_back_to_the_number(
    engine: Engine, store: SqliteStore, cipher: Cipher, keyring: KeyRing, clock: Clock, tmp_path: Path
) -> None:
    await upkeep(store, cipher, 24, clock.now)
    epoch = pseudonym_epoch(clock.now, 24)
    first = cipher.tipster_pseudonyms("sms", NUMBER).current
    # Everything that names a sender: a draft that turns into a tip, an urgent case, receipt
    # failures, message refs, processed ids.
    await say(engine, cipher, "help me he is coming back, room 12 Motel Lune", "SM1")
    await say(engine, cipher, "CHECK 000-000-000-001", "SM2")
    async with store.transaction() as tx:
        await tx.message_refs.add(first, ["41", "42"], clock.now)
    assert await store.tips.urgent_since(first, 0) == 1
    db = tmp_path / "data" / DB_FILENAME
    with closing(sqlite3.connect(db)) as conn:
        (old_sealed,) = conn.execute("SELECT pepper FROM pseudonym_peppers WHERE epoch = ?", (epoch,)).fetchone()
    for days in (1, 2):
        clock.now += DAY
        await engine.expire_due()  # the abandoned draft is filed as an incomplete tip
        await upkeep(store, cipher, 24, clock.now)
    assert await store.peppers.epochs() == [epoch + 1, epoch + 2]
    assert all(t.sender == "" for t in await store.tips.list(None, limit=None))  # forgotten after the hour
    await store.checkpoint()

    with closing(sqlite3.connect(db)) as conn:
        sealed = conn.execute("SELECT epoch, pepper FROM pseudonym_peppers").fetchall()
        peppers = [cipher.open_epoch_pepper(e, blob) for e, blob in sealed]
        wanted = candidates(keyring, peppers)
        stored = {
            cell
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - the schema's own names
            for cell in row
            if isinstance(cell, str)
        }
        senders = {r[0] for r in conn.execute("SELECT sender FROM receipt_failures UNION SELECT sender FROM message_refs")}
    assert first in senders  # the rows are there, under a name nobody can recompute
    assert not wanted & stored
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(DB_FILENAME))
    assert not any(c.encode() in raw for c in wanted)
    assert old_sealed not in raw  # the destroyed pepper is gone from the file and the WAL
    assert first not in {cipher.tipster_pseudonyms(ch, NUMBER).current for ch in ("sms",)}
