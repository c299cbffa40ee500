"""Officer alerts reaching the officers' Telegram group through the outbox, end to end (Tipline's
real app on loopback, the real python-telegram-bot client against ``FakeTelegramAPI``): exactly
once across provider failures and a restart, within the group's flood limit in a burst (as a
digest, none lost), and a dead alert visible in ``/healthz``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from handlers.alerts import AlertEvent, enqueue_alert
from storage.records import Tip, TipStatus
from tests.channels.officer_app import (  # noqa: F401 - fake_server, fake and serve are fixtures used by name
    Group,
    case_of,
    fake,
    fake_server,
    file_urgent_tip,
    serve,
    tipster,
)
from tests.channels.test_telegram_app import CATALOGUES, OFFICERS
from tests.fakes.telegram_api import ApiError, FakeTelegramAPI


def fail_group_sends(fake: FakeTelegramAPI, times: int, status: int, description: str) -> None:
    """The next ``times`` messages to the officers' group fail; the tipster's chat is unaffected."""
    left = [times]
    send = fake._send_message

    def send_message(params: dict[str, Any]) -> Any:
        if str(params["chat_id"]) == str(OFFICERS) and left[0] > 0:
            left[0] -= 1
            raise ApiError(status, description)
        return send(params)

    fake.stub("sendMessage", send_message)


def group_calls(fake: FakeTelegramAPI) -> list[int]:
    return [c.status for c in fake.calls_of("sendMessage") if str(c.params.get("chat_id")) == str(OFFICERS)]


def test_an_alert_failing_three_times_is_delivered_exactly_once(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    running.runtime.worker.base_delay = 0.05  # seconds, not the production 2 s
    fail_group_sends(fake, 3, 500, "Internal Server Error")

    file_urgent_tip(tipster(fake, running))

    group = Group(fake, running.url)
    group.alert(CATALOGUES.text("en", "alert.urgent", case=case_of(running)))
    time.sleep(0.5)  # many retry periods: time enough for a wrong second send to show
    assert group_calls(fake) == [500, 500, 500, 200]
    (row,) = running.outbox("telegram:")
    assert (row["status"], row["attempts"]) == ("delivered", 3)


def test_a_restart_in_the_middle_of_retries_still_delivers_once(serve, fake: FakeTelegramAPI) -> None:
    first = serve()
    person = tipster(fake, first)
    person.say("/start")
    fake.set_down()
    danger_yes = person.press_update("c:1")
    assert person.post(danger_yes).status_code == 503  # the answer could not be sent; the tip is committed
    Group(fake, first.url).wait_for(lambda: [r for r in first.outbox("telegram:") if r["attempts"] >= 1])
    first.server.stop()  # lifespan shutdown, while the alert waits for its next attempt

    fake.set_down(False)
    second = serve()
    group = Group(fake, second.url)
    group.alert(CATALOGUES.text("en", "alert.urgent", case=case_of(second)))
    # Telegram delivers the update again: the same answer, and still one tip and one alert.
    person.url = second.url
    assert person.post(danger_yes).status_code == 200
    time.sleep(0.3)
    assert [s for s in group_calls(fake) if s == 200] == [200]
    assert second.rows("tips") == 1
    (row,) = second.outbox("telegram:")
    assert row["status"] == "delivered"


def test_a_burst_of_50_alerts_stays_within_the_group_limit_and_loses_none(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    targets = running.runtime.engine.config.alert_sinks
    assert targets == (f"telegram:{OFFICERS}",)

    async def fifty_tips() -> list[str]:
        # One transaction, as 50 tips filed in the same instant would leave the outbox.
        now = time.time()
        cases = []
        async with running.runtime.store.transaction() as tx:
            for n in range(50):
                tip = Tip(
                    uuid.uuid4().hex, await tx.tips.next_case_number(2026), TipStatus.OPEN, f"s{n}", "telegram", "en", now, now,
                    answers={"where": f"Rue {n}"}, urgent=n % 10 == 9, minor=n % 10 == 4,
                )  # fmt: skip
                await tx.tips.save(tip)
                await enqueue_alert(tx, tip, AlertEvent.URGENT if tip.urgent else AlertEvent.NEW, targets, now)
                cases.append(tip.case_number)
        running.runtime.worker.wake()
        return cases

    cases = running.on_server(fifty_tips())
    group = Group(fake, running.url)
    group.wait_for(lambda: {r["status"] for r in running.outbox("telegram:")} == {"delivered"})

    assert len(group_calls(fake)) <= 20  # within Telegram's 20 a minute (the test lasts seconds)
    received = "\n".join(m["text"] for m in group.sent())
    assert all(f" {case}" in received for case in cases)
    urgent = [c for n, c in enumerate(cases) if n % 10 == 9]
    assert max(received.index(f" {c}") for c in urgent) < min(received.index(f" {c}") for c in cases if c not in urgent)
    # The budget left after the digest answers officers at once.
    started = time.monotonic()
    (stats,) = group.type("/stats")
    assert stats["text"].startswith("Open: 50 (urgent 5, minor 5)") and time.monotonic() - started < 2


def test_healthz_reports_an_alert_that_went_dead(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    fail_group_sends(fake, 1, 400, "Bad Request: chat not found")  # the bot is not in that group

    file_urgent_tip(tipster(fake, running))

    group = Group(fake, running.url)
    group.wait_for(lambda: [r for r in running.outbox("telegram:") if r["status"] == "dead"])
    health = httpx.get(f"{running.url}/healthz", timeout=5).json()
    assert health["status"] == "degraded" and health["outbox"] == {"pending": 0, "dead": 1}
    (row,) = running.outbox("telegram:")
    assert row["attempts"] == 1 and "chat not found" in row["last_error"].lower()
    assert group_calls(fake) == [400]  # permanent: not retried
