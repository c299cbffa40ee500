"""Officer alerts reaching the officers' Telegram group through the outbox, end to end (Tipline's
real app on loopback, the real python-telegram-bot client against ``FakeTelegramAPI``): exactly
once across provider failures and a restart, within the group's flood limit in a burst (as a
digest, none lost), a dead alert visible in ``/healthz`` and re-queued with ``outbox retry``, and an
officer group that lost the bot keeping its alerts until the bot is back.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from bot.channels.telegram.alerts import GROUP_UNREACHABLE
from handlers.alerts import AlertEvent, enqueue_alert
from storage.records import Tip, TipStatus
from tests.bot.test_chat_cli import run as run_cli
from tests.channels.officer_app import (  # noqa: F401 - fake_server, fake and serve are fixtures used by name
    OFFICER,
    Group,
    Running,
    case_of,
    fake,
    fake_server,
    file_urgent_tip,
    next_update_id,
    serve,
    tipster,
)
from tests.channels.test_telegram_app import CATALOGUES, OFFICERS
from tests.conftest import HEALTH_HEADERS
from tests.fakes.telegram_api import BOT_USER, ApiError, FakeTelegramAPI, make_text_update


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
    fail_group_sends(fake, 1, 400, "Bad Request: can't parse entities: unsupported start tag")  # this request's fault

    file_urgent_tip(tipster(fake, running))

    group = Group(fake, running.url)
    group.wait_for(lambda: [r for r in running.outbox("telegram:") if r["status"] == "dead"])
    health = httpx.get(f"{running.url}/healthz/detail", headers=HEALTH_HEADERS, timeout=5).json()
    assert health["status"] == "degraded" and health["outbox"] == {"pending": 0, "dead": 1, "unreachable": 0}
    (row,) = running.outbox("telegram:")
    assert row["attempts"] == 1 and "can't parse entities" in row["last_error"].lower()
    assert group_calls(fake) == [400]  # permanent: not retried


def health(running: Running) -> dict[str, Any]:
    return httpx.get(f"{running.url}/healthz/detail", headers=HEALTH_HEADERS, timeout=5).json()


def test_a_group_that_removed_the_bot_keeps_the_alert_pending_until_the_bot_is_back(
    serve, fake: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    running = serve()
    running.runtime.worker.unreachable_retry = 0.1  # seconds, not the production 5 minutes
    fake.fail_chat(OFFICERS, 403, "Forbidden: bot was kicked from the supergroup chat")

    person = tipster(fake, running)
    file_urgent_tip(person)

    group = Group(fake, running.url)
    group.wait_for(lambda: len(group_calls(fake)) >= 5)  # tried again and again
    (row,) = running.outbox("telegram:")
    assert (row["status"], row["attempts"], row["unreachable"]) == ("pending", 0, 1)  # never dead, no attempt used
    assert row["last_error"] == GROUP_UNREACHABLE
    assert str(OFFICERS) not in row["last_error"] and case_of(running) not in row["last_error"]
    assert health(running)["status"] == "degraded"
    assert health(running)["outbox"] == {"pending": 1, "dead": 0, "unreachable": 1}
    # One ERROR line for the group, however many tries.
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "unreachable" in r.getMessage()]
    assert len(errors) == 1 and str(OFFICERS) in errors[0].getMessage()

    fake.fail_chat(OFFICERS, None)  # someone added the bot back
    group.alert(CATALOGUES.text("en", "alert.urgent", case=case_of(running)))
    group.wait_for(lambda: running.outbox("telegram:")[0]["status"] == "delivered")
    time.sleep(0.3)  # several retry periods: time enough for a second send to show
    assert [s for s in group_calls(fake) if s == 200] == [200]  # sent once
    (delivered,) = running.outbox("telegram:")
    assert delivered["id"] == row["id"] and (delivered["attempts"], delivered["unreachable"]) == (0, 0)
    assert delivered["last_error"] is None
    assert health(running) | {"channels": None, "schema": None} == {
        "status": "ok", "database": True, "storage": "ok", "channels": None, "schema": None,
        "outbox": {"pending": 0, "dead": 0, "unreachable": 0},
    }  # fmt: skip
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_a_group_not_found_gets_its_alert_as_soon_as_the_bot_is_added_back(serve, fake: FakeTelegramAPI) -> None:
    running = serve()  # the production retry: 5 minutes, far longer than this test
    fake.fail_chat(OFFICERS, 400, "Bad Request: chat not found")

    file_urgent_tip(tipster(fake, running))

    group = Group(fake, running.url)
    group.wait_for(lambda: [r for r in running.outbox("telegram:") if r["unreachable"]])
    assert health(running)["outbox"] == {"pending": 1, "dead": 0, "unreachable": 1}
    assert group_calls(fake) == [400]

    fake.fail_chat(OFFICERS, None)
    # Telegram tells the bot it was added: a service message in the group, and the alert follows at once.
    added = make_text_update(next_update_id(), OFFICERS, "x", user_id=OFFICER, chat_type="supergroup")
    del added["message"]["text"]
    added["message"]["new_chat_members"] = [dict(BOT_USER)]
    assert group.post(added) == 200
    group.alert(CATALOGUES.text("en", "alert.urgent", case=case_of(running)))
    assert group_calls(fake) == [400, 200]
    # Recorded once Telegram answered: a moment after the fake saw the message.
    group.wait_for(lambda: running.outbox("telegram:")[0]["status"] == "delivered")


def test_outbox_retry_requeues_a_dead_alert_and_the_worker_delivers_it(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    fail_group_sends(fake, 1, 400, "Bad Request: can't parse entities: unsupported start tag")
    file_urgent_tip(tipster(fake, running))
    group = Group(fake, running.url)
    group.wait_for(lambda: [r for r in running.outbox("telegram:") if r["status"] == "dead"])
    (dead,) = running.outbox("telegram:")

    listed = run_cli(["outbox"], running.data_dir)
    assert listed.returncode == 0 and dead["id"][:8] in listed.stdout and "dead" in listed.stdout
    retried = run_cli(["outbox", "retry", dead["id"][:6]], running.data_dir)
    assert retried.returncode == 0 and retried.stdout.startswith("outbox: 1 dead row re-queued")
    running.runtime.worker.wake()  # what the worker's idle timer (at most 30 s) would do

    group.alert(CATALOGUES.text("en", "alert.urgent", case=case_of(running)))
    group.wait_for(lambda: running.outbox("telegram:")[0]["status"] == "delivered")
    assert group_calls(fake) == [400, 200]
    assert health(running)["outbox"] == {"pending": 0, "dead": 0, "unreachable": 0}
    assert run_cli(["outbox"], running.data_dir).stdout.strip() == "outbox: empty (nothing pending, nothing dead)"
