"""What SQLite start-up checks before anything relies on the database file, each failure one line
that says what is wrong and what to do (never a traceback, never a new empty database in place of
one that is missing, empty or damaged).

* ``refuse_unusable_file``: no file (is the volume mounted?), a 0-byte file, a file that cannot be
  read, or whose mode says its owner may not read or write it;
* ``quick_check``: ``PRAGMA quick_check`` must say "ok" (a damaged file is refused, not served);
* ``unusable``: SQLite's own errors ("file is not a database", "attempt to write a readonly
  database", …) as a ``StorageError`` naming the file and the remedy;
* ``note_unclean_stop``: the previous run was killed (its line is still in ``running.lock``) and
  its write-ahead log is gone, or a ``-shm`` is there without its ``-wal``: the writes since the
  last checkpoint are lost. Logged as an ERROR, and the line starts: see the function.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from storage.opening import StorageError

log = logging.getLogger(__name__)

NEW_LINE = "for a new line run: python main.py init"
RESTORE = "restore the last backup (python main.py restore FILE)"


def refuse_unusable_file(path: Path, *, create: bool) -> bool:
    """Whether the file must be created (only when ``create``). A missing file without ``create``,
    a 0-byte file, a directory or a file this process cannot read: ``StorageError``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if create:
            return True
        raise StorageError(f"no database at {path}: is the data volume mounted? ({NEW_LINE})") from None
    except OSError as exc:
        raise StorageError(f"the database {path} cannot be reached ({exc.strerror}): check the data directory's owner and mode") from None
    if not path.is_file():
        raise StorageError(f"{path} is not a database file")
    mode = path.stat().st_mode & 0o777
    if mode & 0o600 != 0o600:
        # Tipline makes it 0600. A file its owner may not write would be written anyway as root
        # (which ignores permissions) and refused elsewhere: refused the same way everywhere.
        why = "its owner may not read it" if not mode & 0o400 else "its owner may not write it"
        raise StorageError(f"the database {path} has mode {mode:03o} ({why}): make it 0600 (chmod 600 {path})")
    if size == 0:
        # SQLite would take a 0-byte file for a new, empty database: a truncated copy, a failed
        # restore or an unmounted volume's stub would silently become a new line.
        raise StorageError(
            f"the database {path} is empty (0 bytes), which a Tipline database never is: {RESTORE}; "
            f"if this really is a new line, remove the file and run: python main.py init"
        )
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise StorageError(f"the database {path} cannot be read ({exc.strerror}): check its owner and mode") from None
    return False


def unusable(path: Path, exc: sqlite3.Error | OSError) -> StorageError:
    """SQLite's (or the file system's) refusal, as one line saying what to do. SQLite's messages
    name no data, only the condition."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc) if isinstance(exc, sqlite3.Error) else (exc.strerror or str(exc))
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or isinstance(exc, PermissionError):
        return StorageError(
            f"the database {path} cannot be written ({text}): check the owner and mode of the file and of "
            "its directory, and that the volume is not mounted read-only"
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return StorageError(f"the database {path} is damaged ({text}): {RESTORE}")
    if name.startswith("SQLITE_FULL"):
        return StorageError(f"the database {path} cannot be written: the disk is full")
    return StorageError(f"the database {path} cannot be used ({text}): check the disk and the volume, or {RESTORE}")


async def quick_check(conn: object, path: Path) -> None:
    """``PRAGMA quick_check`` (an aiosqlite connection): every page and index readable and
    consistent, in seconds even for a large file; anything but "ok" refuses the start."""
    async with conn.execute("PRAGMA quick_check") as cursor:  # type: ignore[attr-defined]
        rows = [str(r[0]) for r in await cursor.fetchall()]
    if rows != ["ok"]:
        found = "; ".join(rows[:3])[:300]
        raise StorageError(f"the database {path} is damaged (quick_check: {found}): {RESTORE}")


def note_unclean_stop(path: Path, previous: str) -> None:
    """Called before the database is opened. ``previous``: the line a process that did not stop
    cleanly left in ``running.lock`` ("serve (pid 4242, since …)"), or "".

    A SQLite process that is killed leaves its ``-wal`` behind (committed transactions not yet in
    the main file live only there) and replays it at the next open; one that stops cleanly folds
    it in and removes both the ``-wal`` and the ``-shm``. So after an unclean stop a missing
    ``-wal``, or at any time a ``-shm`` without its ``-wal``, means the log was deleted (by hand,
    by a clean-up job, by a copy that left it out) and what it held is lost: tips, receipts and
    alerts since the last checkpoint (at most an hour, less after an EXIT or a purge).

    It is logged as an ERROR, and the line starts anyway: refusing would not bring the log back
    (a log restored later no longer matches the file and SQLite ignores it), the file itself has
    just passed ``quick_check`` or is refused for failing it, and the people who text the line
    need it up. The operator must hear of it: the ERROR says what was lost and what to do."""
    if not path.exists():
        return
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if wal.exists():
        if previous:
            log.warning("the previous run (%s) did not stop cleanly; its write-ahead log is replayed", previous)
        return
    if previous or shm.exists():
        why = f"the previous run ({previous}) did not stop cleanly" if previous else f"{shm.name} is there"
        log.error(
            "%s but the write-ahead log %s is missing: it was deleted, and the tips, receipts and alerts "
            "written since the last checkpoint (up to an hour) are lost. Find who deleted it (a clean-up job, a copy "
            "without it) and stop it; compare the officers' alerts with `python main.py tips list`",
            why, wal.name,
        )  # fmt: skip
