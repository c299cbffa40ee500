"""What a storage failure is, in a word: "disk full", "read-only", "locked", "I/O error" or
"unreachable". The engine answers a person calmly when their message could not be stored, /healthz
says why it is degraded, and the log says it once a minute; all three need the same words, for
SQLite and PostgreSQL alike.

A failure that is not the storage's (a bug, a draft that cannot be read) has no reason here: it is
contained and logged as before, with its outline.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import asyncpg

DISK_FULL = "disk full"
READ_ONLY = "read-only"
LOCKED = "locked"
IO_ERROR = "I/O error"
UNREACHABLE = "unreachable"
REASONS = (DISK_FULL, READ_ONLY, LOCKED, IO_ERROR, UNREACHABLE)


class StorageBusy(TimeoutError):
    """A write could not start in time: another writer (a process holding the SQLite write lock,
    a PostgreSQL row or advisory lock) kept it waiting past the deadline."""


# SQLite's primary result codes (the low byte of the extended code Python exposes).
_SQLITE = {
    13: DISK_FULL,  # SQLITE_FULL: "database or disk is full"
    8: READ_ONLY,  # SQLITE_READONLY: "attempt to write a readonly database"
    5: LOCKED,  # SQLITE_BUSY: "database is locked"
    6: LOCKED,  # SQLITE_LOCKED
    10: IO_ERROR,  # SQLITE_IOERR (EROFS and EIO on the WAL alike; see refine)
    14: IO_ERROR,  # SQLITE_CANTOPEN (the WAL or shm cannot be created)
    11: IO_ERROR,  # SQLITE_CORRUPT: a torn page read back is the disk's fault, not the message's
    26: IO_ERROR,  # SQLITE_NOTADB
}
_SQLITE_WORDS = (("disk is full", DISK_FULL), ("readonly", READ_ONLY), ("locked", LOCKED), ("busy", LOCKED), ("disk i/o", IO_ERROR))
_ERRNO = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EROFS: READ_ONLY, errno.EIO: IO_ERROR}
_POSTGRES: tuple[tuple[type[BaseException], str], ...] = (
    (asyncpg.DiskFullError, DISK_FULL),
    (asyncpg.ReadOnlySQLTransactionError, READ_ONLY),
    (asyncpg.LockNotAvailableError, LOCKED),  # lock_timeout
    (asyncpg.QueryCanceledError, LOCKED),  # statement_timeout: in practice a wait on a lock
    (asyncpg.DeadlockDetectedError, LOCKED),
    (asyncpg.exceptions.PostgresIOError, IO_ERROR),
    (asyncpg.InsufficientResourcesError, DISK_FULL),  # class 53: disk full, out of memory, too many connections
    (asyncpg.PostgresConnectionError, UNREACHABLE),
    (asyncpg.exceptions.AdminShutdownError, UNREACHABLE),
    (asyncpg.exceptions.CannotConnectNowError, UNREACHABLE),
    (asyncpg.exceptions.ConnectionDoesNotExistError, UNREACHABLE),  # the connection was closed under us
)


def fault_reason(exc: BaseException) -> str | None:
    """The storage reason behind ``exc`` (or whatever caused it), or None when it is not one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _one(current)
        if reason is not None:
            return reason
        current = current.__cause__ or current.__context__
    return None


def _one(exc: BaseException) -> str | None:
    if isinstance(exc, StorageBusy):
        return LOCKED
    if isinstance(exc, sqlite3.Error) and not isinstance(exc, (sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.InterfaceError)):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in _SQLITE:
            return _SQLITE[code & 0xFF]
        text = str(exc).lower()  # SQLite's own words, never a value (no parameter is quoted in them)
        return next((reason for word, reason in _SQLITE_WORDS if word in text), None)
    for kind, reason in _POSTGRES:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    if isinstance(exc, ConnectionError):
        return UNREACHABLE
    return None


def refine(reason: str, directory: Path) -> str:
    """An "I/O error" said more truly when the file system of ``directory`` is read-only or has no
    room left (SQLite reports EROFS and ENOSPC on its WAL as a plain I/O error)."""
    if reason != IO_ERROR:
        return reason
    try:
        found = os.statvfs(directory)
    except OSError:
        return reason
    if found.f_flag & os.ST_RDONLY:
        return READ_ONLY
    if found.f_bavail == 0:
        return DISK_FULL
    return reason
