"""PostgreSQL specifics, on a real server started by the tests: migrations, the key-ring binding,
no plaintext in any file of the server's data directory (tables and WAL), ciphertexts portable
from SQLite, and a connection failure that never prints the URL's password."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from storage.crypto import Cipher, KeyRing, KeyRingError
from storage.opening import StorageError
from storage.postgres import MIGRATIONS, PostgresStore
from storage.sqlite import DB_FILENAME, SqliteStore
from tests.postgres_server import PostgresServer
from tests.storage.test_sqlite import SECRETS, fill_every_encrypted_column


@pytest.fixture
async def store(postgres_url: str, cipher: Cipher):
    opened = await PostgresStore.open(postgres_url, cipher)
    yield opened
    await opened.close()


async def test_migrations_run_once_even_when_instances_start_together(postgres_url: str, cipher: Cipher) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url, cipher) for _ in range(4)))
    try:
        assert [await s.schema_version() for s in stores] == [len(MIGRATIONS)] * 4
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
            assert await conn.fetchval("SELECT count(*) FROM meta WHERE name = 'key_fingerprint'") == 1
        finally:
            await conn.close()
    finally:
        for s in stores:
            await s.close()


async def test_a_newer_schema_is_refused(postgres_url: str, cipher: Cipher) -> None:
    await (await PostgresStore.open(postgres_url, cipher)).close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", len(MIGRATIONS) + 5)
    finally:
        await conn.close()
    with pytest.raises(StorageError, match="newer than this Tipline"):
        await PostgresStore.open(postgres_url, cipher)


async def test_another_key_ring_is_refused(store: PostgresStore, postgres_url: str) -> None:
    await fill_every_encrypted_column(store)
    with pytest.raises(KeyRingError, match="does not match this database"):
        await PostgresStore.open(postgres_url, Cipher(KeyRing.generate()))
    assert (await store.tips.get("t1")).contact_address == SECRETS["contact"]  # nothing was harmed


async def test_no_plaintext_in_any_file_of_the_server(store: PostgresStore, postgres_server: PostgresServer) -> None:
    await fill_every_encrypted_column(store)
    async with store.transaction(lock=("s1",)) as tx:
        await tx.drafts.erase("s1")  # an erased draft leaves no readable trace either
    assert await store.checkpoint()
    conn = await asyncpg.connect(store.url)
    try:
        await conn.execute("CHECKPOINT")  # shared buffers written out to the table files
    finally:
        await conn.close()
    files = [p for p in (postgres_server.directory / "data").rglob("*") if p.is_file()]
    assert any("pg_wal" in p.parts for p in files) and any("base" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS.values():
            assert secret.encode() not in data, (secret, path)


async def test_ciphertexts_move_from_sqlite_as_they_are(tmp_path: Path, postgres_url: str, cipher: Cipher) -> None:
    """The same associated data in both engines: rows copied byte for byte open in PostgreSQL."""
    lite = await SqliteStore.open(tmp_path / "data", cipher)
    await fill_every_encrypted_column(lite)
    await lite.close()
    await (await PostgresStore.open(postgres_url, cipher)).close()  # the schema, bound to the same key ring
    conn = await asyncpg.connect(postgres_url)
    try:
        with closing(sqlite3.connect(tmp_path / "data" / DB_FILENAME)) as source:
            for table in ("tips", "drafts", "followups", "outbox", "processed", "cached_replies", "message_refs", "audit", "meta"):
                cursor = source.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cursor.description]
                marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
                for row in cursor.fetchall():
                    await conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING", *row)
    finally:
        await conn.close()
    pg = await PostgresStore.open(postgres_url, cipher)
    try:
        tip = await pg.tips.get("t1")
        assert tip.answers["where"] == SECRETS["answers"] and tip.contact_address == SECRETS["contact"] and not tip.altered
        assert (await pg.drafts.get("s1")).state == {"note": SECRETS["draft"]}
        assert [f.text for f in await pg.followups.for_tip("t1")] == [SECRETS["followup"]]
        assert (await pg.outbox.get("o1")).payload == {"text": SECRETS["outbox"]}
        assert await pg.processed.replies_for("sms:SM1") == [{"text": SECRETS["replies"]}]
        assert await pg.message_refs.get("s1") == [SECRETS["refs"]]
    finally:
        await pg.close()


async def test_an_unreachable_server_is_one_line_without_the_password(cipher: Cipher) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once it is closed
    url = f"postgresql://tipline:VerySecretPassw0rd@127.0.0.1:{port}/tipline"
    with pytest.raises(StorageError) as caught:
        await PostgresStore.open(url, cipher)
    assert "VerySecretPassw0rd" not in str(caught.value) and "\n" not in str(caught.value)
    assert "TIPLINE_DATABASE_URL" in str(caught.value)
