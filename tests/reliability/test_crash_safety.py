"""Crash safety: ``python main.py serve`` killed with SIGKILL in the middle of many SMS and Telegram
conversations loses nothing, files nothing twice, resumes every draft and sends every alert once.

Run alone (about 15 s)::

    .venv/bin/python -m pytest tests/reliability/test_crash_safety.py -q -p no:cacheprovider

The figures (conversations in flight at the kill, receipts, tips, alerts) are kept as the test's
user properties; ``-o junit_family=xunit1 --junitxml=report.xml`` writes them out.

What happens, all on loopback:

1. The fake Twilio REST API and the fake Telegram Bot API run in this process (their records of
   what the server sent survive the server's death). ``main.py serve`` runs as a subprocess with
   both channels on, officer alerts to a Telegram group and to an on-call officer's SMS.
2. 30 SMS conversations (signed webhooks) and 6 Telegram conversations (webhook updates with the
   secret header) run concurrently, staggered, with a little think time. Some send their report,
   some say EXIT, some stop half-way, some answer "danger: yes" (an urgent alert at once), one
   stops right after that.
3. Once several receipts are out, the server gets SIGKILL. Every conversation then stands either
   between two messages or with one request in flight (sent, never answered); the last few have
   not started.
4. Before restarting, the data directory is opened here with the key file: every receipt handed
   out so far is already a stored tip, and every cut conversation's draft sits at the step its
   committed answers lead to.
5. The server restarts on the same data directory. Each cut conversation re-sends its unanswered
   request with the SAME MessageSid / update_id (as Twilio and Telegram retry) and must get the
   prompt that answer leads to (the engine's de-duplicated answer when it had committed), then
   finishes.
6. Once the outbox drains: one receipt per report sent, each matching its own stored tip; no
   sender has two tips; drafts left half-way are still there; the Telegram group and the
   officer's phone got exactly one alert per event.

Exactly-once delivery to an outside API cannot survive a kill between "the API accepted the alert"
and "the outbox row is marked delivered": that row is sent again after the restart (at least once
beats lost for an alert about someone in danger). The test finds such rows in the database at the
kill and allows them, and only them, a second copy.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.crypto import Cipher, KeyRing
from storage.records import TipStatus
from storage.sqlite import DB_FILENAME, SqliteStore
from tests.conftest import HEALTH_HEADERS
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI, make_text_update
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.reliability.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BOT_TOKEN,
    CATALOGUES,
    FROM_NUMBER,
    OFFICER_CHAT,
    OFFICER_NUMBER,
    RECEIPT,
    SECRET_HEADER,
    SMS_PATH,
    TELEGRAM_PATH,
    WEBHOOK_SECRET,
    ServeProcess,
    norm,
    serve_environment,
    shows,
    sms_form,
    twilio_signature,
    twiml_messages,
)

TELEGRAM_CONVERSATIONS = 6
KILL_AFTER_RECEIPTS = 4  # SMS receipts out before the kill: alerts are in motion by then too
START_EVERY = 0.04  # seconds between two conversations' first messages (they overlap heavily)
THINK = (0.02, 0.1)  # seconds a person pauses between messages (a script would be faster)
SEED = 20260401
TITLE_UNDER_HEADLINE = re.compile(r"<b>[^<]*</b>\n([^\n]*)")


@dataclass(frozen=True)
class Step:
    said: str
    expects: tuple[str, ...]  # catalogue keys the answer must show
    draft_step: str | None  # the draft's step once this answer is committed (None: no draft)


def _step(said: str, *expects: str, draft: str | None) -> Step:
    return Step(said, expects, draft)


# DESIGN §2 in English, typed (numbers work as text on both channels).
REPORT = [
    _step("2", "role.question", draft="role"),  # danger: no
    _step("2", "kind.question", draft="kind"),  # a witness
    _step("2", "minors.question", draft="minors"),  # forced work
    _step("2", "where.question", draft="where"),  # no minor
    _step("Motel Lune, 12 rue Fictive", "when.question", draft="when"),
    _step("3", "details.question", draft="details"),  # this week
    _step("A grey van parks there at night", "details.more", draft="details"),
    _step("DONE", "contact.question", draft="contact"),
    _step("1", "review.question", draft="review"),  # officers may reply
    _step("1", "submitted.receipt", draft=None),  # send
]
SMS_OPENING = _step("Hello", "safety.notice", "danger.question", draft="danger")
TELEGRAM_OPENING = _step("/start", "safety.notice", "danger.question", draft="danger")
URGENT = _step("1", "danger.urgent", "where.question", draft="where")  # danger: yes → urgent alert now, Where next
URGENT_REPORT = [
    _step("Motel Lune, 12 rue Fictive", "role.question", draft="role"),  # written to the case at once: an update
    *REPORT[1:3],  # a witness; forced work (an update)
    _step("2", "when.question", draft="when"),  # no minor; the place is known already
    *REPORT[5:],
]
# Update alerts an urgent report raises in the group while it fills in: the place, then the kind.
URGENT_UPDATES = 2
FLOWS: dict[str, list[Step]] = {
    "report": [SMS_OPENING, *REPORT],
    "urgent report": [SMS_OPENING, URGENT, *URGENT_REPORT],
    "urgent, then silence": [SMS_OPENING, URGENT],  # an open urgent case, the draft left waiting
    "exit": [SMS_OPENING, *REPORT[:7], _step("EXIT", "erased", draft=None)],
    "unfinished": [SMS_OPENING, *REPORT[:6]],  # stops at the details question; the draft waits
    "telegram report": [TELEGRAM_OPENING, *REPORT],
}
# Telegram takes about 20 messages a minute in a group; past that the alert sink rightly holds alerts
# back for up to a minute (and a hold survives a restart). The alerts of this run stay within one
# process's budget (20 less the sink's reserve of 3), so the outbox drains at once after the restart.
GROUP_BUDGET = 17
SMS_FLOWS = ["report", "exit", "unfinished"] * 6 + ["exit", "unfinished"] * 4
SMS_FLOWS[2:2] = ["urgent report"]
SMS_FLOWS[6:6] = ["urgent, then silence"]
FILES_A_TIP = {"report", "urgent report", "urgent, then silence", "telegram report"}
URGENT_FLOWS = {"urgent report", "urgent, then silence"}


@dataclass
class Request:
    step: int
    provider_id: str  # MessageSid or update_id: the same on a retry
    payload: dict[str, Any]


@dataclass
class Conversation:
    channel: str  # "sms" or "telegram"
    address: str  # phone number or chat id (the provider identity)
    flow: str
    acked: int = 0  # answers whose reply came back
    inflight: Request | None = None  # sent, never answered
    started: bool = False
    committed_inflight: list[dict[str, Any]] | None = None  # stored replies, when it had committed
    receipts: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Step]:
        return FLOWS[self.flow]

    @property
    def done(self) -> bool:
        return self.acked == len(self.steps)


class Driver:
    """Talks to the server as Twilio and Telegram would, and keeps score."""

    def __init__(self, fake_telegram: FakeTelegramAPI) -> None:
        self.telegram = fake_telegram
        self.update_ids = iter(range(500_000, 10**9))
        self.client: httpx.AsyncClient | None = None

    def request(self, conv: Conversation) -> Request:
        step = conv.steps[conv.acked]
        if conv.channel == "sms":
            payload = sms_form(conv.address, step.said)
            return Request(conv.acked, payload["MessageSid"], payload)
        update_id = next(self.update_ids)
        payload = make_text_update(update_id, int(conv.address), step.said, message_id=update_id, first_name="Anya", username="anya_k")
        return Request(conv.acked, str(update_id), payload)

    async def send(self, conv: Conversation, request: Request) -> str:
        """The whole reply (every message of it) as one text; raises httpx.TransportError when
        the server is gone."""
        assert self.client is not None
        if conv.channel == "sms":
            response = await self.client.post(
                SMS_PATH, data=request.payload, headers={"X-Twilio-Signature": twilio_signature(request.payload)}
            )
            if response.status_code != 200:
                conv.problems.append(f"step {request.step}: HTTP {response.status_code}")
                return ""
            return " ".join(twiml_messages(response))
        before = len(self.telegram.sent_messages(conv.address))
        response = await self.client.post(
            TELEGRAM_PATH,
            content=json.dumps(request.payload),
            headers={SECRET_HEADER: WEBHOOK_SECRET, "content-type": "application/json"},
        )
        if response.status_code != 200:
            conv.problems.append(f"step {request.step}: HTTP {response.status_code}")
        return " ".join(m["text"] for m in self.telegram.sent_messages(conv.address)[before:])

    def check(self, conv: Conversation, request: Request, reply: str) -> None:
        step = conv.steps[request.step]
        missing = [key for key in step.expects if not shows(key, reply)]
        if missing:
            conv.problems.append(f"step {request.step} ({step.said!r}): reply lacks {missing}: {reply[:160]!r}")
        conv.receipts.update(RECEIPT.findall(reply))

    async def talk(self, conv: Conversation, stop: asyncio.Event, rng: random.Random) -> None:
        """Answer step after step until the flow ends or the server dies."""
        while not conv.done and not stop.is_set():
            request = conv.inflight or self.request(conv)
            conv.inflight = request
            try:
                reply = await self.send(conv, request)
            except httpx.TransportError:
                return  # the server died: the request stays in flight
            self.check(conv, request, reply)
            conv.inflight = None
            conv.acked += 1
            await asyncio.sleep(rng.uniform(*THINK))


def telegram_receipts(fake: FakeTelegramAPI, chat: str) -> set[str]:
    """Every receipt the person's phone received: read from the fake, which outlived the server."""
    return {code for message in fake.sent_messages(chat) for code in RECEIPT.findall(message["text"])}


def telegram_alert_titles(fake: FakeTelegramAPI) -> Counter[str]:
    """Alert titles in the officers' group: the line under each alert's one bold headline (what the
    tipster typed is escaped, so it cannot add bold), and a digest message holds several alerts."""
    return Counter(html.unescape(title) for m in fake.sent_messages(OFFICER_CHAT) for title in TITLE_UNDER_HEADLINE.findall(m["text"]))


def sms_alert_titles(fake: FakeTwilioAPI) -> Counter[str]:
    """Alert titles on the on-call officer's phone: the first line of each SMS."""
    return Counter(m["Body"].split("\n", 1)[0] for m in fake.sent() if m["To"] == OFFICER_NUMBER)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTelegramAPI, str, FakeTwilioAPI, str]]:
    telegram = FakeTelegramAPI(token=BOT_TOKEN)
    twilio = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    with LoopbackServer(telegram.app) as telegram_server, LoopbackServer(twilio.app) as twilio_server:
        yield telegram, telegram_server.url, twilio, twilio_server.url


async def test_sigkill_mid_load_loses_nothing_and_files_nothing_twice(
    tmp_path: Path, fakes, servers: list[ServeProcess], request: pytest.FixtureRequest
) -> None:
    fake_telegram, telegram_url, fake_twilio, twilio_url = fakes
    data_dir = tmp_path / "data"
    began = time.monotonic()

    def start_server(*, init: bool = False) -> ServeProcess:
        def environment(port: int) -> dict[str, str]:
            return serve_environment(
                data_dir,
                port,
                TIPLINE_LOG_LEVEL="WARNING",
                TIPLINE_TWILIO__ACCOUNT_SID=ACCOUNT_SID,
                TIPLINE_TWILIO__AUTH_TOKEN=AUTH_TOKEN,
                TIPLINE_TWILIO__FROM_NUMBER=FROM_NUMBER,
                TIPLINE_TWILIO__API_URL=twilio_url,
                TIPLINE_TELEGRAM__TOKEN=BOT_TOKEN,
                TIPLINE_TELEGRAM__API_URL=telegram_url,
                TIPLINE_TELEGRAM__MODE="webhook",
                TIPLINE_TELEGRAM__WEBHOOK_SECRET=WEBHOOK_SECRET,
                TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS=str(OFFICER_CHAT),
                TIPLINE_OFFICERS__SMS_NUMBERS=OFFICER_NUMBER,
            )

        server = ServeProcess.start(environment, tmp_path / "serve.log", tmp_path, init=init)
        servers.append(server)
        health = server.health()
        assert health["channels"] == ["sms", "telegram"] and health["database"], health
        return server

    conversations = [Conversation("sms", f"+1514555{i:04d}", flow) for i, flow in enumerate(SMS_FLOWS)] + [
        Conversation("telegram", str(7_100_000_001 + i), "telegram report") for i in range(TELEGRAM_CONVERSATIONS)
    ]
    alerts_total = sum(1 for c in conversations if c.flow in FILES_A_TIP - {"urgent, then silence"}) + sum(
        1 for c in conversations if c.flow in URGENT_FLOWS
    ) + URGENT_UPDATES * sum(1 for c in conversations if c.flow == "urgent report")
    assert alerts_total <= GROUP_BUDGET
    driver = Driver(fake_telegram)

    def handed_out(conv: Conversation) -> set[str]:
        # On Telegram a receipt reached the phone once sendMessage carried it, answered or not.
        return conv.receipts | (telegram_receipts(fake_telegram, conv.address) if conv.channel == "telegram" else set())

    rng = random.Random(SEED)

    # --- 1. load, then SIGKILL ---------------------------------------------------------------------
    first = start_server(init=True)  # a new line: python main.py init, then serve
    stop = asyncio.Event()

    async def run(conv: Conversation, delay: float, seed: int) -> None:
        await asyncio.sleep(delay)
        if stop.is_set():
            return  # not started before the kill: the whole conversation happens after the restart
        conv.started = True
        await driver.talk(conv, stop, random.Random(seed))

    def sms_receipts() -> int:
        return sum(1 for c in conversations if c.channel == "sms" and c.receipts)

    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        driver.client = client
        # Telegram conversations first (Telegram paces replies to a chat, so they stay in progress),
        # then the SMS ones, one every START_EVERY: at the kill some are done, many half-way, and
        # the last ones not started yet (they start after the restart).
        telegram_first = sorted(conversations, key=lambda c: c.channel != "telegram")
        tasks = [
            asyncio.create_task(run(conv, i * START_EVERY, rng.randrange(2**32))) for i, conv in enumerate(telegram_first)
        ]
        await wait_until(lambda: sms_receipts() >= KILL_AFTER_RECEIPTS, 30, "receipts before the kill")
        first.kill()
        stop.set()  # conversations between two messages stop there, like people whose phone died
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    killed_at = time.monotonic()

    cut = [c for c in conversations if not c.done]
    in_flight = [c for c in cut if c.inflight is not None]
    half_way = [c for c in cut if c.started and c.acked]
    receipts_before_kill = {c.address: handed_out(c) for c in conversations}
    assert all(not c.problems for c in conversations), {c.address: c.problems for c in conversations if c.problems}
    # The kill must really have cut conversations, with requests in the air, or this proves nothing.
    assert len(half_way) >= 10 and len(in_flight) >= 5, (len(half_way), len(in_flight))

    # --- 2. the data directory as the kill left it --------------------------------------------------
    cipher = Cipher(KeyRing.load(data_dir / "keys.json"))

    def pseudonym(conv: Conversation) -> str:
        return cipher.tipster_pseudonyms(conv.channel, conv.address).current

    store = await SqliteStore.open(data_dir, cipher)
    try:
        # Durable before acknowledged: whatever receipt reached a phone is already a stored tip.
        for conv in conversations:
            for code in receipts_before_kill[conv.address]:
                tip = await store.tips.by_receipt_hash(cipher.lookup_hash("receipt", code.replace("-", "")))
                assert tip is not None and tip.sender == pseudonym(conv), (conv.address, code)
        committed_in_flight = 0
        for conv in cut:
            committed = conv.acked
            if conv.inflight is not None:
                key = f"{conv.channel}:{conv.inflight.provider_id}"
                conv.committed_inflight = await store.processed.replies_for(key)
                if conv.committed_inflight is not None:
                    committed += 1
                    committed_in_flight += 1
            # Where each cut conversation stood: its draft is at the step its committed answers
            # lead to (a request that never committed left no trace).
            draft = await store.drafts.get(pseudonym(conv))
            expected_step = conv.steps[committed - 1].draft_step if committed else None
            assert (draft.state["step"] if draft else None) == expected_step, (conv.address, conv.flow, committed)
        # Alerts the fakes already received but whose rows were not yet marked delivered: the one
        # case where a second copy after the restart is correct (see the module docstring).
        pending_alerts, resend_allowed = await alerts_in_a_providers_hands(store, fake_telegram, fake_twilio)
    finally:
        await store.close()

    # --- 3. restart on the same data directory and finish every conversation ----------------------
    second = start_server()
    resent = 0

    async def resume(conv: Conversation) -> None:
        nonlocal resent
        if conv.inflight is not None:
            # Twilio / Telegram retry the unanswered request, with the same id.
            resent += 1
            request = conv.inflight
            reply = await driver.send(conv, request)
            driver.check(conv, request, reply)
            if conv.committed_inflight is not None:
                # It had committed before the kill: the engine answers what it answered then
                # (Telegram follows a receipt with its offer to delete the chat, which is not stored).
                stored, got = norm(" ".join(r["text"] for r in conv.committed_inflight)), norm(reply)
                if not (got == stored or (conv.channel == "telegram" and got.startswith(stored))):
                    conv.problems.append(f"re-sent step {request.step} got {got[:120]!r}, not the stored {stored[:120]!r}")
            conv.inflight = None
            conv.acked += 1
        await driver.talk(conv, asyncio.Event(), random.Random(SEED))

    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        driver.client = client
        await asyncio.wait_for(asyncio.gather(*(resume(c) for c in cut)), timeout=40)
        assert all(c.done and not c.problems for c in conversations), {c.address: c.problems for c in conversations if c.problems}

        # --- 4. the outbox drains: every alert arrives ------------------------------------------
        async def drained() -> bool:
            health = (await client.get("/healthz/detail", headers=HEALTH_HEADERS)).json()
            return health["outbox"] == {"pending": 0, "dead": 0, "unreachable": 0}

        deadline = time.monotonic() + 20
        while not await drained():
            assert time.monotonic() < deadline, "the outbox did not drain: " + (await client.get("/healthz/detail", headers=HEALTH_HEADERS)).text
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # room for a duplicate to show up, were one on its way
    # A graceful stop (uvicorn re-raises the SIGTERM once its shutdown is done) runs the lifespan's
    # teardown: the database is closed, which folds the WAL away.
    assert second.stop() in (0, -signal.SIGTERM), second.log()[-2000:]
    assert not (data_dir / (DB_FILENAME + "-wal")).exists(), "the database was not closed on SIGTERM"
    assert "Traceback" not in second.log(), second.log()[-3000:]

    # --- 5. the final account ---------------------------------------------------------------------
    store = await SqliteStore.open(data_dir, cipher)
    try:
        tips = await store.tips.list(None, limit=None)
        by_sender = Counter(t.sender for t in tips)
        assert max(by_sender.values()) == 1, "a sender has two tips"
        filers = [c for c in conversations if c.flow in FILES_A_TIP]
        assert set(by_sender) == {pseudonym(c) for c in filers}
        assert len(tips) == sum(1 for c in conversations if c.receipts) + sum(1 for c in conversations if c.flow == "urgent, then silence")

        receipts: set[str] = set()
        for conv in conversations:
            handed = handed_out(conv)
            if conv.flow in FILES_A_TIP - {"urgent, then silence"}:
                assert len(handed) == 1, (conv.address, handed)  # the same code every time it was shown
                (code,) = handed
                tip = await store.tips.by_receipt_hash(cipher.lookup_hash("receipt", code.replace("-", "")))
                assert tip is not None and tip.sender == pseudonym(conv) and tip.complete and tip.status is TipStatus.OPEN
                assert tip.urgent == (conv.flow in URGENT_FLOWS)
                after = await store.drafts.get(pseudonym(conv))  # at most the after-receipt state
                assert after is None or (after.state["mode"] == "sent" and after.state["tip_id"] == tip.id)
                receipts |= handed
            else:
                assert not handed, (conv.address, handed)
            if conv.flow == "urgent, then silence":
                (tip,) = [t for t in tips if t.sender == pseudonym(conv)]
                assert tip.urgent and tip.status is TipStatus.IN_PROGRESS
                draft = await store.drafts.get(pseudonym(conv))
                assert draft is not None and draft.state["step"] == "where"  # still resumable
            if conv.flow == "exit":
                assert await store.drafts.get(pseudonym(conv)) is None
            if conv.flow == "unfinished":
                draft = await store.drafts.get(pseudonym(conv))
                assert draft is not None and draft.state["step"] == "details"  # kept, to be resumed or expire
    finally:
        await store.close()

    # --- 6. one alert per event, on each officer channel ------------------------------------------
    expected = assert_each_alert_once(tips, fake_telegram, fake_twilio, resend_allowed)
    assert all(m["parse_mode"] == "HTML" for m in fake_telegram.sent_messages(OFFICER_CHAT))

    figures = {
        "conversations": len(conversations),
        "unfinished_at_kill": len(cut),
        "half_way_at_kill": len(half_way),
        "not_started_at_kill": sum(1 for c in conversations if not c.started),
        "request_in_flight_at_kill": len(in_flight),
        "in_flight_committed_before_kill": committed_in_flight,
        "resent_with_same_id": resent,
        "receipts_before_kill": sum(1 for r in receipts_before_kill.values() if r),
        "receipts_total": len(receipts),
        "tips": len(tips),
        "alerts_expected_per_channel": sum(expected.values()),
        "alert_rows_pending_at_kill": pending_alerts,
        "alerts_sent_but_unconfirmed_at_kill": len(resend_allowed),
        "seconds_to_kill": round(killed_at - began, 1),
        "seconds_total": round(time.monotonic() - began, 1),
    }
    request.node.user_properties.extend(figures.items())


async def alerts_in_a_providers_hands(store, fake_telegram: FakeTelegramAPI, fake_twilio: FakeTwilioAPI) -> tuple[int, set[tuple[str, str]]]:
    """At a kill: how many alert rows are still pending, and those of them a fake already received
    (sent, not yet marked delivered): the one case where a second copy later is correct."""
    sent_titles = {"telegram": telegram_alert_titles(fake_telegram), "sms": sms_alert_titles(fake_twilio)}
    pending, allowed = 0, set()
    for item in await store.outbox.due(time.time() + 10**9, limit=10_000):
        if item.payload.get("kind") != "alert":
            continue
        pending += 1
        tip = await store.tips.get(item.payload["tip_id"])
        assert tip is not None
        sink, title = item.sink.partition(":")[0], _title(item.payload["event"], tip.case_number)
        if sent_titles[sink][title]:
            allowed.add((sink, title))
    return pending, allowed


def assert_each_alert_once(tips, fake_telegram: FakeTelegramAPI, fake_twilio: FakeTwilioAPI, resend_allowed: set[tuple[str, str]]) -> Counter[str]:
    """Each officer channel got each alert of these tips exactly once (one more copy only where
    ``resend_allowed``); returns the alerts expected on the on-call phone."""
    expected = Counter(_title("new", t.case_number) for t in tips if t.status is TipStatus.OPEN)
    expected.update(_title("urgent", t.case_number) for t in tips if t.urgent)
    # The group also reads an urgent case filling in; an on-call phone is not woken for that.
    in_group = expected + Counter({_title("update", t.case_number): URGENT_UPDATES for t in tips if t.urgent and t.status is TipStatus.OPEN})
    received = {"telegram": (telegram_alert_titles(fake_telegram), in_group), "sms": (sms_alert_titles(fake_twilio), expected)}
    for sink, (titles, wanted) in received.items():
        assert set(titles) == set(wanted), (sink, set(wanted) - set(titles), set(titles) - set(wanted))
        for title, count in titles.items():
            assert count == wanted[title] or (count == wanted[title] + 1 and (sink, title) in resend_allowed), (sink, title, count)
    return expected


def _title(event: str, case: str) -> str:
    return CATALOGUES.text("en", f"alert.{event}", case=case)
