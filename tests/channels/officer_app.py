"""Serving Tipline's real app for the officer tests: the app on loopback with its lifespan, the
fake Bot API, and the people using it (the officers' group, a tipster's private chat). Fixtures
here are imported by name by the test modules that use them."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from bot.channels import registry
from bot.channels.telegram import channel as telegram
from bot.channels.telegram.limits import FloodLimits
from bot.runtime import Runtime
from bot.settings import Settings
from bot.web import create_app
from storage.sqlite import DB_FILENAME
from tests.channels.test_telegram_app import CHAT, OFFICERS, SECRET, TOKEN, Tipline
from tests.channels.test_twilio_sms import PUBLIC_URL
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI, make_callback_update, make_text_update

T = TypeVar("T")
OFFICER = 424242  # Telegram user ids of people in the officers' group
NOT_AN_OFFICER = 515151
OTHER_GROUP = -100777
# Telegram's real group limit (20 a minute); private chats and the overall limit never make a test wait.
LIMITS = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=20, group_period=60.0, overall_max=1000, overall_period=0.01)
_update_ids = itertools.count(500_000)  # one sequence for every group update (the engine de-duplicates by id)


def next_update_id() -> int:
    return next(_update_ids)


@dataclass
class Running:
    """One served Tipline app."""

    server: LoopbackServer
    app: Starlette
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the app's event loop, where its database connection lives."""
        loop = self.runtime.tasks[0].get_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=10)

    def outbox(self, sink_prefix: str) -> list[sqlite3.Row]:
        with closing(sqlite3.connect(f"file:{self.data_dir / DB_FILENAME}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            return db.execute("SELECT * FROM outbox WHERE sink LIKE ? ORDER BY seq", (sink_prefix + "%",)).fetchall()

    def settled(self, timeout: float = 5.0) -> None:
        """Wait until every officer alert queued so far has gone out (so what the group sees next
        is the answer to what an officer types, not a late alert)."""
        deadline = time.monotonic() + timeout
        while any(r["status"] == "pending" for r in self.outbox("telegram")):
            assert time.monotonic() < deadline, "alerts still pending"
            time.sleep(0.02)

    def rows(self, table: str) -> int:
        with closing(sqlite3.connect(f"file:{self.data_dir / DB_FILENAME}?mode=ro", uri=True)) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@dataclass
class Group:
    """A Telegram group as its members use it: typing, and pressing buttons under the bot's messages."""

    fake: FakeTelegramAPI
    url: str
    chat: int = OFFICERS

    def post(self, update: dict[str, Any]) -> int:
        response = httpx.post(f"{self.url}/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=20)
        return response.status_code

    def sent(self) -> list[dict[str, Any]]:
        return self.fake.sent_messages(self.chat)

    def type(self, text: str, user: int = OFFICER) -> list[dict[str, Any]]:
        """``user`` types ``text`` in the group; what the bot said in the group in answer."""
        before = len(self.sent())
        update = make_text_update(next_update_id(), self.chat, text, user_id=user, chat_type="supergroup", first_name="Officer")
        assert self.post(update) == 200
        return self.sent()[before:]

    def press(self, data: str, user: int = OFFICER) -> list[dict[str, Any]]:
        """``user`` presses the button with callback ``data`` under the newest message that has it."""
        with self.fake._lock:
            holders = [
                message_id
                for (chat, message_id), msg in self.fake.messages.items()
                if chat == str(self.chat) and any(b.get("callback_data") == data for row in msg.get("reply_markup", {}).get("inline_keyboard", []) for b in row)
            ]
        assert holders, f"no button {data}"
        before = len(self.sent())
        update = make_callback_update(next_update_id(), self.chat, data, max(holders), user_id=user, chat_type="supergroup")
        assert self.post(update) == 200
        return self.sent()[before:]

    def wait_for(self, found: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := found():
                return result
            time.sleep(0.02)
        raise AssertionError("not seen in time")

    def alert(self, title: str) -> dict[str, Any]:
        """Wait for the alert whose second line (what happened, under the bold headline) is ``title``."""
        return self.wait_for(lambda: next((m for m in self.sent() if m["text"].startswith("<b>") and f"</b>\n{title}" in m["text"]), None))


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeTelegramAPI, str]]:
    fake = FakeTelegramAPI(token=TOKEN, max_long_poll=0.2)
    with LoopbackServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def fake(fake_server: tuple[FakeTelegramAPI, str]) -> FakeTelegramAPI:
    fake_server[0].clear()  # no memory of earlier tests: calls, messages, stubs, outages
    return fake_server[0]


@pytest.fixture
def serve(make_settings: Callable[..., Settings], fake_server, fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Serve Tipline's app with Telegram on the fake (and any other settings); stopped at the end."""
    fast = partial(telegram.build, limits=LIMITS, retry_delay=0.05, poll_timeout=1.0)
    monkeypatch.setattr(registry, "FACTORIES", [fast if f is telegram.build else f for f in registry.FACTORIES])
    stack = ExitStack()

    def start(officers: dict[str, Any] | None = None, **values: Any) -> Running:
        values.setdefault("public_url", PUBLIC_URL)
        settings = make_settings(
            telegram={"token": TOKEN, "api_url": fake_server[1], "webhook_secret": SECRET},
            officers={"telegram_chat_ids": [OFFICERS], "telegram_user_ids": [OFFICER], **(officers or {})},
            **values,
        )
        app = create_app(settings)
        server = stack.enter_context(LoopbackServer(app, lifespan="on"))
        return Running(server, app, tmp_path / "data")

    with stack:
        yield start


def tipster(fake: FakeTelegramAPI, running: Running, chat: int = CHAT) -> Tipline:
    # Update ids of the tipster's own sequence, apart from the groups' (the engine de-duplicates by id).
    return Tipline(fake, running.url, running.data_dir, chat=chat, next_update=chat % 100_000)


def file_urgent_tip(person: Tipline) -> None:
    """The quickest alert: "someone is in danger now" raises an URGENT alert at once."""
    person.say("/start")
    person.press("c:1")


def case_of(running: Running) -> str:
    (tip,) = running.on_server(running.runtime.store.tips.list(None, limit=10))
    return tip.case_number


