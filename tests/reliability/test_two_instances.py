"""Two ``python main.py serve`` instances on one PostgreSQL database, behind a round-robin
dispatcher, one of them killed with SIGKILL mid-load and restarted: nothing is lost, nothing is
filed twice, every alert goes out once, case numbers stay unique and sequential.

Run alone (about 40 s, most of it the lease of the rows the killed instance held)::

    .venv/bin/python -m pytest tests/reliability/test_two_instances.py -q -p no:cacheprovider

What happens, all on loopback:

1. A real PostgreSQL server (tests/postgres_server.py), one key ring file, two instances with
   their own data directories (only the key ring is shared) and ``TIPLINE_DATABASE_URL``.
2. The conversations of the SIGKILL test (tests/reliability/test_crash_safety.py) go through the
   dispatcher (tests/fakes/dispatcher.py), which sends each request to the next instance: one
   person's consecutive messages are handled by different processes.
3. Once several receipts are out, instance A gets SIGKILL; the dispatcher sends what A dropped to
   B with the same MessageSid / update_id (as the providers retry); A is restarted a moment later
   and takes its share again.
4. At the end: every receipt handed out opens its own tip, no sender has two, the case numbers are
   26-0001…N with no gap, every conversation got the answer each step expects, the Telegram
   webhook was registered once, and each officer channel got each alert exactly once (one more
   copy only for a row that was in a provider's hands at the kill, as in the SIGKILL test).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from storage.crypto import Cipher, KeyRing
from storage.postgres import PostgresStore
from storage.records import OutboxStatus, TipStatus
from tests.fakes.dispatcher import RoundRobin
from tests.fakes.server import LoopbackServer
from tests.reliability.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BOT_TOKEN,
    FROM_NUMBER,
    OFFICER_CHAT,
    OFFICER_NUMBER,
    WEBHOOK_SECRET,
    ServeProcess,
    free_port,
    serve_environment,
)
from tests.reliability.test_crash_safety import (  # noqa: F401 - fakes is a fixture used by name
    FILES_A_TIP,
    SEED,
    SMS_FLOWS,
    START_EVERY,
    TELEGRAM_CONVERSATIONS,
    URGENT_FLOWS,
    Conversation,
    Driver,
    alerts_in_a_providers_hands,
    assert_each_alert_once,
    fakes,
    telegram_receipts,
    wait_until,
)

KILL_AFTER_RECEIPTS = 4


async def test_two_instances_one_killed_mid_load(
    tmp_path: Path, postgres_url: str, fakes, servers: list[ServeProcess], request: pytest.FixtureRequest
) -> None:
    fake_telegram, telegram_url, fake_twilio, twilio_url = fakes
    keys = tmp_path / "keys.json"
    KeyRing.generate().save(keys)
    cipher = Cipher(KeyRing.load(keys))
    ports: dict[str, int] = {}
    began = time.monotonic()

    def start(name: str, *, init: bool = False) -> ServeProcess:
        def environment(port: int) -> dict[str, str]:
            ports[name] = ports.get(name, port)  # a restart comes back on its own port
            return serve_environment(
                tmp_path / f"data-{name}",
                ports[name],
                TIPLINE_LOG_LEVEL="WARNING",
                TIPLINE_DATABASE_URL=postgres_url,
                TIPLINE_KEYS_FILE=str(keys),
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

        server = ServeProcess.start(environment, tmp_path / f"serve-{name}.log", tmp_path, init=init)
        servers.append(server)
        health = server.health()
        assert health["channels"] == ["sms", "telegram"] and health["database"], health
        return server

    a = start("a", init=True)  # the schema made once, by python main.py init
    b = start("b")
    dispatcher = RoundRobin([a.url, b.url])
    conversations = [Conversation("sms", f"+1438555{i:04d}", flow) for i, flow in enumerate(SMS_FLOWS)] + [
        Conversation("telegram", str(7_200_000_001 + i), "telegram report") for i in range(TELEGRAM_CONVERSATIONS)
    ]
    driver = Driver(fake_telegram)
    rng = random.Random(SEED)

    async def run(conv: Conversation, delay: float, seed: int) -> None:
        await asyncio.sleep(delay)
        conv.started = True
        await driver.talk(conv, asyncio.Event(), random.Random(seed))

    def receipts() -> int:
        return sum(1 for c in conversations if c.receipts)

    store = await PostgresStore.open(postgres_url, cipher)
    try:
        with LoopbackServer(dispatcher.app, lifespan="on") as front:
            async with httpx.AsyncClient(base_url=front.url, timeout=60) as client:
                driver.client = client
                order = sorted(conversations, key=lambda c: c.channel != "telegram")
                tasks = [asyncio.create_task(run(c, i * START_EVERY, rng.randrange(2**32))) for i, c in enumerate(order)]
                await wait_until(lambda: receipts() >= KILL_AFTER_RECEIPTS, 60, "receipts before the kill")
                a.kill()
                killed_at = time.monotonic()
                unfinished_at_kill = sum(1 for c in conversations if not c.done)
                # Rows in some instance's hands at the kill: the one case a second copy is right.
                _, resend_allowed = await alerts_in_a_providers_hands(store, fake_telegram, fake_twilio)
                await asyncio.sleep(1.0)  # B alone for a moment
                a = start("a")  # on its old port: the dispatcher finds it again
                await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
                problems = {c.address: c.problems for c in conversations if c.problems}
                assert not problems, problems
                assert all(c.done for c in conversations)

                # Every alert out, whichever instance claimed it (the killed one's rows once their lease ran out).
                deadline = time.monotonic() + 60
                while (await store.outbox.counts())[OutboxStatus.PENDING]:
                    assert time.monotonic() < deadline, await store.outbox.counts()
                    await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # room for a duplicate to show up, were one on its way

        # --- the account ---------------------------------------------------------------------------
        def pseudonym(conv: Conversation) -> str:
            return cipher.tipster_pseudonyms(conv.channel, conv.address).current

        tips = await store.tips.list(None, limit=None)
        by_sender = Counter(t.sender for t in tips)
        assert max(by_sender.values()) == 1, "a sender has two tips"
        assert set(by_sender) == {pseudonym(c) for c in conversations if c.flow in FILES_A_TIP}
        year = sorted(t.case_number for t in tips)[0][:2]
        assert sorted(t.case_number for t in tips) == [f"{year}-{n:04d}" for n in range(1, len(tips) + 1)]
        for conv in conversations:
            handed = conv.receipts | (telegram_receipts(fake_telegram, conv.address) if conv.channel == "telegram" else set())
            if conv.flow in FILES_A_TIP - {"urgent, then silence"}:
                assert len(handed) == 1, (conv.address, handed)
                (code,) = handed
                tip = await store.tips.by_receipt_hash(cipher.lookup_hash("receipt", code.replace("-", "")))
                assert tip is not None and tip.sender == pseudonym(conv) and tip.complete and tip.status is TipStatus.OPEN
                assert tip.urgent == (conv.flow in URGENT_FLOWS)
            else:
                assert not handed, (conv.address, handed)
            if conv.flow == "exit":
                assert await store.drafts.get(pseudonym(conv)) is None
            if conv.flow == "unfinished":
                draft = await store.drafts.get(pseudonym(conv))
                assert draft is not None and draft.state["step"] == "details"
        counts = await store.outbox.counts()
    finally:
        await store.close()

    assert_each_alert_once(tips, fake_telegram, fake_twilio, resend_allowed)
    assert len(fake_telegram.calls_of("setWebhook")) == 1  # three starts, one registration
    assert all("Traceback" not in s.log() for s in servers), [s.log()[-2000:] for s in servers if "Traceback" in s.log()]

    figures = {
        "conversations": len(conversations),
        "unfinished_at_kill": unfinished_at_kill,
        "requests_retried_on_the_other_instance": dispatcher.retried,
        "served": dict(dispatcher.served),
        "tips": len(tips),
        "outbox": {s.value: n for s, n in counts.items()},
        "alerts_sent_but_unconfirmed_at_kill": len(resend_allowed),
        "seconds_to_kill": round(killed_at - began, 1),
        "seconds_total": round(time.monotonic() - began, 1),
    }
    request.node.user_properties.extend(figures.items())


def test_polling_runs_on_one_instance_only(tmp_path: Path, postgres_url: str, fakes, servers: list[ServeProcess]) -> None:
    """Telegram hands each update to one getUpdates caller: two pollers would split (and race
    for) the conversations. The second instance refuses to start, saying why, in one line."""
    fake_telegram, telegram_url, _, _ = fakes
    keys = tmp_path / "keys.json"
    KeyRing.generate().save(keys)

    def environment(name: str) -> Callable[[int], dict[str, str]]:
        def build(port: int) -> dict[str, str]:
            env = serve_environment(
                tmp_path / f"data-{name}", port, TIPLINE_DATABASE_URL=postgres_url, TIPLINE_KEYS_FILE=str(keys),
                TIPLINE_TELEGRAM__TOKEN=BOT_TOKEN, TIPLINE_TELEGRAM__API_URL=telegram_url,
                TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS=str(OFFICER_CHAT),
            )  # fmt: skip
            del env["TIPLINE_PUBLIC_URL"]  # no public URL: polling
            return env

        return build

    first = ServeProcess.start(environment("a"), tmp_path / "serve-a.log", tmp_path, init=True)
    servers.append(first)
    assert first.health()["channels"] == ["telegram"]
    second = ServeProcess(environment("b")(free_port()), tmp_path / "serve-b.log", tmp_path)
    servers.append(second)
    assert second.process.wait(timeout=30) != 0
    second.kill()  # already gone: this closes its log
    errors = [line for line in second.log().splitlines() if "another Tipline instance is already polling" in line]
    assert len(errors) == 1 and "Traceback" not in second.log(), second.log()[-2000:]
    assert first.process.poll() is None  # the first goes on polling
    first.stop()
