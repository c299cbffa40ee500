"""What the SQL repositories need from a database connection, so one set of repositories (and so
one set of encrypted columns and associated data) serves SQLite and PostgreSQL alike.

SQL is written once, with ``?`` placeholders; the PostgreSQL adapter numbers them. The little that
differs between the two engines is a property of the connection: how to say "no limit", the
row-locking clause a claim uses, and ``lock`` (a PostgreSQL advisory lock held to the end of the
transaction; nothing on SQLite, where one writer already excludes every other).
"""

from __future__ import annotations

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
    """aiosqlite, one hop to its thread per read (``execute_fetchall``)."""

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
        cursor = await self.conn.execute(sql, params)
        changed = cursor.rowcount
        await cursor.close()
        return changed

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def lock(self, key: str) -> None:
        return None  # the writer connection is the only one, and a transaction holds it whole
