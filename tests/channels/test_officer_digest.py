"""Officer alerts under Telegram's group flood limit: the real outbox worker, store and alert
composer, and the real python-telegram-bot client against ``FakeTelegramAPI`` on loopback. Alerts
go one by one with buttons while the group's budget allows, as a digest (urgent first, within
4096 characters a message) past it, and wait for the window when even that does not fit; none is
lost and none is sent twice."""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import ExtBot

from bot.alerting import AlertComposer
from bot.channels.telegram.alerts import DIGEST_RESERVE, TelegramAlertSink, fitting, plan_messages
from bot.channels.telegram.limits import FloodLimiter, FloodLimits
from bot.i18n import Catalogues
from bot.outbox import OutboxWorker
from handlers.alerts import AlertEvent, enqueue_alert
from storage.records import OutboxItem, OutboxStatus, Tip, TipStatus
from storage.sqlite import DB_FILENAME, SqliteStore
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import ApiError, FakeTelegramAPI

TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
GROUP = -1001
SINK = f"telegram:{GROUP}"
# Telegram's group limit for real (20 a minute); the other windows never make a test wait.
GROUP_LIMIT = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=20, group_period=60.0, overall_max=1000, overall_period=0.01)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI(token=TOKEN)
    with LoopbackServer(fake.app) as server:
        fake.base = server.url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def fake(fake_server: FakeTelegramAPI) -> FakeTelegramAPI:
    fake_server.clear()
    return fake_server


@dataclass
class Desk:
    """A worker delivering officer alerts to GROUP through the Telegram sink."""

    store: SqliteStore
    worker: OutboxWorker
    fake: FakeTelegramAPI
    database: Path
    year: int = 2026

    async def queue(self, count: int, *, urgent_every: int = 0) -> list[str]:
        """``count`` tips and their alerts, committed together; their case numbers."""
        cases = []
        now = time.time()
        async with self.store.transaction() as tx:
            for n in range(count):
                urgent = bool(urgent_every) and n % urgent_every == urgent_every - 1
                tip = Tip(
                    uuid.uuid4().hex, await tx.tips.next_case_number(self.year), TipStatus.OPEN, f"sender-{n}", "sms", "en",
                    now, now, answers={"where": f"Motel Lune {n}", "kind": "labour"}, urgent=urgent,
                )  # fmt: skip
                await tx.tips.save(tip)
                await enqueue_alert(tx, tip, AlertEvent.URGENT if urgent else AlertEvent.NEW, (SINK,), now)
                cases.append(tip.case_number)
        return cases

    def texts(self) -> list[str]:
        return [m["text"] for m in self.fake.sent_messages(GROUP)]

    async def rows(self) -> list[OutboxItem]:
        """Every outbox row, oldest first."""
        with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            ids = [r[0] for r in db.execute("SELECT id FROM outbox ORDER BY seq")]
        return [await self.store.outbox.get(i) for i in ids]


@pytest.fixture
async def desk(store: SqliteStore, catalogues: Catalogues, fake: FakeTelegramAPI, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Desk]]]:
    bots: list[ExtBot] = []

    async def build(limits: FloodLimits = GROUP_LIMIT, language: str = "en") -> Desk:
        bot = ExtBot(TOKEN, base_url=f"{fake.base}/bot", rate_limiter=FloodLimiter(limits))  # type: ignore[attr-defined]
        await bot.initialize()
        bots.append(bot)
        sink = TelegramAlertSink(bot, AlertComposer(store, catalogues, language))
        return Desk(store, OutboxWorker(store, {"telegram": sink}, base_delay=0.05), fake, tmp_path / "data" / DB_FILENAME)

    yield build
    for bot in bots:
        await bot.shutdown()


def visible(message_html: str) -> str:
    """What Telegram counts of an alert message: the text without tags, entities decoded."""
    return html.unescape(re.sub(r"</?b>", "", message_html))


# --- one by one, with buttons ---------------------------------------------------------------------


@pytest.mark.parametrize(("language", "labels"), [("en", ["Acknowledge", "Show"]), ("fr", None)])
async def test_alerts_within_the_budget_go_one_by_one_with_acknowledge_and_show(desk, catalogues: Catalogues, language, labels) -> None:
    running = await desk(language=language)
    cases = await running.queue(2)

    assert await running.worker.run_once() == 2

    sent = running.fake.sent_messages(GROUP)
    assert len(sent) == 2
    for case, message in zip(cases, sent):
        headline, title = message["text"].split("\n")[:2]
        assert headline.startswith("<b>") and headline.endswith(f" — {case}</b>")
        assert title == catalogues.text(language, "alert.new", case=case)
        (row,) = message["reply_markup"]["inline_keyboard"]
        expected = labels or [catalogues.text("fr", "officer.button.ack"), catalogues.text("fr", "officer.button.show")]
        assert [(b["text"], b["callback_data"]) for b in row] == list(zip(expected, [f"o:ack:{case}", f"o:show:{case}"]))


# --- past the budget: a digest --------------------------------------------------------------------


async def test_a_burst_of_50_alerts_becomes_a_digest_urgent_first_and_loses_none(desk) -> None:
    running = await desk()
    cases = await running.queue(50, urgent_every=5)  # every 5th is urgent
    urgent = [c for n, c in enumerate(cases) if n % 5 == 4]

    started = time.monotonic()
    assert await running.worker.run_once() == 50
    assert time.monotonic() - started < 5  # nothing waited for the flood window

    texts = running.texts()
    assert 1 < len(texts) <= 20 - DIGEST_RESERVE  # several messages of ~4000 characters, far under 20
    assert all(len(visible(t)) <= 4096 for t in texts)  # Telegram counts the text after HTML parsing
    joined = "\n".join(texts)
    for case in cases:
        assert joined.count(f"case {case}") + joined.count(f"Case {case}") == 1, case  # each alert exactly once
    positions = {case: joined.find(f" {case}") for case in cases}
    assert max(positions[c] for c in urgent) < min(positions[c] for c in cases if c not in urgent)
    # A digest message holds many cases: no keyboard could name them all.
    assert all("reply_markup" not in m for m in running.fake.sent_messages(GROUP))
    assert {r.status for r in await running.rows()} == {OutboxStatus.DELIVERED}


async def test_when_the_budget_is_spent_alerts_wait_for_the_window_then_go_together(desk) -> None:
    running = await desk(FloodLimits(chat_burst=1000, chat_period=0.01, group_max=5, group_period=1.0, overall_max=1000, overall_period=0.01))

    await running.queue(2)
    assert await running.worker.run_once() == 2  # 2 fit beside the reserve of 3: one by one
    await running.queue(4)
    assert await running.worker.run_once() == 4  # 4 do not: one digest
    assert len(running.texts()) == 3
    for _ in range(2):  # the last two slots of the window, one alert each
        await running.queue(1)
        assert await running.worker.run_once() == 1
    assert len(running.texts()) == 5
    spent_at = time.monotonic()

    late = await running.queue(3)
    assert await running.worker.run_once() == 0  # none left: deferred, nothing sent
    assert len(running.texts()) == 5
    waiting = [r for r in await running.rows() if r.status is OutboxStatus.PENDING]
    assert len(waiting) == 3
    assert all(r.attempts == 0 and r.last_error == "telegram group flood budget spent" for r in waiting)
    assert all(0 < r.next_at - time.time() <= 1.0 for r in waiting)

    await asyncio.sleep(max(r.next_at for r in waiting) - time.time() + 0.02)
    assert await running.worker.run_once() == 3
    assert time.monotonic() - spent_at >= 0.5  # it did wait for the window
    last = running.texts()[-1]
    assert len(running.texts()) == 6 and all(case in last for case in late)  # one message for the three


async def test_a_failure_midway_resends_only_what_did_not_go_out(desk) -> None:
    running = await desk()
    cases = await running.queue(3)
    calls = {"n": 0}
    send = running.fake._send_message

    def second_send_fails(params: dict[str, Any]) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ApiError(502, "Bad Gateway")
        return send(params)

    running.fake.stub("sendMessage", second_send_fails)
    assert await running.worker.run_once() == 1
    await asyncio.sleep(0.1)  # past the 0.05 s backoff
    assert await running.worker.run_once() == 2

    texts = running.texts()
    assert len(texts) == 3
    for case, text in zip(cases, texts):
        assert case in text  # each alert exactly once, in order
    assert [r.attempts for r in await running.rows()] == [0, 1, 1]  # the first went out; the failure counted for the others


# --- packing --------------------------------------------------------------------------------------


@dataclass
class _Tip:
    case_number: str


@dataclass
class _Alert:
    tip: _Tip
    text: str
    pictures: int = 0


def _item(n: int) -> OutboxItem:
    return OutboxItem(f"row-{n}", SINK, {}, OutboxStatus.PENDING, 0, 0.0, 0.0)


def test_a_digest_keeps_long_alerts_whole_and_every_message_within_the_limit() -> None:
    long_text = "Case 26-0002: the tipster answered.\n" + "\n".join(f"+ line {i} " + "<&>" * 60 for i in range(60))
    alerts = [
        (_item(1), _Alert(_Tip("26-0001"), "New tip, case 26-0001\nWhere: A")),
        (_item(2), _Alert(_Tip("26-0002"), long_text)),  # three messages' worth
        (_item(3), _Alert(_Tip("26-0003"), "New tip, case 26-0003\nWhere: C")),
    ]

    plan = plan_messages(alerts, merge=True)  # type: ignore[arg-type]

    assert all(m.size <= 4000 for m in plan)
    # The long alert starts its own message; the short one after it joins its last piece.
    assert [m.completes for m in plan] == [["row-1"], [], [], ["row-2", "row-3"]]
    assert [m.open_end for m in plan] == [False, True, True, False]
    text = "".join("".join(m.parts) for m in plan)
    assert text.count("&lt;&amp;&gt;") == 60 * 60  # everything escaped, nothing lost
    # What goes now ends where an alert ends; with room for less than a whole long alert, it
    # goes whole anyway (the queue must move), and with no room nothing goes.
    assert [len(fitting(plan, room)) for room in range(6)] == [0, 1, 1, 1, 4, 4]
    assert len(fitting(plan[1:], 1)) == 3
