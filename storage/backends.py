"""Which engine holds the data: SQLite in the data directory (the embedded default), or the
PostgreSQL server ``TIPLINE_DATABASE_URL`` names (several instances on one database)."""

from __future__ import annotations

from pathlib import Path

from storage.crypto import Cipher
from storage.interfaces import Store
from storage.opening import StorageError
from storage.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(database_url: str | None) -> bool:
    return bool(database_url) and database_url.startswith(POSTGRES_SCHEMES)


async def open_store(data_dir: Path, cipher: Cipher, database_url: str | None = None) -> Store:
    if not database_url:
        return await SqliteStore.open(data_dir, cipher)
    if not is_postgres(database_url):
        raise StorageError("TIPLINE_DATABASE_URL must start with postgresql:// (unset it to use SQLite in TIPLINE_DATA_DIR)")
    from storage.postgres import PostgresStore  # asyncpg is loaded only by deployments that use it

    return await PostgresStore.open(database_url, cipher)
