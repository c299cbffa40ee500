"""``python main.py serve`` never starts a new line on its own, and stops in one line (no traceback)
on anything it would otherwise serve broken: a data directory without its key ring or its database,
a 0-byte, damaged or read-only database, an unreadable or corrupt key file, a key ring that is not
the database's. ``init`` (and ``keygen``) make a line, once. Real subprocesses on real files.

Files a process cannot write or read, as root (these tests run as root here, maybe not in CI):
root ignores permission bits, so as root the server is started without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (dropped from its bounding set), which makes a 0400 file as read-only to it
as to any user; not as root, chmod alone does it. The same test runs either way.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

from storage.crypto import KeyRing
from storage.sqlite import DB_FILENAME
from tests.reliability.support import MAIN, ServeProcess, free_port, main_py, serve_environment

REFUSAL = "tipline cannot start:"
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_root_overrides() -> None:
    """In the child, before exec: permission bits apply to it even as root."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def refusal(data_dir: Path, *, permissions_apply: bool = False, **settings: str) -> str:
    """Run ``serve`` on ``data_dir``: it must stop, with exactly one refusal line and no
    traceback; returns that line."""
    env = serve_environment(data_dir, free_port(), **settings)
    extra = {"preexec_fn": _without_root_overrides} if permissions_apply and os.geteuid() == 0 else {}
    cwd = next(p for p in data_dir.parents if p.exists())
    done = subprocess.run(
        [sys.executable, str(MAIN), "serve"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, **extra
    )
    lines = [line for line in done.stderr.splitlines() if REFUSAL in line]
    assert done.returncode != 0, done.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return lines[0].split(REFUSAL, 1)[1].strip()


def contents(folder: Path) -> dict[str, bytes] | None:
    """Every file under ``folder`` and its bytes (None: no folder at all)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def init(data_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return main_py(["init"], serve_environment(data_dir, free_port(), **settings), data_dir.parent)


def new_line(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    done = init(data)
    assert done.returncode == 0, done.stderr
    return data


# --- no silent new line -------------------------------------------------------------------------


def test_serve_on_a_missing_data_dir_refuses_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "volume" / "data"
    line = refusal(data)
    assert "no key ring" in line and "no database" in line and "is the data volume mounted?" in line and "python main.py init" in line
    assert not (tmp_path / "volume").exists()


def test_serve_on_an_empty_data_dir_refuses_and_writes_nothing_in_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()  # a mount point whose volume did not mount
    line = refusal(data)
    assert "is the data volume mounted?" in line
    assert contents(data) == {}


def test_keys_without_a_database_refuse(tmp_path: Path) -> None:
    data = tmp_path / "data"
    KeyRing.generate().save(data / "keys.json")
    before = contents(data)
    line = refusal(data)
    assert f"no database at {data / DB_FILENAME}" in line and "key ring" in line and "python main.py init" in line
    assert contents(data) == before
    listing = main_py(["tips", "list"], serve_environment(data, free_port()), tmp_path)  # nor does any other command make one
    assert listing.returncode == 2 and not (data / DB_FILENAME).exists()


def test_a_database_without_its_key_ring_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    (data / "keys.json").unlink()
    before = contents(data)
    line = refusal(data)
    assert "key ring file" in line and "is missing but" in line and "restore the key file" in line
    assert contents(data) == before
    assert not (data / "keys.json").exists()


def test_a_keyring_in_the_environment_without_a_database_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    line = refusal(data, TIPLINE_KEYRING=KeyRing.generate().to_json().replace("\n", ""))
    assert "no database" in line and "TIPLINE_KEYRING is set" in line
    assert not data.exists()


def test_init_makes_both_then_serve_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = init(data)
    assert done.returncode == 0, done.stderr
    assert f"key ring written to {data / 'keys.json'}" in done.stdout and "database created" in done.stdout
    assert "Back up the key ring apart" in done.stdout
    assert (data / "keys.json").stat().st_mode & 0o777 == 0o600 and (data / DB_FILENAME).stat().st_size > 0
    server = ServeProcess.start(lambda port: serve_environment(data, port), tmp_path / "serve.log", tmp_path)
    try:
        assert server.health()["database"] is True
    finally:
        server.stop()
    assert "cannot start" not in server.log()
    assert (data / "running.lock").read_text() == ""  # it stopped cleanly


def test_init_twice_refuses_and_changes_nothing(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    before = contents(data)
    again = init(data)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert contents(data) == before


def test_keygen_also_makes_the_database_and_init_adopts_an_earlier_key_file(tmp_path: Path) -> None:
    made = main_py(["keygen"], serve_environment(tmp_path / "a", free_port()), tmp_path)
    assert made.returncode == 0 and (tmp_path / "a" / DB_FILENAME).exists(), made.stderr
    ring = KeyRing.generate()
    ring.save(tmp_path / "b" / "keys.json")  # a key file made before init existed
    done = init(tmp_path / "b")
    assert done.returncode == 0 and "the existing" in done.stdout, done.stderr
    assert KeyRing.load(tmp_path / "b" / "keys.json").to_json() == ring.to_json()


# --- a database that cannot be served -----------------------------------------------------------


def test_a_zero_byte_database_refuses_never_a_new_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    KeyRing.generate().save(data / "keys.json")
    (data / DB_FILENAME).touch()
    line = refusal(data)
    assert "is empty (0 bytes)" in line and "restore" in line
    assert (data / DB_FILENAME).stat().st_size == 0
    assert init(data).returncode == 2 and (data / DB_FILENAME).stat().st_size == 0  # nor does init take it


def test_random_bytes_for_a_database_refuse(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    (data / DB_FILENAME).write_bytes(os.urandom(64 * 1024))
    line = refusal(data)
    assert "is damaged" in line and "file is not a database" in line and "restore" in line


def test_a_database_damaged_mid_file_fails_quick_check_and_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    path = data / DB_FILENAME
    raw = bytearray(path.read_bytes())
    page = 4096
    pages = len(raw) // page
    for number in range(2, pages):  # every page but the header's: b-tree headers become noise
        raw[number * page : number * page + 16] = os.urandom(16)
    path.write_bytes(bytes(raw))
    line = refusal(data)
    assert "is damaged" in line and "restore the last backup" in line


def test_a_read_only_database_file_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    (data / DB_FILENAME).chmod(0o400)
    line = refusal(data, permissions_apply=True)
    assert "has mode 400 (its owner may not write it)" in line and str(data / DB_FILENAME) in line


def test_a_database_sqlite_cannot_write_refuses_at_the_start_not_at_the_first_message(tmp_path: Path) -> None:
    """The files the locks need are there, the directory is read-only: SQLite opens the database
    but cannot write (its -wal and -shm cannot be made). The start-up write finds it."""
    data = new_line(tmp_path)
    (data / "running.lock").touch(mode=0o600)
    data.chmod(0o500)
    try:
        line = refusal(data, permissions_apply=True)
    finally:
        data.chmod(0o700)
    assert f"the database {data / DB_FILENAME} cannot be written" in line and "read-only" in line


def test_a_read_only_data_dir_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    data.chmod(0o500)
    try:
        line = refusal(data, permissions_apply=True)
    finally:
        data.chmod(0o700)
    assert "cannot be written" in line and str(data) in line


def test_an_unreadable_database_file_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    (data / DB_FILENAME).chmod(0o000)
    line = refusal(data, permissions_apply=True)
    assert "has mode 000" in line and "chmod 600" in line


# --- a key ring that cannot be used -------------------------------------------------------------


def test_an_unreadable_key_file_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    (data / "keys.json").chmod(0o000)
    line = refusal(data, permissions_apply=True)
    assert "key ring file" in line and ("cannot be read" in line or "its owner may not read it" in line)


def test_a_key_file_others_may_write_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    (data / "keys.json").chmod(0o666)
    line = refusal(data)
    assert "has mode 666 (others may write it)" in line and "chmod 600" in line


def test_a_corrupt_key_file_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    keys = data / "keys.json"
    keys.write_text(keys.read_text()[:40])
    line = refusal(data)
    assert f"key ring file {keys} is unusable" in line and "not valid JSON" in line


def test_a_key_ring_that_is_not_the_databases_refuses(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    keys = data / "keys.json"
    keys.unlink()
    KeyRing.generate().save(keys)
    line = refusal(data)
    assert "does not match this database" in line
    assert json.loads(keys.read_text())["format"] == "tipline-keyring/1"


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_postgres_without_a_schema_refuses_then_init_makes_it_and_serve_starts(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "data"
    KeyRing.generate().save(tmp_path / "keys.json")
    settings = {"TIPLINE_DATABASE_URL": postgres_url, "TIPLINE_KEYS_FILE": str(tmp_path / "keys.json")}
    line = refusal(data, **settings)
    assert "has no Tipline schema" in line and "python main.py init" in line
    done = init(data, **settings)
    assert done.returncode == 0 and "PostgreSQL at TIPLINE_DATABASE_URL" in done.stdout, done.stderr
    again = init(data, **settings)
    assert again.returncode == 2 and "already set up" in again.stderr
    server = ServeProcess.start(lambda port: serve_environment(data, port, **settings), tmp_path / "serve.log", tmp_path)
    try:
        assert server.health()["database"] is True
    finally:
        server.stop()


# --- a write-ahead log deleted after a crash ----------------------------------------------------


def test_a_wal_deleted_after_a_kill_is_an_error_line_and_the_line_stays_up(tmp_path: Path) -> None:
    data = new_line(tmp_path)
    first = ServeProcess.start(lambda port: serve_environment(data, port), tmp_path / "first.log", tmp_path)
    first.kill()  # SIGKILL: its line stays in running.lock, its -wal stays on disk
    assert (data / "running.lock").read_text().startswith("serve (pid ")
    (data / f"{DB_FILENAME}-wal").unlink()  # `rm *-wal`, a clean-up job, a copy that left it out
    second = ServeProcess.start(lambda port: serve_environment(data, port), tmp_path / "second.log", tmp_path)
    try:
        assert second.health()["database"] is True  # still answering the people who text it
    finally:
        second.stop()
    errors = [line for line in second.log().splitlines() if " ERROR " in line and "is missing" in line]
    assert len(errors) == 1 and "did not stop cleanly" in errors[0] and f"{DB_FILENAME}-wal" in errors[0], second.log()[-2000:]
    third = ServeProcess.start(lambda port: serve_environment(data, port), tmp_path / "third.log", tmp_path)
    third.stop()
    assert "is missing" not in third.log() and "did not stop cleanly" not in third.log()  # a clean stop says nothing
