"""The disk-full experiment, through the webhooks: a database that refuses writes gets every SMS a
200 with a calm TwiML "try again in a few minutes" (never a 500, never silence), every Telegram
update the same reply through the Bot API and a 200; /healthz turns 503 "degraded" and
/healthz/detail says why; the log says it once, not once per message; once writes work, the same
MessageSid is handled as new and /healthz is well again.

Run alone (about 25 s)::

    .venv/bin/python -m pytest tests/reliability/test_storage_faults.py -q -p no:cacheprovider

Tipline's real app (``bot.web.create_app``) runs on loopback with its lifespan, both channels on
against the fake Twilio and Telegram APIs. The failures are SQLite's own (tests/faults.py), caused on
the server's event loop, where the database connections live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.runtime import Runtime
from bot.settings import Settings
from bot.web import create_app
from tests.conftest import HEALTH_HEADERS, set_up_line
from tests.faults import full, lock_held_by_another_process, space_back
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI, make_text_update
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.reliability.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BOT_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    SECRET_HEADER,
    SMS_PATH,
    TELEGRAM_PATH,
    WEBHOOK_SECRET,
    catalogue,
    norm,
    sms_form,
    signed_sms,
    twiml_messages,
)

T = TypeVar("T")
# A WhatsApp body may be 4,096 characters: stored, it is longer than a database page, so with the
# database not allowed to grow it cannot be stored (tests/faults.py). An SMS is at most 1,600.
LONG_FR = "Une camionnette grise se gare derrière le motel chaque nuit, trois femmes en sortent. " * 45
LONG_EN = "A grey van parks behind the motel every night and three young women get out. " * 50


@dataclass
class Tipline:
    client: httpx.AsyncClient
    app: Any
    telegram: FakeTelegramAPI

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    async def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.runtime.tasks[0].get_loop()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def post_sms(self, sender: str, body: str, sid: str | None = None) -> httpx.Response:
        return await self.client.post(SMS_PATH, **signed_sms(sms_form(sender, body, sid)))

    async def health(self) -> tuple[int, dict, int, dict]:
        public = await self.client.get("/healthz")
        detail = await self.client.get("/healthz/detail", headers=HEALTH_HEADERS)
        return public.status_code, public.json(), detail.status_code, detail.json()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTelegramAPI, str, str]]:
    fake_telegram = FakeTelegramAPI(token=BOT_TOKEN)
    fake_twilio = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    with LoopbackServer(fake_telegram.app) as telegram_api, LoopbackServer(fake_twilio.app) as twilio_api:
        yield fake_telegram, telegram_api.url, twilio_api.url


@pytest.fixture
async def tipline(tmp_path: Path, fakes, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Tipline]:
    caplog.set_level(logging.INFO)
    fake_telegram, telegram_url, twilio_url = fakes
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        public_url=PUBLIC_URL,
        server={"health_token": HEALTH_HEADERS["Authorization"].removeprefix("Bearer ")},
        twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_url": twilio_url},
        telegram={"token": BOT_TOKEN, "api_url": telegram_url, "webhook_secret": WEBHOOK_SECRET, "mode": "webhook"},
    )
    set_up_line(settings)  # python main.py init: serve never makes a line itself
    app = create_app(settings)
    with LoopbackServer(app, lifespan="on") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield Tipline(client, app, fake_telegram)


def storage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.storage_watch"]


def errors_per_message(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR lines other than the watch's. The outbox worker's own pass (bot.outbox, a few an
    idle period whatever the traffic) is not a line per message and is left out here."""
    left_out = ("bot.storage_watch", "bot.outbox")
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("bot.") and r.name not in left_out]


def said(response: httpx.Response) -> list[str]:
    return [norm(m) for m in twiml_messages(response)]


async def test_a_full_disk_gets_every_message_a_calm_reply_and_healthz_says_why(tipline: Tipline, caplog: pytest.LogCaptureFixture) -> None:
    whatsapp = "whatsapp:+15145550142"
    first = twiml_messages(await tipline.post_sms(whatsapp, "Bonjour"))
    assert first and all("Désolé" not in m for m in first)
    assert (await tipline.health())[:2] == (200, {"status": "ok"})
    await tipline.on_server(full(tipline.runtime.store))

    # The French conversation: its language comes from its draft, read while writes fail.
    sid = "SM" + "f1" * 16
    for attempt in range(12):
        response = await tipline.post_sms(whatsapp, LONG_FR, sid if attempt == 0 else None)
        assert twiml_messages(response) == [catalogue("error.retry", "fr")]
    # Telegram: the calm reply goes by the Bot API, and the webhook answers 200 (a 5xx would hold
    # back every later update of the bot while Telegram retries it).
    for update_id in range(100, 106):
        update = make_text_update(update_id, 4242, LONG_EN, language_code="en")
        response = await tipline.client.post(
            TELEGRAM_PATH, content=json.dumps(update), headers={SECRET_HEADER: WEBHOOK_SECRET, "content-type": "application/json"}
        )
        assert response.status_code == 200
    assert [m["text"] for m in tipline.telegram.sent_messages(4242)] == [catalogue("error.retry", "en")] * 6

    public_status, public, detail_status, detail = await tipline.health()
    assert (public_status, public) == (503, {"status": "degraded"})  # nothing more to an outsider
    assert detail_status == 503 and (detail["status"], detail["storage"]) == ("degraded", "disk full")
    lines = storage_lines(caplog)
    assert len(lines) == 1 and "disk full" in lines[0], lines  # 18 messages, one line
    assert errors_per_message(caplog) == []

    await tipline.on_server(space_back(tipline.runtime.store))
    # Twilio's retry of the first refused message, once there is room: handled, not a cached refusal.
    retried = twiml_messages(await tipline.post_sms(whatsapp, LONG_FR, sid))
    assert retried and catalogue("error.retry", "fr") not in retried
    assert await tipline.runtime.store.processed.replies_for(f"whatsapp:{sid}") is not None
    assert (await tipline.health())[:3] == (200, {"status": "ok"}, 200)
    assert "recovered" in storage_lines(caplog)[-1] and len(storage_lines(caplog)) == 2


async def test_a_read_only_database_is_answered_calmly_and_reported(tipline: Tipline, caplog: pytest.LogCaptureFixture) -> None:
    assert twiml_messages(await tipline.post_sms("+15145550143", "Hello"))
    await tipline.on_server(tipline.runtime.store._writer.execute("PRAGMA query_only=ON"))
    for text in ("2", "1", "Motel Lune", "EXIT"):
        assert twiml_messages(await tipline.post_sms("+15145550143", text)) == [catalogue("error.retry", "en")]
    assert said(await tipline.post_sms("+15145550144", "12")) == [catalogue("error.retry.both")]  # no language to go by
    deadline = time.monotonic() + 10
    while (found := await tipline.health())[3].get("storage") != "read-only":  # the check runs every few seconds
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.2)
    assert found[:3] == (503, {"status": "degraded"}, 503)
    assert len(storage_lines(caplog)) == 1 and errors_per_message(caplog) == []
    await tipline.on_server(tipline.runtime.store._writer.execute("PRAGMA query_only=OFF"))
    assert catalogue("error.retry", "en") not in twiml_messages(await tipline.post_sms("+15145550143", "2"))


async def test_a_lock_held_by_another_process_is_answered_well_within_twilios_15_seconds(tipline: Tipline) -> None:
    assert twiml_messages(await tipline.post_sms("+15145550145", "Hello"))
    with lock_held_by_another_process(tipline.runtime.store.path):
        started = time.monotonic()
        responses = await asyncio.gather(*(tipline.post_sms(f"+1514555016{i}", "Hello") for i in range(6)))
        took = time.monotonic() - started
        assert all(twiml_messages(r) == [catalogue("error.retry", "en")] for r in responses)
        assert took < 7.0, took  # together, not 6 x 5 s one after the other
        started = time.monotonic()
        public = await tipline.client.get("/healthz")
        assert public.status_code == 503 and time.monotonic() - started < 3.0  # never hangs on the lock
    assert catalogue("error.retry", "en") not in twiml_messages(await tipline.post_sms("+15145550160", "Hello"))
