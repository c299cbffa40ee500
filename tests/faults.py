"""Real storage failures for tests, made with SQLite's own mechanisms (no mock): a database that
may not grow (SQLITE_FULL, "database or disk is full"), and a write lock held by another process
(SQLITE_BUSY, "database is locked"). A read-only database is ``PRAGMA query_only=ON`` on the
writer, which holds for root too (file modes do not)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.sqlite import SqliteStore


async def full(store: SqliteStore) -> None:
    """The disk is full: the database may not grow by one page (VACUUM first, so no free page is
    left to reuse). Every write that needs a page fails with SQLite's own SQLITE_FULL."""
    async with store._write_lock:
        await store._commit_batch()
        await store._writer.execute("VACUUM")
        async with store._writer.execute("PRAGMA page_count") as cursor:
            (pages,) = await cursor.fetchone()
        await store._writer.execute(f"PRAGMA max_page_count={pages}")


async def space_back(store: SqliteStore) -> None:
    await store._writer.execute("PRAGMA max_page_count=1073741823")


@contextmanager
def lock_held_by_another_process(path: Path) -> Iterator[subprocess.Popen]:
    """Another process holds the database's write lock (BEGIN IMMEDIATE) until it is stopped."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.read()"
        ), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
