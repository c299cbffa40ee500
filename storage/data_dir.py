"""The data directory: private from its first byte, and locked while something runs on it.

``serve`` and ``chat`` hold a shared lock on ``tipline.lock`` for as long as they run; ``keygen
--rotate`` needs it exclusively, so it refuses while they run (a row written by a running server
after the re-encryption pass would stay under the old key) and they refuse to start during a
rotation. ``backup`` shares it with a running server.

On SQLite, ``serve``, ``chat`` and ``purge`` also hold ``running.lock`` exclusively (``OneProcess``):
a second one on the same data directory stops with one line naming the holder, instead of two
servers sending every alert twice. (Several instances on one database are PostgreSQL's job.)
``flock`` locks go with the process, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
from pathlib import Path

from storage.opening import StorageError

log = logging.getLogger(__name__)

LOCK_FILENAME = "tipline.lock"


class DataDirBusy(Exception):
    """Another Tipline process holds the data directory in a way that excludes this one."""


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by its owner only (0700) before anything is written in it; an
    existing directory open to others is closed to them."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o700)
            log.warning("data directory %s was readable by others (mode %o); it is now 0700", path, mode)
    except OSError as exc:
        raise unwritable(path, exc) from None
    return path


def unwritable(path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"the data directory {path} cannot be written ({exc.strerror}): check its owner and mode, "
        "and that the volume is mounted read-write"
    )


class DataDirLock:
    def __init__(self, data_dir: Path, *, exclusive: bool, purpose: str = "rotating keys") -> None:
        private_dir(data_dir)
        try:
            self._file = open(data_dir / LOCK_FILENAME, "a")  # noqa: SIM115 - held for the process's run
        except OSError as exc:
            raise unwritable(data_dir, exc) from None
        try:
            fcntl.flock(self._file, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DataDirBusy(
                f"{data_dir} is in use: stop serve and chat before {purpose}"
                if exclusive
                else f"{data_dir} is locked by a key rotation (keygen --rotate); start again when it is done"
            ) from None

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


RUNNING_FILENAME = "running.lock"


class OneProcess:
    """The data directory's one running process (SQLite): who holds it is written in the lock file,
    so a second one can say whom it found."""

    def __init__(self, data_dir: Path, role: str) -> None:
        private_dir(data_dir)
        path = data_dir / RUNNING_FILENAME
        try:
            self._file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's run
        except OSError as exc:
            raise unwritable(data_dir, exc) from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another Tipline process"
            self._file.close()
            raise DataDirBusy(
                f"{data_dir} is in use by {holder}; one process per data directory "
                "(stop it first, or use PostgreSQL, TIPLINE_DATABASE_URL, for several instances)"
            ) from None
        os.chmod(path, 0o600)
        self._file.seek(0)
        # Emptied by release(): a line still here was left by a process that did not stop cleanly
        # (killed, or the machine lost power). storage.sqlite_checks.note_unclean_stop reads it.
        self.previous = self._file.read().strip()
        self._file.seek(0)
        self._file.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self._file.write(f"{role} (pid {os.getpid()}, since {since})\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
