"""A throwaway PostgreSQL server for tests and bench scripts: initdb into a temporary directory,
postgres on a free port of 127.0.0.1, trust authentication for the role `tipline`, everything
removed by stop(). No Docker, no pytest import (bench/ uses it too).

    with PostgresServer() as pg:
        url = pg.create_database("bench")
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

_NOT_FOUND = (
    "PostgreSQL server binaries (initdb, postgres) not found; "
    "run `make test` (it installs them) or `scripts/ensure-postgres`"
)
_ROLE = "tipline"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # database names are spliced into SQL: keep them plain


def find_bindir() -> Path:
    """The directory holding initdb and postgres: pg_config's, else the newest Debian-style
    /usr/lib/postgresql/N/bin, else wherever initdb on PATH really lives."""

    def usable(directory: Path) -> bool:
        return (directory / "initdb").is_file() and (directory / "postgres").is_file()

    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None and out.returncode == 0 and usable(Path(out.stdout.strip())):
            return Path(out.stdout.strip())
    versions = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda bindir: [int(part) for part in re.findall(r"\d+", bindir.parent.name)],
    )
    for bindir in reversed(versions):
        if usable(bindir):
            return bindir
    if initdb := shutil.which("initdb"):
        bindir = Path(initdb).resolve().parent  # /usr/local/bin/initdb may be a symlink into the real bindir
        if usable(bindir):
            return bindir
    raise RuntimeError(_NOT_FOUND)


class PostgresServer:
    """One private PostgreSQL server. start() then stop() (idempotent, also run at exit)."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.host = "127.0.0.1"
        self.port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOST etc. of the developer
        # initdb and postgres refuse to run as root: drop to `postgres` (or `nobody`) for them.
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self._user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            else:
                raise RuntimeError("running as root and neither user `postgres` nor `nobody` exists to run PostgreSQL")

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{_ROLE}@{self.host}:{self.port}/{dbname}"

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, fsync: bool = False) -> PostgresServer:
        """initdb, then postgres; returns once it accepts connections (30 s at most).
        fsync=False turns off fsync, synchronous_commit and full_page_writes: fast, and a crash
        of the machine loses the data, which for a test server is fine."""
        if self.directory is not None:
            raise RuntimeError("this PostgresServer is already started")
        self.directory = Path(tempfile.mkdtemp(prefix="tipline-pg-"))
        atexit.register(self.stop)
        try:
            if self._user is not None:
                os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
            self._initdb()
            # The port is free when we look and taken when postgres binds it only if something
            # else grabbed it in between; then try another rather than fail the run.
            for attempt in range(3):
                self.port = _free_port(self.host)
                self._launch(fsync)
                if self._wait_ready(deadline=time.monotonic() + 30):
                    return self
                log = self._log_tail()
                if attempt < 2 and self._process is None and "could not bind" in log:
                    continue
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}; end of server.log:\n{log}")
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut), wait for it, delete the directory. Safe to repeat."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            stopped = False
            if (self.bindir / "pg_ctl").is_file():
                assert self.directory is not None
                done = self._run(
                    [self.bindir / "pg_ctl", "-D", self.directory / "data", "stop", "-m", "fast", "-w", "-t", "20"],
                    as_server_user=True,
                    check=False,
                )
                stopped = done.returncode == 0
            if not stopped:
                process.send_signal(signal.SIGINT)  # postgres' own "fast shutdown" signal
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        elif process is not None:
            process.wait()  # already dead: reap it
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresServer:
        return self.start() if self.directory is None else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql (unaligned, tuples only) and return its output; raises on any error."""
        out = self._run(
            [self.bindir / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", _ROLE, "-d", dbname, "-c", sql],
        )
        return out.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{_checked(name)}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')  # FORCE: a leaked pool must not block it

    # -- inside ----------------------------------------------------------------------------------

    def _initdb(self) -> None:
        assert self.directory is not None
        data = self.directory / "data"
        command = [self.bindir / "initdb", "-D", data, "-U", _ROLE, "--auth=trust", "--encoding=UTF8"]
        first = self._run([*command, "--locale=C.UTF-8"], as_server_user=True, check=False)
        if first.returncode != 0:  # a libc without C.UTF-8
            shutil.rmtree(data, ignore_errors=True)
            second = self._run([*command, "--locale=C"], as_server_user=True, check=False)
            if second.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{first.stdout}{first.stderr}{second.stdout}{second.stderr}")

    def _launch(self, fsync: bool) -> None:
        assert self.directory is not None
        switch = "on" if fsync else "off"
        settings = {
            "listen_addresses": self.host,
            "fsync": switch,
            "synchronous_commit": switch,
            "full_page_writes": switch,
            "max_connections": "200",
            "shared_buffers": "64MB",
        }
        command = [self.bindir / "postgres", "-D", self.directory / "data", "-p", str(self.port), "-k", self.directory]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        # Popen runs postgres itself (user= instead of su), so the object we hold is the postmaster.
        with open(self.directory / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, env=self._env, **self._as_server_user(),
            )

    def _wait_ready(self, deadline: float) -> bool:
        assert self._process is not None
        probe = (
            [self.bindir / "pg_isready", "-q", "-t", "1"]
            if (self.bindir / "pg_isready").is_file()
            else [self.bindir / "psql", "-X", "-q", "-c", "SELECT 1"]
        )
        probe += ["-h", self.host, "-p", str(self.port), "-U", _ROLE, "-d", "postgres"]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self._run(probe, check=False).returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def _log_tail(self, lines: int = 20) -> str:
        assert self.directory is not None
        try:
            text = (self.directory / "server.log").read_text(errors="replace")
        except OSError:
            return "(no server.log)"
        return "\n".join(text.splitlines()[-lines:])

    def _as_server_user(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}  # also drop root's groups

    def _run(
        self, command: list[object], as_server_user: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        extra = self._as_server_user() if as_server_user else {}
        done = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, cwd=self.directory, env=self._env, **extra,  # type: ignore[call-overload]
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{Path(str(command[0])).name} failed ({done.returncode}): {done.stderr.strip()}")
        return done


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"database name must match {_NAME.pattern}: {name!r}")
    return name


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
