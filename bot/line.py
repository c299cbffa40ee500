"""A line is its key ring and its database, made together and on purpose only: ``python main.py
init`` (or ``keygen``) makes both. ``serve`` never makes either: a data directory without them (a
volume that did not mount, a key file that was not copied) stops the start with one line saying
what is missing, instead of starting a new, empty line that answers people while the real data
sits unreadable. Only ``chat``, the local try-out (``make run``), makes both on its first run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.settings import Settings
from storage.backends import open_store
from storage.crypto import Cipher, KeyRing, KeyRingError
from storage.data_dir import DataDirLock
from storage.opening import StorageError
from storage.sqlite import DB_FILENAME

log = logging.getLogger(__name__)

NEW_LINE = "for a new line run: python main.py init"
BACK_UP = "Back up the key ring apart from the database: without it the data cannot be read, and a backup of the database alone is useless."


def _database_file(settings: Settings) -> Path | None:
    return None if settings.database else Path(settings.data_dir) / DB_FILENAME


def missing(settings: Settings) -> str | None:
    """What of the line is missing, in one line with what to do; None when both halves are there
    (as far as can be told without opening anything: PostgreSQL's schema is checked at open)."""
    keys = settings.resolved_keys_file
    has_keys = settings.keyring is not None or keys.exists()
    database = _database_file(settings)
    if database is None:
        return None if has_keys else f"key ring file {keys} does not exist: restore it (the data cannot be read without it), or {NEW_LINE}"
    if database.exists():
        return None if has_keys else (
            f"key ring file {keys} is missing but {database} exists; restore the key file (without it the data cannot be read)"
        )
    if has_keys:
        where = "TIPLINE_KEYRING is set" if settings.keyring is not None else f"the key ring {keys} is there"
        return f"no database at {database} ({where}): is the data volume mounted? (to start a new, empty line with this key ring run: python main.py init)"
    return f"no key ring ({keys}) and no database ({database}): is the data volume mounted? ({NEW_LINE})"


def load_keyring(settings: Settings, *, create: bool = False) -> KeyRing:
    """The key ring from ``TIPLINE_KEYRING`` or its file. With ``create`` (``chat``'s first local
    run: no key file and no database yet) a new one is generated with a warning; never when a
    database exists (new keys would make its data unreadable)."""
    if settings.keyring is not None:
        return KeyRing.from_json(settings.keyring.get_secret_value())
    path = settings.resolved_keys_file
    if path.exists():
        return KeyRing.load(path)
    problem = missing(settings)
    database = _database_file(settings)
    if not create or (database is not None and database.exists()):
        raise KeyRingError(problem or f"key ring file {path} does not exist ({NEW_LINE})")
    ring = KeyRing.generate()
    try:
        ring.save(path, replace=False)
    except FileExistsError:
        return KeyRing.load(path)  # another process on this data directory made it a moment ago
    log.warning("created a new key ring at %s; keep it safe and back it up apart from the database", path)
    return ring


async def init(settings: Settings, *, new_keys_only: bool = False) -> list[str]:
    """Set up a new line: the key ring (unless ``TIPLINE_KEYRING`` is set or the key file is
    already there, made by an earlier ``keygen``) and the database, empty, migrated and bound to
    the key ring. Returns what it made, to print. Refuses (``StorageError``, nothing changed) when
    the database exists; ``new_keys_only`` (``keygen``) also when the key file exists."""
    path = settings.resolved_keys_file
    database = _database_file(settings)
    if new_keys_only and path.exists():
        raise KeyRingError(f"{path} already exists; use --rotate to rotate keys")
    await _refuse_if_set_up(settings, database)
    made: list[str] = []
    lock = None if database is None else DataDirLock(Path(settings.data_dir), exclusive=True, purpose="setting up a line")
    try:
        if database is not None and database.exists():  # made meanwhile, before the lock was ours
            await _refuse_if_set_up(settings, database)
        created_keys = False
        if settings.keyring is not None:
            ring = KeyRing.from_json(settings.keyring.get_secret_value())
            made.append("key ring: the one in TIPLINE_KEYRING")
        elif path.exists():
            ring = KeyRing.load(path)
            made.append(f"key ring: the existing {path}")
        else:
            # Written before the database is made: a database is never bound to keys that were lost.
            ring = KeyRing.generate()
            ring.save(path, replace=False)
            created_keys = True
            made.append(f"key ring written to {path} (mode 0600)")
        try:
            store = await open_store(Path(settings.data_dir), Cipher(ring), settings.database, new=True)
            version = await store.schema_version()
            await store.close()
        except BaseException:
            if created_keys:
                path.unlink(missing_ok=True)  # a refusal leaves nothing behind
            raise
    finally:
        if lock is not None:
            lock.release()
    where = database if database is not None else "PostgreSQL at TIPLINE_DATABASE_URL"
    made.append(f"database created: {where} (empty, schema {version}, bound to this key ring)")
    made.append(BACK_UP)
    return made


async def _refuse_if_set_up(settings: Settings, database: Path | None) -> None:
    has_keys = settings.keyring is not None or settings.resolved_keys_file.exists()
    if database is None:
        from storage.postgres import is_set_up

        if await is_set_up(settings.database or ""):
            raise StorageError("the PostgreSQL database at TIPLINE_DATABASE_URL is already set up: nothing to do (init makes a new line only)")
        return
    if not database.exists():
        return
    if not has_keys:
        raise StorageError(
            f"{database} exists without its key ring ({settings.resolved_keys_file}): restore the key file "
            "(new keys could not read this data); for a new line, move the database away first"
        )
    if database.stat().st_size == 0:
        raise StorageError(f"{database} exists but is empty (0 bytes): restore the last backup, or remove it for a new line")
    raise StorageError(f"{database} already exists: this data directory is set up, nothing to do (init makes a new line only)")
