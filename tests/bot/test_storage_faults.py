"""A database that refuses writes (full, read-only, locked) gets every person a calm "try again in a
few minutes" in their language, quickly, with one log line a minute; the write check of /healthz
says why; once writes work, the same message is handled as new. SQLite and PostgreSQL, with real
failures: SQLite's own SQLITE_FULL (``PRAGMA max_page_count``: the file may not grow by a page),
SQLITE_READONLY (``PRAGMA query_only``, which holds for root too, unlike file modes), a write lock
held by another process, and on PostgreSQL an advisory or row lock held by another session.

Run alone (about 30 s)::

    .venv/bin/python -m pytest tests/bot/test_storage_faults.py -q -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.engine import Engine
from bot.health import WriteProbe, report
from bot.i18n import Catalogues
from bot.messages import InboundMessage
from bot.rate_limit import RateLimiter
from handlers.turn import ConversationConfig
from storage.crypto import Cipher
from storage.faults import DISK_FULL, LOCKED, READ_ONLY, fault_reason
from storage.postgres import PostgresStore, lock_id
from storage.sqlite import SqliteStore
from tests.conftest import Clock
from tests.faults import full, lock_held_by_another_process, space_back

# Longer than a database page (4 KB) once stored, so the draft needs a new (overflow) page: with
# the database not allowed to grow, storing it fails for certain. (A short answer may still fit in
# the free space of a page already there, as on a real disk whose last block has room.)
LONG_EN = "A grey van parks behind the motel every night and three young women get out. " * 70
LONG_FR = "Une camionnette grise se gare derrière le motel chaque nuit, trois jeunes femmes en sortent. " * 60
LONG_DIGITS = "1234 5678 " * 500  # words of no language
TRY_AGAIN = ("error.retry", "error.retry.both")


def storage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.storage_watch"]


def per_message_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name != "bot.storage_watch"]


def sms(sender: str, text: str, sid: str, hint: str | None = None) -> InboundMessage:
    return InboundMessage("sms", sender, text, provider_id=sid, language_hint=hint)


async def test_a_full_database_gets_each_person_a_calm_reply_in_their_language_and_one_log_line(
    engine: Engine, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # A French conversation under way (its language is in its draft), and a Telegram user whose
    # app says English.
    assert (await engine.handle(sms("fr-1", "Bonjour", "SMfr1")))[0].language == "fr"
    await full(store)

    [reply] = await engine.handle(sms("fr-1", LONG_FR, "SMfr2"))
    assert reply.key == "error.retry" and reply.language == "fr"
    assert reply.text == Catalogues.load().text("fr", "error.retry")
    [reply] = await engine.handle(InboundMessage("telegram", "tg-1", LONG_DIGITS, provider_id="7", language_hint="en-GB"))
    assert (reply.key, reply.language) == ("error.retry", "en")
    [reply] = await engine.handle(sms("new-1", LONG_EN, "SMen1"))  # no draft, no hint: the words are English
    assert (reply.key, reply.language) == ("error.retry", "en")
    [reply] = await engine.handle(sms("new-2", LONG_DIGITS, "SMxx1"))  # nothing tells: both languages
    assert reply.key == "error.retry.both" and "Sorry" in reply.text and "Désolé" in reply.text
    for i in range(30):
        [reply] = await engine.handle(sms(f"many-{i}", LONG_EN, f"SMmany{i}"))
        assert reply.key in TRY_AGAIN

    # What the lock screen shows names nothing of what this line is.
    for language in ("en", "fr"):
        first_line = Catalogues.load().text(language, "error.retry").splitlines()[0].lower()
        assert not any(word in first_line for word in ("police", "traffick", "traite", "danger", "911", "officer", "tip"))
    lines = storage_lines(caplog)
    assert len(lines) == 1 and "disk full" in lines[0], lines
    assert per_message_errors(caplog) == []
    assert engine.storage.reason == DISK_FULL
    # /healthz: degraded for the messages refused, even though its own tiny write may still fit
    # in a page's free space (as it may in a WAL's on a real full disk).
    found, status = await report(store, engine.storage, WriteProbe(), ["sms"])
    assert (status, found["status"], found["storage"]) == (503, "degraded", DISK_FULL)

    await space_back(store)
    # The provider's retry of a message refused while full is handled as new: nothing of it was kept.
    [*replies] = await engine.handle(sms("fr-1", LONG_FR, "SMfr2"))
    assert all(r.key not in TRY_AGAIN for r in replies) and replies[0].language == "fr"
    assert await store.processed.replies_for("sms:SMfr2") is not None
    assert (await store.drafts.get("fr-1")) is not None
    assert engine.storage.reason is None and await store.write_check() is None
    found, status = await report(store, engine.storage, WriteProbe(), ["sms"])
    assert (status, found["status"], found["storage"]) == (200, "ok", "ok")
    recovered = storage_lines(caplog)[1:]
    assert len(recovered) == 1 and "recovered" in recovered[0] and "34 tipster messages" in recovered[0], recovered


async def test_the_log_says_it_again_after_a_minute_not_before(store: SqliteStore, cipher: Cipher, caplog: pytest.LogCaptureFixture) -> None:
    ticks = Clock(0.0)
    engine = Engine(store, cipher, Catalogues.load(), ConversationConfig(), monotonic=ticks, rate_limiter=RateLimiter(burst=10_000))
    await full(store)
    for second in range(0, 150, 5):  # a message every 5 s for two and a half minutes
        ticks.now = float(second)
        await engine.handle(sms(f"s-{second}", LONG_EN, f"SM{second}"))
    lines = storage_lines(caplog)
    assert len(lines) == 3, lines  # at 0 s, 60 s and 120 s
    assert "1 tipster messages" in lines[0] and "13 tipster messages" in lines[1] and "12 failed writes" in lines[1]


async def test_a_read_only_database_gets_the_calm_reply_and_the_write_check_says_read_only(
    engine: Engine, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.handle(sms("ro-1", "hello", "SMro0"))
    await store._writer.execute("PRAGMA query_only=ON")
    replies = [await engine.handle(sms("ro-1", text, f"SMro{i}")) for i, text in enumerate(["2", "1", "EXIT"], 1)]
    assert [r[0].key for r in replies] == ["error.retry"] * 3  # EXIT too: nothing could be erased, so say so
    assert await store.write_check() == READ_ONLY and engine.storage.reason == READ_ONLY
    assert len(storage_lines(caplog)) == 1 and "read-only" in storage_lines(caplog)[0]
    # A provider's retry of the message answered before gets that answer again (a read), and the
    # sweeper finds nothing to purge: neither wrote a byte, so neither says "recovered".
    assert (await engine.handle(sms("ro-1", "hello", "SMro0")))[0].key not in TRY_AGAIN
    assert await engine.expire_due() == 0
    assert engine.storage.reason == READ_ONLY and len(storage_lines(caplog)) == 1
    await store._writer.execute("PRAGMA query_only=OFF")
    assert (await engine.handle(sms("ro-1", "2", "SMro1")))[0].key not in TRY_AGAIN


async def test_a_write_lock_held_elsewhere_gets_everyone_a_calm_reply_well_within_twilios_15_seconds(
    engine: Engine, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.handle(sms("lk-0", "hello", "SMlk0"))
    with lock_held_by_another_process(store.path):
        started = time.monotonic()
        answers = await asyncio.gather(*(engine.handle(sms(f"lk-{i}", "hello", f"SMlk{i}x")) for i in range(8)))
        took = time.monotonic() - started
        assert [(a[0].key, a[0].language) for a in answers] == [("error.retry", "en")] * 8
        # Each waits at most 5 s for the lock, together, not one after the other (8 x 5 s = 40 s).
        assert 4.0 < took < 7.0, took
        started = time.monotonic()
        assert await store.write_check(wait=1.0) == LOCKED
        assert time.monotonic() - started < 1.8
    assert engine.storage.reason == LOCKED and "locked" in storage_lines(caplog)[0]
    assert (await engine.handle(sms("lk-3", "hello", "SMlk3x")))[0].key not in TRY_AGAIN
    assert await store.write_check() is None


async def test_sqlite_rolling_a_transaction_back_itself_fails_its_batch_instead_of_leaving_it_open(store: SqliteStore) -> None:
    """SQLITE_FULL in the middle of a statement rolls the whole transaction back (savepoints
    included); transactions that had joined the same group commit must learn it at once, and the
    next one must begin afresh rather than run outside any transaction."""
    await full(store)
    joined = asyncio.Event()

    async def small() -> str:
        async with store.transaction() as tx:
            await tx.db.run("INSERT INTO meta (name, value) VALUES ('small', 'x')")
            joined.set()
            while not store._queued:  # the large one waits to join this batch: it commits both
                await asyncio.sleep(0.001)
        return "committed"

    async def large() -> None:
        await joined.wait()
        async with store.transaction() as tx:
            await tx.db.run("INSERT INTO meta (name, value) VALUES ('large', ?)", ("x" * 50_000,))

    results = await asyncio.wait_for(asyncio.gather(small(), large(), return_exceptions=True), timeout=5)
    assert [fault_reason(r) if isinstance(r, BaseException) else r for r in results] == [DISK_FULL, DISK_FULL]
    assert await store._read.db.one("SELECT value FROM meta WHERE name = 'small'") is None
    await space_back(store)
    async with store.transaction() as tx:
        await tx.db.run("INSERT INTO meta (name, value) VALUES ('after', 'y')")
    assert await store._read.db.one("SELECT value FROM meta WHERE name = 'after'") == ("y",)


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
async def pg(postgres_url: str, cipher: Cipher) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(postgres_url, cipher)
    yield store
    await store.close()


async def test_postgresql_a_lock_held_by_another_session_gets_the_calm_reply_within_seconds(
    pg: PostgresStore, postgres_url: str, cipher: Cipher, catalogues: Catalogues, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(pg, cipher, catalogues, ConversationConfig(), rate_limiter=RateLimiter(burst=10_000))
    assert (await engine.handle(sms("pg-1", "Bonjour", "SMpg0")))[0].language == "fr"
    other = await asyncpg.connect(postgres_url)
    try:
        # Another instance (or a stuck session) holds this person's lock.
        await other.execute("SELECT pg_advisory_lock($1)", lock_id("pg-1"))
        started = time.monotonic()
        [reply] = await engine.handle(sms("pg-1", "2", "SMpg1"))
        assert time.monotonic() - started < 7.0
        assert (reply.key, reply.language) == ("error.retry", "fr")
        # A row lock on the health check's own row: the check says "locked" within its wait.
        await pg.write_check()
        await other.execute("BEGIN")
        await other.execute("SELECT value FROM meta WHERE name = 'health:write' FOR UPDATE")
        started = time.monotonic()
        assert await pg.write_check(wait=1.0) == LOCKED
        assert time.monotonic() - started < 2.0
        await other.execute("ROLLBACK")
        await other.execute("SELECT pg_advisory_unlock($1)", lock_id("pg-1"))
    finally:
        await other.close()
    assert engine.storage.reason == LOCKED and len(storage_lines(caplog)) == 1
    assert (await engine.handle(sms("pg-1", "2", "SMpg1")))[0].key not in TRY_AGAIN  # the retry, handled
    assert await pg.write_check() is None


async def test_postgresql_a_read_only_database_is_reported_as_read_only(pg: PostgresStore, postgres_url: str) -> None:
    admin = await asyncpg.connect(postgres_url)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        fresh = await asyncpg.connect(postgres_url)  # the setting holds for new sessions
        await fresh.close()
        await pg._pool.expire_connections()
        assert await pg.write_check() == READ_ONLY
        await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
        await pg._pool.expire_connections()
        assert await pg.write_check() is None
    finally:
        await admin.close()
