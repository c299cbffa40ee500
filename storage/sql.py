"""What the SQL repositories need from a database connection, so one set of repositories (and so
one set of encrypted columns and associated data) serves SQLite and PostgreSQL alike.

SQL is written once, with ``?`` placeholders; the PostgreSQL adapter numbers them. The little that
differs between the two engines is a property of the connection: how to say "no limit", the
row-locking clause a claim uses, and ``lock`` (a PostgreSQL advisory lock held to the end of the
transaction; nothing on SQLite, where one writer already excludes every other).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import aiosqlite

Row = tuple[Any, ...]


class Db(Protocol):
    no_limit: int | None  # the LIMIT parameter that means "all rows"
    skip_locked: str  # appended to a claim's SELECT: rows another instance holds are passed over

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...
    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute a write; how many rows it changed."""
        ...

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def lock(self, key: str) -> None:
        """Serialise this transaction with every other one that locks ``key``, to its end."""
        ...


class SqliteDb:
    """aiosqlite, one trip to its thread per statement (a read's rows, or a write's row count)."""

    no_limit = -1
    skip_locked = ""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.conn.execute_fetchall(sql, params)
        return tuple(rows[0]) if rows else None

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self.conn.execute_fetchall(sql, params)]

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        # One trip, like execute_fetchall (aiosqlite's own helpers run through _execute too).
        return await self.conn._execute(_rowcount, self.conn._conn, sql, params)

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def lock(self, key: str) -> None:
        return None  # the writer connection is the only one, and a transaction holds it whole


def _rowcount(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    cursor = conn.execute(sql, params)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


class DirectSqliteDb:
    """A SQLite connection used on the event loop's own thread, for statements that cannot block:
    reads of a WAL database, and the statements of a transaction that already holds the write
    lock (they touch only the page cache; the COMMIT's fsync is what blocks, and it goes to
    aiosqlite's thread). No trip to another thread, which costs more than the statement does.

    ``retry_busy``: a reader that meets a lock (a checkpoint truncating the WAL) waits without
    blocking the loop, a few milliseconds at a time, instead of SQLite's busy wait."""

    no_limit = -1
    skip_locked = ""

    def __init__(self, conn: sqlite3.Connection, *, retry_busy: bool = False) -> None:
        self.conn = conn
        self._retry_busy = retry_busy

    async def _do(self, work: Any) -> Any:
        delay = 0.002
        for _ in range(200):
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not (self._retry_busy and ("locked" in str(exc) or "busy" in str(exc))):
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return work()

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._do(lambda: self.conn.execute(sql, params).fetchone())

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._do(lambda: self.conn.execute(sql, params).fetchall())

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._do(lambda: _rowcount(self.conn, sql, params))

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        await self._do(lambda: self.conn.executemany(sql, rows).close())

    async def lock(self, key: str) -> None:
        return None  # see SqliteDb.lock
