"""EXIT erases for real: after it, no byte of the data directory (database, write-ahead log, -shm)
holds any version of the draft or of the replies cached for it, not even sealed (so not even the
key ring opens them). Provider message ids are kept only as keyed hashes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from bot.engine import Engine
from bot.messages import InboundMessage, Purpose
from storage.sqlite import SqliteStore
from tests.conftest import Clock

SENDER = "sender-erasure-0001"
PLACE = "Motel Lune, 12 rue Fictive, Laval"
DETAILS = "A girl of 16 is kept in room 12 by a man called Dave"
SCRIPT = ["hello", "2", "1", "1", "1", PLACE, "2", DETAILS, "DONE", "1"]  # up to the review


def _files(store: SqliteStore) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(store.path).parent.iterdir() if p.name.startswith(store.path.name)}


def _sealed_versions(store: SqliteStore) -> set[bytes]:
    """The nonce of every sealed draft state and cached reply now stored: 12 random bytes that
    name one envelope (version | id length | key id | nonce | ciphertext)."""
    with closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as conn:
        blobs = [r[0] for r in conn.execute("SELECT state FROM drafts UNION ALL SELECT replies FROM cached_replies")]
    return {blob[2 + blob[1] : 2 + blob[1] + 12] for blob in blobs}


async def _talk(engine: Engine, clock: Clock, texts: list[str], first_id: int) -> list[list]:
    answers = []
    for n, text in enumerate(texts, start=first_id):
        answers.append(await engine.handle(InboundMessage("sms", SENDER, text, provider_id=f"SM{n:032d}")))
        clock.advance(20)
    return answers


async def test_after_exit_no_byte_of_the_data_dir_holds_any_version_of_the_draft(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    versions: set[bytes] = set()
    for n, text in enumerate(SCRIPT):
        await _talk(engine, clock, [text], n)
        versions |= _sealed_versions(store)
    assert len(versions) >= len(SCRIPT)  # one draft version per answer, and the cached replies
    before = b"".join(_files(store).values())
    assert any(v in before for v in versions - _sealed_versions(store))  # the WAL holds earlier versions: the test can fail

    [[erased]] = await _talk(engine, clock, ["EXIT"], len(SCRIPT))
    assert erased.purpose is Purpose.ERASED

    files = _files(store)
    assert files.get("tipline.sqlite3-wal", b"") == b""  # cut to nothing by the checkpoint
    everything = b"".join(files.values())
    left = [v for v in versions if v in everything]
    assert left == [], f"{len(left)} of {len(versions)} sealed versions of the conversation are still on disk"
    for secret in (PLACE, DETAILS, "Dave"):
        assert secret.encode() not in everything
    with closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT count(*) FROM drafts").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM cached_replies").fetchone() == (1,)  # the "erased" answer, for a retry


async def test_provider_ids_are_kept_as_keyed_hashes_and_a_retry_still_gets_its_answer(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    [first] = await _talk(engine, clock, ["hello"], 7)
    again = await engine.handle(InboundMessage("sms", SENDER, "hello", provider_id=f"SM{7:032d}"))
    assert again == first
    await store.checkpoint()
    everything = b"".join(_files(store).values())
    assert f"SM{7:032d}".encode() not in everything and b"sms:SM" not in everything
    with closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as conn:
        (key,) = conn.execute("SELECT key FROM processed").fetchone()
    assert len(key) == 64 and key == store.cipher.lookup_hash("provider-id", f"sms:SM{7:032d}")


async def test_a_filed_report_drops_the_replies_cached_before_its_receipt(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    answers = await _talk(engine, clock, [*SCRIPT, "1"], 100)  # … then Send
    assert answers[-1][0].purpose is Purpose.RECEIPT
    with closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT count(*) FROM cached_replies").fetchone() == (1,)  # the receipt, for a retry only
    # A retry of an answer given before filing is not handled again, and gets nothing cached.
    assert await engine.handle(InboundMessage("sms", SENDER, PLACE, provider_id=f"SM{105:032d}")) == []
    assert await engine.handle(InboundMessage("sms", SENDER, "1", provider_id=f"SM{110:032d}")) == answers[-1]
    clock.advance(engine.config.cached_reply_seconds + 1)
    await engine.expire_due()  # the sweeper drops the receipt once the retry window is over
    assert await store.processed.replies_for(f"sms:SM{110:032d}") == []
