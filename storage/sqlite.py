"""SQLite storage on aiosqlite: WAL, synchronous=FULL, secure_delete, numbered migrations.

Two connections: a writer used only inside ``transaction()`` (one at a time, ``BEGIN IMMEDIATE``,
committed with a full fsync before a receipt is shown), and a read-only reader that sees only
committed data (WAL), so reads never observe half a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.crypto import Cipher
from storage.faults import IO_ERROR, StorageBusy, fault_reason, refine
from storage.opening import ENCRYPTED_COLUMNS, SqlRepositories, StorageError, prepare, reencrypt_all
from storage.senders import load_latest_peppers
from storage.sqlite_checks import quick_check, refuse_unusable_file, unusable
from storage.sql import DirectSqliteDb, SqliteDb

__all__ = ["DB_FILENAME", "ENCRYPTED_COLUMNS", "MIGRATIONS", "SqliteStore", "StorageError"]

log = logging.getLogger(__name__)

DB_FILENAME = "tipline.sqlite3"
_MAX_BATCH = 64  # under constant load, commit at least this often
# How long a transaction waits to start writing, first for this process's writes ahead of it, then
# (BEGIN IMMEDIATE's busy timeout) for another process holding the file's write lock; then it fails
# (StorageBusy, or SQLite's "database is locked"). A person's message must get its answer within
# Twilio's 15 s whatever holds the database, and every message queued behind a held lock must not
# wait 5 s more than the one before it.
WRITE_WAIT_SECONDS = 5.0
HEALTH_ROW = "health:write"

# Numbered migrations; PRAGMA user_version holds how many have run. Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE drafts (
        sender TEXT PRIMARY KEY,
        state BLOB NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX drafts_expiry ON drafts (expires_at);
    CREATE TABLE tips (
        id TEXT PRIMARY KEY,
        case_number TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        sender TEXT NOT NULL,
        channel TEXT NOT NULL,
        language TEXT NOT NULL,
        urgent INTEGER NOT NULL,
        minor INTEGER NOT NULL,
        complete INTEGER NOT NULL,
        contact_ok INTEGER NOT NULL,
        receipt_hash TEXT UNIQUE,
        answers BLOB NOT NULL,
        contact BLOB,
        close_reason BLOB,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX tips_status ON tips (status, urgent, created_at);
    CREATE TABLE followups (
        id TEXT PRIMARY KEY,
        tip_id TEXT NOT NULL REFERENCES tips (id) ON DELETE CASCADE,
        author TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL,
        read_at REAL
    );
    CREATE INDEX followups_tip ON followups (tip_id, created_at);
    CREATE TABLE processed (
        key TEXT PRIMARY KEY,
        replies BLOB NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX processed_at ON processed (at);
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        sink TEXT NOT NULL,
        payload BLOB NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (status, next_at);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        officer TEXT NOT NULL,
        tip_id TEXT NOT NULL,
        action TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE receipt_failures (sender TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX receipt_failures_sender ON receipt_failures (sender, at);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE message_refs (sender TEXT PRIMARY KEY, refs BLOB NOT NULL, updated_at REAL NOT NULL);
    """,
    # Drafts that could not be read or expired are moved here whole (still sealed as they were),
    # so one broken draft neither blocks its sender nor the expiry sweeper, and nothing is lost.
    """
    CREATE TABLE drafts_aside (
        id INTEGER PRIMARY KEY,
        sender TEXT NOT NULL,
        state BLOB NOT NULL,
        updated_at REAL NOT NULL,
        set_aside_at REAL NOT NULL
    );
    CREATE INDEX drafts_aside_sender ON drafts_aside (sender);
    """,
    # The keyed seal over each tip's plain columns (see storage.repositories.tip_seal); rows of
    # an older schema are sealed once by storage.opening.seal_for_integrity.
    """
    ALTER TABLE tips ADD COLUMN seal TEXT;
    """,
    # Outbox rows waiting on a target that cannot be reached until someone fixes it (the bot was
    # removed from the officer group): still pending, retried slowly, counted in /healthz.
    """
    ALTER TABLE outbox ADD COLUMN unreachable INTEGER NOT NULL DEFAULT 0;
    """,
    # Provider ids are kept as keyed hashes only (a year, to refuse replays); the replies given
    # are cached apart, for hours, so a retry gets the same answer and nothing more is kept.
    # The old table held raw ids and 7 days of replies: dropped (a retry of a message handled
    # before the upgrade is handled again).
    """
    DROP TABLE processed;
    CREATE TABLE processed (key TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE INDEX processed_at ON processed (at);
    CREATE TABLE cached_replies (
        key TEXT PRIMARY KEY REFERENCES processed (key) ON DELETE CASCADE,
        sender TEXT,
        replies BLOB NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX cached_replies_sender ON cached_replies (sender);
    CREATE INDEX cached_replies_at ON cached_replies (at);
    """,
    # Tipster pseudonyms that expire (storage.senders): one random pepper per epoch, sealed with
    # the key ring's AES key; only the current and the previous epoch's are ever kept.
    """
    CREATE TABLE pseudonym_peppers (epoch INTEGER PRIMARY KEY, pepper BLOB NOT NULL);
    """,
    # Pictures sent with a report, stripped of their metadata and sealed (storage.pictures). While
    # the report is a draft they belong to its sender (``owner``), so EXIT erases them even when the
    # draft cannot be read; a filed report's are the case's (``tip_id``) and name no sender.
    """
    CREATE TABLE pictures (
        id TEXT PRIMARY KEY,
        owner TEXT,
        tip_id TEXT,
        created_at REAL NOT NULL,
        image BLOB NOT NULL
    );
    CREATE INDEX pictures_owner ON pictures (owner);
    CREATE INDEX pictures_tip ON pictures (tip_id, created_at);
    """,
    # An outbox row claimed for delivery is leased (storage.outbox.SqlOutboxRepository.claim),
    # the same column PostgreSQL uses to share the outbox between instances.
    """
    ALTER TABLE outbox ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    """,
    # A new row's seq is max(seq) + 1: without an index that read the whole outbox every time.
    """
    CREATE INDEX outbox_seq ON outbox (seq);
    """,
    # Each sink's lane reads its pending rows, and an officer target keeps its order (an earlier
    # row of the same target waiting holds back the later ones): both look rows up by sink.
    """
    CREATE INDEX outbox_sink ON outbox (sink, status, seq);
    """,
)

class SqliteStore:
    def __init__(self, path: Path, cipher: Cipher, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self.shared = False  # see storage.interfaces.Store.shared
        self.cipher = cipher
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._queued = 0  # transactions waiting for the write lock (they will join the open batch)
        self._batch: asyncio.Future[None] | None = None
        self._batch_size = 0
        self._flush_tasks: set[asyncio.Future[None]] = set()
        self._held: list[Any] = []  # lock files held by exclusive()
        self.commits = 0  # COMMITs issued (group commit makes this smaller than the transactions)
        # Statements run on the loop's thread (storage.sql.DirectSqliteDb): reads of the WAL never
        # block, nor do a write transaction's statements; BEGIN and COMMIT go to aiosqlite's thread.
        self._read = SqlRepositories.over(DirectSqliteDb(reader._conn, retry_busy=True), cipher)
        self._write = SqlRepositories.over(DirectSqliteDb(writer._conn), cipher)
        self._unit = writer._conn  # SAVEPOINT / RELEASE / ROLLBACK TO: no I/O, no trip
        self.drafts = self._read.drafts
        self.tips = self._read.tips
        self.followups = self._read.followups
        self.processed = self._read.processed
        self.outbox = self._read.outbox
        self.audit = self._read.audit
        self.receipt_attempts = self._read.receipt_attempts
        self.message_refs = self._read.message_refs
        self.peppers = self._read.peppers
        self.senders = self._read.senders
        self.pictures = self._read.pictures

    @classmethod
    async def open(cls, data_dir: Path, cipher: Cipher, *, create: bool = True, new: bool = False) -> SqliteStore:
        """Open (checked: ``storage.sqlite_checks``) and migrate the database in ``data_dir``.
        ``create``: make it when there is none, and bind it to ``cipher``'s key ring (``chat``,
        ``init``, tests); without it a missing or unbound database is refused (``open_store``'s
        default, so ``serve`` never starts a new line). ``new``: there must be none (``init``)."""
        path = data_dir / DB_FILENAME
        if new and path.exists():
            raise StorageError(f"{path} already exists: this data directory is set up (init makes a new line only)")
        try:
            if refuse_unusable_file(path, create=create or new):
                data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                path.touch(mode=0o600)  # the WAL and shm files inherit these permissions
            # check_same_thread=False: statements also run on the loop thread (see __init__), never at once.
            writer = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise unusable(path, exc) from None
        try:
            # journal_size_limit: a WAL reset by a checkpoint is cut to nothing, not left holding
            # earlier versions of pages (an erased draft) until they happen to be overwritten.
            pragmas = ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON", "foreign_keys=ON", "busy_timeout=5000", "journal_size_limit=0")
            for pragma in pragmas:
                await writer.execute(f"PRAGMA {pragma}")
            await quick_check(writer, path)
            await _migrate(writer)
            await writer.execute("BEGIN IMMEDIATE")
            try:
                # prepare also writes a row: a file SQLite opened read-only fails here, at start-up.
                await prepare(SqliteDb(writer), cipher, bind=create or new)
                # One process per data directory: a lease left by a process that died is void.
                await writer.execute("UPDATE outbox SET lease_until = 0 WHERE lease_until > 0")
            except BaseException:
                await writer.execute("ROLLBACK")
                raise
            await writer.execute("COMMIT")
            await load_latest_peppers(SqliteDb(writer), cipher)
            reader = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            await reader.execute("PRAGMA busy_timeout=0")  # a busy read waits in DirectSqliteDb, not in SQLite
            await reader.execute("PRAGMA query_only=ON")
        except (sqlite3.Error, OSError) as exc:
            await writer.close()
            raise unusable(path, exc) from None
        except BaseException:
            await writer.close()
            raise
        return cls(path, cipher, writer, reader)

    @asynccontextmanager
    async def transaction(self, *, lock: tuple[str, ...] = (), wait: float = WRITE_WAIT_SECONDS) -> AsyncIterator[SqlRepositories]:
        """One unit of work, durable when the ``async with`` block exits.

        Group commit: transactions that queue up while one is running share a single COMMIT (one
        fsync), each inside its own SAVEPOINT so a failing one rolls back alone. Every caller still
        waits for the COMMIT of its batch before it goes on, so "committed before acknowledged"
        holds exactly as with one COMMIT per transaction; it just costs one fsync per batch.

        ``lock`` (senders whose messages must not interleave) needs nothing here: one process
        writes, one transaction at a time.

        ``wait``: at most how long to wait before writing starts (see WRITE_WAIT_SECONDS)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self._queued += 1
        acquired = False
        try:
            try:
                # wait_for, not asyncio.timeout: a lock granted as the time runs out is returned, never leaked.
                await asyncio.wait_for(self._write_lock.acquire(), wait)
            except TimeoutError:
                raise StorageBusy(f"the database was busy for {wait:.0f}s") from None
            try:
                self._queued -= 1
                acquired = True
                if self._batch is None:
                    # What is left of the deadline is how long BEGIN may wait for another process.
                    busy_ms = max(0, int((deadline - loop.time()) * 1000))
                    await self._statements(f"PRAGMA busy_timeout={busy_ms}", "BEGIN IMMEDIATE")
                    self._batch = loop.create_future()
                    self._batch_size = 0
                batch = self._batch
                self._batch_size += 1
                self._unit.execute("SAVEPOINT unit").close()
                try:
                    yield self._write
                except BaseException as exc:
                    if not self._unit.in_transaction:
                        # SQLite rolled the whole transaction back itself (SQLITE_FULL, an I/O
                        # error mid-statement): the batch is gone, with what others put in it.
                        self._abandon_batch(exc)
                        raise
                    self._unit.execute("ROLLBACK TO unit").close()
                    self._unit.execute("RELEASE unit").close()
                    await self._commit_if_last()
                    raise
                self._unit.execute("RELEASE unit").close()
                await self._commit_if_last()
            finally:
                self._write_lock.release()
        finally:
            if not acquired:
                # Cancelled while queued: whoever counted on us to commit the batch did not.
                self._queued -= 1
                self._flush_tasks.add(task := asyncio.ensure_future(self._flush()))
                task.add_done_callback(self._flush_tasks.discard)
        await batch

    async def _statements(self, *sql: str) -> None:
        """Parameterless statements, in order, in ONE trip to the writer's thread. (aiosqlite's
        public calls take one statement each; its own helpers are built on ``_execute``, which
        runs a function there: each trip costs a thread hand-off, more than the statement.)"""
        await self._writer._execute(_run_statements, self._writer._conn, sql)

    async def _commit_if_last(self) -> None:
        """Commit the open batch when nobody else is queued to join it (or it is large)."""
        if not self._queued or self._batch_size >= _MAX_BATCH:
            await self._commit_batch()

    async def _flush(self) -> None:
        async with self._write_lock:
            if not self._queued:
                await self._commit_batch()

    async def _commit_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            await self._statements("COMMIT")  # the fsync: in aiosqlite's thread
            self.commits += 1
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self._writer.execute("ROLLBACK")
            batch.set_exception(exc if isinstance(exc, Exception) else RuntimeError("commit interrupted"))
            batch.exception()  # mark retrieved: the waiters re-raise it themselves
            raise
        batch.set_result(None)

    def _abandon_batch(self, exc: BaseException) -> None:
        """The open batch ended without a COMMIT: every transaction that joined it fails with
        ``exc`` (none of it was written), and the next one begins afresh."""
        batch, self._batch = self._batch, None
        if batch is not None and not batch.done():
            batch.set_exception(exc if isinstance(exc, Exception) else RuntimeError("transaction interrupted"))
            batch.exception()  # mark retrieved: the waiters re-raise it themselves

    async def exclusive(self, name: str) -> bool:
        """Hold ``name`` for as long as this store is open, alone among the processes on this data
        directory (a lock file; the kernel frees it when the process ends); False when another
        holds it."""
        handle = open(self.path.parent / f"{name}.lock", "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._held.append(handle)
        return True

    async def once(self, name: str, fingerprint: str, action: Callable[[], Awaitable[None]]) -> bool:
        """Run ``action`` unless it already ran for this ``fingerprint``; True when it ran now.
        (One process writes a SQLite database, so nobody else decides meanwhile.)"""
        row = await self._read.db.one("SELECT value FROM meta WHERE name = ?", (f"once:{name}",))
        if row is not None and row[0] == fingerprint:
            return False
        await action()
        async with self.transaction() as tx:
            await tx.db.run(
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (f"once:{name}", fingerprint),
            )
        return True

    async def forget_once(self, name: str) -> None:
        async with self.transaction() as tx:
            await tx.db.run("DELETE FROM meta WHERE name = ?", (f"once:{name}",))

    async def healthy(self) -> bool:
        try:
            async with self._reader.execute("SELECT 1") as cursor:
                return (await cursor.fetchone()) == (1,)
        except Exception:  # noqa: BLE001 - health checks report, they do not raise
            return False

    async def write_check(self, wait: float = 2.0) -> str | None:
        """Whether the database takes a write: one tiny row committed (a WAL frame and its fsync),
        waiting at most ``wait`` for a lock. None when it did, else why not ("disk full",
        "read-only", "locked", "I/O error"). A COMMIT stuck in a hung disk is not bounded here:
        the caller waits for this without cancelling it (a cancelled COMMIT would fail the batch
        it shares with other transactions)."""
        try:
            async with self.transaction(wait=wait) as tx:
                await tx.db.run(
                    "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (HEALTH_ROW, f"{time.time():.0f}"),
                )
        except Exception as exc:  # noqa: BLE001 - health checks report, they do not raise
            return refine(fault_reason(exc) or IO_ERROR, self.path.parent)
        return None

    async def schema_version(self) -> int:
        async with self._reader.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def reencrypt_all(self) -> int:
        """Re-seal every encrypted value still under an old key with the active key."""
        return await reencrypt_all(self)

    async def checkpoint(self) -> bool:
        """Fold the WAL into the database file and cut it to zero bytes, so no earlier version of
        a page (an erased draft, a purged tip) survives in it. Run after an erase or a purge, and
        periodically. False when a reader kept it from completing (it is retried next time)."""
        async with self._write_lock:
            await self._commit_batch()
            async with self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                busy, _, _ = await cursor.fetchone()
        if busy:
            log.warning("WAL checkpoint could not complete (a reader was busy); retried at the next one")
        return not busy

    async def close(self) -> None:
        async with self._write_lock:
            await self._commit_batch()
        for handle in self._held:
            handle.close()
        self._held.clear()
        await self._reader.close()
        await self._writer.close()


async def _migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StorageError(f"the database schema is version {version}, newer than this Tipline ({len(MIGRATIONS)})")
    for number in range(version, len(MIGRATIONS)):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number + 1}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        log.info("database migrated to schema version %d", number + 1)


def _run_statements(conn: sqlite3.Connection, statements: tuple[str, ...]) -> None:
    for sql in statements:
        conn.execute(sql).close()
