"""``python main.py backup FILE`` and ``restore FILE``: SQLite copies taken with SQLite's online
backup API, never a file copy (a copy of a live WAL database can miss committed pages or tear).

* A backup runs while ``serve`` runs (it takes the data dir's shared lock, like ``serve``): SQLite
  copies the pages under one read transaction, so the copy is one consistent moment, every tip
  committed before it began included. The file is created 0600, holds no WAL, and is checked
  (``PRAGMA quick_check``) before it is reported written. It is as encrypted as the database; the
  key ring is not in it and is backed up apart.
* A restore refuses while anything uses the data dir (the exclusive lock), refuses a damaged file, a
  file of a newer schema, and one written with another key ring (its key fingerprint is checked),
  then replaces the database in one rename.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from bot.line import load_keyring
from bot.settings import Settings
from storage.crypto import Cipher, KeyRingError
from storage.data_dir import DataDirLock
from storage.sqlite import DB_FILENAME, MIGRATIONS, StorageError


def _summary(db: sqlite3.Connection) -> tuple[int, int]:
    tips = db.execute("SELECT count(*) FROM tips").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    return int(tips), int(version)


def _checked(db: sqlite3.Connection, what: str) -> None:
    try:
        result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{what} is not a readable Tipline database ({exc})") from None
    if result != "ok":
        raise StorageError(f"{what} is damaged (quick_check: {result[:80]})")


def _create_private(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def backup(settings: Settings, target: Path) -> str:
    data_dir = Path(settings.data_dir)
    source = data_dir / DB_FILENAME
    if not source.exists():
        raise StorageError(f"no database at {source} to back up")
    if target.exists():
        raise StorageError(f"{target} already exists; a backup never overwrites a file")
    lock = DataDirLock(data_dir, exclusive=False)
    try:
        _create_private(target)
        try:
            with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as live, closing(sqlite3.connect(target)) as copy:
                live.backup(copy)  # all pages in one step: one read transaction, one moment
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                _checked(copy, str(target))
                tips, version = _summary(copy)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    finally:
        lock.release()
    return f"backup written to {target}: {tips} tips, schema {version}. The key ring is not in it: keep its own copy apart."


def restore(settings: Settings, source: Path) -> str:
    data_dir = Path(settings.data_dir)
    if not source.is_file():
        raise StorageError(f"no backup file at {source}")
    cipher = Cipher(load_keyring(settings))
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as backup_db:
        _checked(backup_db, str(source))
        try:
            row = backup_db.execute("SELECT value FROM meta WHERE name = 'key_fingerprint'").fetchone()
            tips, version = _summary(backup_db)
        except sqlite3.DatabaseError:
            raise StorageError(f"{source} is not a Tipline backup") from None
    if version > len(MIGRATIONS):
        raise StorageError(f"{source} is schema {version}, newer than this Tipline ({len(MIGRATIONS)})")
    if row is None or row[0] != cipher.fingerprint():
        raise KeyRingError(f"{source} was written with another key ring: restore it with the key file made for it")
    lock = DataDirLock(data_dir, exclusive=True, purpose="restoring a backup")
    try:
        target = data_dir / DB_FILENAME
        staged = data_dir / (DB_FILENAME + ".restoring")
        staged.unlink(missing_ok=True)
        _create_private(staged)
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as backup_db, closing(sqlite3.connect(staged)) as fresh:
            backup_db.backup(fresh)
            fresh.execute("PRAGMA journal_mode=DELETE")
        for leftover in (Path(f"{target}-wal"), Path(f"{target}-shm")):
            leftover.unlink(missing_ok=True)  # the replaced database's log must not be replayed onto the backup
        os.replace(staged, target)
    finally:
        lock.release()
    return f"restored {source}: {tips} tips, schema {version}"
