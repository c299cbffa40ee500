"""The polling loop on its own: the real python-telegram-bot client fetches from ``FakeTelegramAPI``
on loopback, and a small ``handle`` stands in for the channel, so each test decides which update
fails and for how long. One lane per chat: a failing update is retried in its lane, later updates
of its chat wait behind it, other chats never wait, and what was fetched is confirmed at once.
The whole app with the real channel and engine is in test_telegram_resilience.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from telegram.ext import ExtBot

from bot.channels.telegram.limits import FloodLimiter, FloodLimits
from bot.channels.telegram.polling import Outcome, Poller, fetch_raw_updates
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI, make_text_update

TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
ALICE, BOB, CAROL = 7312345601, 7312345602, 7312345603
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)


@pytest.fixture
def fake() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI(token=TOKEN, max_long_poll=0.2)
    with LoopbackServer(api.app) as server:
        api.base = server.url  # type: ignore[attr-defined]
        yield api


@pytest.fixture
async def bot(fake: FakeTelegramAPI) -> AsyncIterator[ExtBot]:
    made = ExtBot(TOKEN, base_url=f"{fake.base}/bot", rate_limiter=FloodLimiter(FAST))
    await made.initialize()
    yield made
    await made.shutdown()


class Handler:
    """Records every attempt (update id, seconds since the handler was made) and fails each
    update as many times as ``failures`` says; ``hold`` makes an attempt wait for an event."""

    def __init__(self, failures: dict[int, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.attempts: list[tuple[int, float]] = []
        self.done: list[int] = []
        self.hold: dict[int, asyncio.Event] = {}
        self.started = time.monotonic()

    async def __call__(self, data: dict[str, Any]) -> Outcome:
        update_id = data["update_id"]
        self.attempts.append((update_id, time.monotonic() - self.started))
        if update_id in self.hold:
            await self.hold[update_id].wait()
        if self.failures.get(update_id, 0) > 0:
            self.failures[update_id] -= 1
            return Outcome.RETRY
        self.done.append(update_id)
        return Outcome.DONE

    def times(self, update_id: int) -> list[float]:
        return [t for u, t in self.attempts if u == update_id]


async def no_connect() -> None:
    return None


def poller(bot: ExtBot, handle: Callable[[dict[str, Any]], Awaitable[Outcome]], **options: Any) -> Poller:
    options = {"timeout": 1.0, "update_retry_delay": 0.2, "max_attempts": 5, **options}
    return Poller(bot, handle, no_connect, allowed_updates=["message", "callback_query"], **options)


async def until(found: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        await asyncio.sleep(0.01)
    raise AssertionError("not seen in time")


async def stopped(running: Poller, task: asyncio.Task, timeout: float = 5.0) -> None:
    running.stop()
    await asyncio.wait_for(task, timeout)


async def test_a_failing_update_is_retried_in_its_lane_while_other_chats_flow(bot: ExtBot, fake: FakeTelegramAPI):
    handle = Handler(failures={1: 2})  # Alice's first update fails twice, then goes through
    for update in (make_text_update(1, ALICE, "a1"), make_text_update(2, BOB, "b1"), make_text_update(3, ALICE, "a2"), make_text_update(4, BOB, "b2")):
        fake.push_update(update)
    running = poller(bot, handle)
    task = asyncio.create_task(running.run(True))
    try:
        await until(lambda: 4 in handle.done)
        bob_done = handle.times(4)[0]
        # A new update while Alice's first one waits for its retry: fetched and handled at once.
        await asyncio.sleep(0.05)
        fake.push_update(make_text_update(5, CAROL, "c1"))
        pushed = time.monotonic() - handle.started
        await until(lambda: 3 in handle.done)
    finally:
        await stopped(running, task)

    # Bob did not wait for Alice's retries; Carol, who came during them, did not either.
    assert bob_done < 0.15, handle.attempts
    assert handle.times(5)[0] - pushed < 0.5, handle.attempts
    # Alice's update was tried three times, 0.2 s then 0.4 s apart, and handled once it passed;
    # her second update came only after it, and nobody's update was handled twice.
    first, second, third = handle.times(1)
    assert 0.18 <= second - first < 0.4 and 0.38 <= third - second < 0.7, handle.times(1)
    assert handle.times(3)[0] >= third
    assert sorted(handle.done) == [1, 2, 3, 4, 5] and len(handle.done) == 5
    assert handle.done.index(1) < handle.done.index(3) and handle.done.index(2) < handle.done.index(4)
    # Every update was confirmed to Telegram by the next fetch, the retrying one too.
    offsets = [c.get_int("offset") for c in fake.calls_of("getUpdates")]
    assert offsets[0] is None and 5 in offsets and 6 in offsets and offsets == sorted(offsets, key=lambda o: o or 0)
    assert fake.updates == [] and running.pending == 0


async def test_an_update_that_keeps_failing_is_dropped_after_five_attempts_naming_only_its_id(
    bot: ExtBot, fake: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="bot")  # the channel holds PTB's own logger at WARNING
    handle = Handler(failures={11: 99})
    fake.push_update(make_text_update(11, ALICE, "Motel Zorblatt ፩"))
    fake.push_update(make_text_update(12, ALICE, "after it"))
    running = poller(bot, handle, update_retry_delay=0.02)
    task = asyncio.create_task(running.run(True))
    try:
        await until(lambda: 12 in handle.done)
    finally:
        await stopped(running, task)

    assert [u for u, _ in handle.attempts] == [11] * 5 + [12]
    assert "telegram update 11 failed 5 times; dropped" in caplog.text
    assert str(ALICE) not in caplog.text and "Zorblatt" not in caplog.text and "፩" not in caplog.text


async def test_an_update_of_the_same_chat_waits_for_the_one_before_it(bot: ExtBot, fake: FakeTelegramAPI):
    handle = Handler()
    handle.hold[21] = asyncio.Event()
    fake.push_update(make_text_update(21, ALICE, "first"))
    fake.push_update(make_text_update(22, ALICE, "second"))
    fake.push_update(make_text_update(23, BOB, "other"))
    running = poller(bot, handle)
    task = asyncio.create_task(running.run(True))
    try:
        await until(lambda: 23 in handle.done)
        await asyncio.sleep(0.2)
        assert handle.done == [23]  # Alice's second message waits; Bob's did not
        handle.hold[21].set()
        await until(lambda: 22 in handle.done)
    finally:
        await stopped(running, task)
    assert handle.done == [23, 21, 22]


async def test_stopping_finishes_what_was_fetched_and_gives_a_waiting_retry_one_last_try(bot: ExtBot, fake: FakeTelegramAPI):
    handle = Handler(failures={32: 1})
    handle.hold[31] = asyncio.Event()
    fake.push_update(make_text_update(31, ALICE, "being handled"))
    fake.push_update(make_text_update(33, ALICE, "queued behind it"))
    fake.push_update(make_text_update(32, BOB, "waiting for a retry"))
    running = poller(bot, handle, update_retry_delay=30.0)  # a retry this far off would hold stop()
    task = asyncio.create_task(running.run(True))
    await until(lambda: len(handle.times(32)) == 1 and handle.times(31))
    started = time.monotonic()
    running.stop()
    await asyncio.sleep(0.1)
    assert not task.done()  # Alice's update is still being handled: stop waits for it
    handle.hold[31].set()
    await asyncio.wait_for(task, 5)

    assert time.monotonic() - started < 2
    assert sorted(handle.done) == [31, 32, 33]
    assert handle.done.index(31) < handle.done.index(33)
    assert len(handle.times(32)) == 2


async def test_a_batch_python_telegram_bot_cannot_parse_still_reaches_the_handler_update_by_update(bot: ExtBot, fake: FakeTelegramAPI):
    broken = make_text_update(41, ALICE, "hello")
    broken["message"]["date"] = "yesterday"
    fake.push_update(broken)
    fake.push_update(make_text_update(42, BOB, "hi"))
    with pytest.raises(TypeError):
        await bot.get_updates(timeout=0)  # PTB's own call fails on the whole batch, every time

    raw = await fetch_raw_updates(bot, None, 1.0, ["message"])
    assert [u["update_id"] for u in raw] == [41, 42] and raw[0]["message"]["date"] == "yesterday"

    handle = Handler()
    running = poller(bot, handle)
    task = asyncio.create_task(running.run(True))
    try:
        await until(lambda: len(handle.done) == 2)
    finally:
        await stopped(running, task)
    assert sorted(handle.done) == [41, 42]


async def test_an_update_without_an_id_is_skipped_and_the_rest_handled(bot: ExtBot, fake: FakeTelegramAPI):
    handle = Handler()

    def answer(params: dict[str, Any]) -> list[dict[str, Any]]:
        if params.get("offset"):
            time.sleep(0.05)  # an empty long poll, shortened
            return []
        return [{"message": {}}, {"update_id": 52, "message": {}}]

    fake.stub("getUpdates", answer)
    running = poller(bot, handle)
    task = asyncio.create_task(running.run(True))
    try:
        await until(lambda: 52 in handle.done)
    finally:
        await stopped(running, task)
    assert handle.done == [52]


async def test_fetching_waits_while_too_many_updates_are_in_hand(bot: ExtBot, fake: FakeTelegramAPI):
    handle = Handler()
    release = asyncio.Event()
    for update_id in (61, 62):
        handle.hold[update_id] = release
        fake.push_update(make_text_update(update_id, ALICE + update_id, "x"))
    running = poller(bot, handle, max_pending=2)
    task = asyncio.create_task(running.run(True))
    try:
        await until(lambda: len(handle.attempts) == 2)
        fetches = len(fake.calls_of("getUpdates"))
        fake.push_update(make_text_update(63, BOB, "y"))
        await asyncio.sleep(0.5)
        assert len(fake.calls_of("getUpdates")) == fetches and 63 not in handle.done  # no room: no fetch
        release.set()
        await until(lambda: 63 in handle.done)
    finally:
        await stopped(running, task)
