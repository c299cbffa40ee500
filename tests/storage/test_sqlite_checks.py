"""The evidence of a deleted write-ahead log, on real files: what ``note_unclean_stop`` says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage.sqlite_checks import note_unclean_stop

HOLDER = "serve (pid 4242, since 2026-12-07 11:00:00 UTC)"


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "storage.sqlite_checks"]


@pytest.mark.parametrize(
    ("previous", "files", "level", "words"),
    [
        ("", (), None, ""),  # stopped cleanly: the log folded in and removed
        (HOLDER, ("-wal", "-shm"), logging.WARNING, "is replayed"),  # killed: SQLite recovers from the log
        (HOLDER, (), logging.ERROR, "did not stop cleanly but the write-ahead log"),  # killed, and the log deleted
        (HOLDER, ("-shm",), logging.ERROR, "is missing"),
        ("", ("-shm",), logging.ERROR, "-shm is there but the write-ahead log"),  # an index without its log
    ],
    ids=["clean", "killed", "killed-wal-deleted", "killed-wal-deleted-shm-left", "shm-without-wal"],
)
def test_what_an_unclean_stop_or_a_deleted_log_says(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, previous: str, files: tuple[str, ...], level: int | None, words: str
) -> None:
    path = tmp_path / "tipline.sqlite3"
    path.write_bytes(b"x")
    for suffix in files:
        Path(f"{path}{suffix}").write_bytes(b"")
    with caplog.at_level(logging.INFO):
        note_unclean_stop(path, previous)
    said = _said(caplog)
    if level is None:
        assert said == []
    else:
        assert len(said) == 1 and said[0][0] == level and words in said[0][1], said
        assert ("serve (pid 4242" in said[0][1]) == bool(previous)  # who it was (the log filter masks the time)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tipline.sqlite3", *(f"tipline.sqlite3{s}" for s in files)])


def test_no_database_yet_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        note_unclean_stop(tmp_path / "tipline.sqlite3", HOLDER)
    assert _said(caplog) == []
