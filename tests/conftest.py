"""Shared fixtures: a key ring, an open store on a temporary data directory, an engine with a
controllable clock, and settings built from a dict (never from the developer's environment)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# python-telegram-bot warns about timedelta defaults unless this is set (warnings are errors).
os.environ.setdefault("PTB_TIMEDELTA", "1")

from bot.engine import Engine  # noqa: E402
from bot.i18n import Catalogues  # noqa: E402
from bot.rate_limit import RateLimiter  # noqa: E402
from bot.settings import Settings  # noqa: E402
from handlers.turn import ConversationConfig  # noqa: E402
from storage.crypto import Cipher, KeyRing  # noqa: E402
from storage.sqlite import DB_FILENAME, SqliteStore  # noqa: E402

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer


HEALTH_TOKEN = "health-token-for-tests-0123456789"
HEALTH_HEADERS = {"Authorization": f"Bearer {HEALTH_TOKEN}"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TIPLINE_* variable or .env of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("TIPLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def cipher(keyring: KeyRing) -> Cipher:
    return Cipher(keyring)


@pytest.fixture
def catalogues() -> Catalogues:
    return Catalogues.load()


@pytest.fixture
async def store(tmp_path: Path, cipher: Cipher) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "data", cipher)
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(store: SqliteStore, cipher: Cipher, catalogues: Catalogues, clock: Clock) -> Engine:
    # The clock stands still in these tests, so the flood limit would never refill: lift it here;
    # tests/bot/test_rate_limit.py sets its own.
    return Engine(store, cipher, catalogues, ConversationConfig(), clock=clock, monotonic=clock, rate_limiter=RateLimiter(burst=10_000))


def set_up_line(settings: Settings) -> None:
    """``python main.py init`` for these settings (the key ring and the database), from sync or
    async code alike: its own event loop, in a thread. Nothing when the line is already there."""
    from bot.line import init, missing

    if missing(settings) is None:
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, init(settings)).result()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from keyword overrides, data in the test's temporary directory, with a line set up
    in it as ``python main.py init`` makes one (``serve`` never makes one itself); ``init=False``
    leaves the data directory as it is."""

    def build(*, init: bool = True, **values: object) -> Settings:
        values.setdefault("data_dir", tmp_path / "data")
        server = values.setdefault("server", {})
        if isinstance(server, dict):
            server.setdefault("health_token", HEALTH_TOKEN)  # tests read /healthz/detail with it
        settings = Settings(_env_file=None, **values)
        # A database already there (the ``store`` fixture's, whose key ring is in memory) is left as it is.
        if init and not settings.database and not (settings.data_dir / DB_FILENAME).exists():
            set_up_line(settings)
        return settings

    return build


# -- a real PostgreSQL server (tests/postgres_server.py) ------------------------------------------
# Imported inside the fixtures: a run that never asks for them never looks for PostgreSQL.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway server for the whole run (fsync off); missing binaries fail, never skip."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer().start(fsync=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)
