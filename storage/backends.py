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


async def open_store(data_dir: Path, cipher: Cipher, database_url: str | None = None, *, create: bool = False, new: bool = False) -> Store:
    """The line's database, which must exist and be bound to ``cipher``'s key ring: a missing one is
    refused, never made (``create``: ``chat``'s first local run; ``new``: ``init``)."""
    if not database_url:
        return await SqliteStore.open(data_dir, cipher, create=create, new=new)
    if not is_postgres(database_url):
        raise StorageError("TIPLINE_DATABASE_URL must start with postgresql:// (unset it to use SQLite in TIPLINE_DATA_DIR)")
    from storage.postgres import PostgresStore  # asyncpg is loaded only by deployments that use it

    return await PostgresStore.open(database_url, cipher, create=create, new=new)
