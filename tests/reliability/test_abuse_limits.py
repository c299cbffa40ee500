"""Abuse limits: a flood from one sender, a draft stuffed with text, oversized requests, and markup
typed into a tip to fool officers.

Run alone (about 10 s)::

    .venv/bin/python -m pytest tests/reliability/test_abuse_limits.py -q -p no:cacheprovider

Tipline's real app (``bot.web.create_app``) runs on loopback with its lifespan, both channels on,
officer alerts to a Telegram group (full details on, so tipster text reaches the alert) and to an
on-call officer's SMS. The runtime lives on the server's event loop; the few direct calls into it
(the database checkpoint) are scheduled there.
"""

from __future__ import annotations

import asyncio
import html
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.channels import registry
from bot.channels.telegram import channel as telegram
from bot.channels.telegram.limits import FloodLimits
from bot.rate_limit import RateLimiter
from bot.runtime import Runtime
from bot.settings import Settings
from bot.web import MAX_BODY_BYTES, create_app
from handlers.turn import ConversationConfig
from storage.crypto import Cipher, KeyRing
from storage.sqlite import DB_FILENAME, SqliteStore
from tests.conftest import set_up_line
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI, make_text_update
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.reliability.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BOT_TOKEN,
    FROM_NUMBER,
    OFFICER_CHAT,
    OFFICER_NUMBER,
    PUBLIC_URL,
    RECEIPT,
    SECRET_HEADER,
    SMS_PATH,
    TELEGRAM_PATH,
    WEBHOOK_SECRET,
    shows,
    sms_form,
    signed_sms,
    twiml_messages,
)

T = TypeVar("T")
# Telegram's own flood limits (1 message a second per chat) would make the 60-message draft take a
# minute; they are tested in tests/channels. Tipline's per-sender flood limit stays as deployed
# except where a test says otherwise.
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)
HOSTILE = '<b>bold</b> <a href="http://evil">x</a> [link](http://evil) @everyone'


@dataclass
class Tipline:
    url: str
    client: httpx.AsyncClient
    app: Any
    data_dir: Path
    fake_telegram: FakeTelegramAPI
    fake_twilio: FakeTwilioAPI

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    async def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's event loop, where the runtime's database connections live."""
        loop = self.runtime.tasks[0].get_loop()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def sms(self, sender: str, body: str) -> list[str]:
        form = sms_form(sender, body)
        response = await self.client.post(SMS_PATH, **signed_sms(form))
        return twiml_messages(response)

    async def telegram(self, update: dict) -> httpx.Response:
        return await self.client.post(
            TELEGRAM_PATH, content=json.dumps(update), headers={SECRET_HEADER: WEBHOOK_SECRET, "content-type": "application/json"}
        )

    def rows(self, table: str) -> int:
        with closing(sqlite3.connect(f"file:{self.data_dir / DB_FILENAME}?mode=ro", uri=True)) as db:
            return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def data_size(self) -> int:
        """Every byte the database holds: the file, its WAL and shared memory."""
        return sum(p.stat().st_size for p in self.data_dir.iterdir() if p.name.startswith("tipline.sqlite3"))

    @asynccontextmanager
    async def store(self) -> AsyncIterator[SqliteStore]:
        """A second connection to the live database (WAL: it sees every committed write)."""
        store = await SqliteStore.open(self.data_dir, Cipher(KeyRing.load(self.data_dir / "keys.json")))
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTelegramAPI, str, FakeTwilioAPI, str]]:
    fake_telegram = FakeTelegramAPI(token=BOT_TOKEN)
    fake_twilio = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    with LoopbackServer(fake_telegram.app) as telegram_api, LoopbackServer(fake_twilio.app) as twilio_api:
        yield fake_telegram, telegram_api.url, fake_twilio, twilio_api.url


@pytest.fixture
async def tipline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes) -> AsyncIterator[Tipline]:
    fake_telegram, telegram_url, fake_twilio, twilio_url = fakes
    monkeypatch.setattr(
        registry, "FACTORIES", [(lambda s: telegram.build(s, limits=FAST)) if f is telegram.build else f for f in registry.FACTORIES]
    )
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        public_url=PUBLIC_URL,
        # REDACT off: with it on (the default) every dropped flood message still queues one sealed
        # delete of Twilio's copy, by design, so "the database does not grow" is about our own
        # state only. The deletes are covered by tests/channels/test_twilio_keeps_nothing.py.
        twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_url": twilio_url, "redact": False},
        telegram={"token": BOT_TOKEN, "api_url": telegram_url, "webhook_secret": WEBHOOK_SECRET, "mode": "webhook"},
        officers={"telegram_chat_ids": [OFFICER_CHAT], "sms_numbers": [OFFICER_NUMBER], "full_details": True},
    )
    set_up_line(settings)  # python main.py init
    app = create_app(settings)
    with LoopbackServer(app, lifespan="on") as server:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
            yield Tipline(server.url, client, app, tmp_path / "data", fake_telegram, fake_twilio)


async def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# --- a flood from one sender --------------------------------------------------------------------------


async def test_a_flood_gets_one_calm_slow_down_then_silence_and_the_database_does_not_grow(tipline: Tipline) -> None:
    sender = "+15145550177"
    limiter = tipline.runtime.engine.rate_limiter
    burst = limiter.burst
    started = time.monotonic()

    # The burst, and one more: all at once, as a script would send them.
    first = await asyncio.gather(*(tipline.sms(sender, f"spam {i}") for i in range(burst + 1)))
    slow_down = [r for r in first if shows("rate.slow_down", " ".join(r))]
    assert len(slow_down) == 1 and slow_down[0] == [" ".join(slow_down[0])]  # one calm message, one SMS
    assert all(r for r in first)  # the burst itself is answered normally

    await tipline.on_server(tipline.runtime.store.checkpoint())
    size = tipline.data_size()
    assert tipline.rows("processed") == burst  # the slow-down is not recorded either

    # The flood itself: long messages, all at once. Silence: empty TwiML, nothing written.
    flood = await asyncio.gather(*(tipline.sms(sender, f"{i} " + "x" * 1500) for i in range(100)))
    await tipline.on_server(tipline.runtime.store.checkpoint())
    # Tokens come back at ``rate`` a second (one every 2 s), so a run slower than that rightly lets a
    # message through (and warns again). On any ordinary machine the whole flood is faster: zero.
    refills = int((time.monotonic() - started) * limiter.rate)
    answered = [r for r in flood if r]
    assert len(answered) <= 2 * refills, answered[:3]
    if refills == 0:
        assert tipline.data_size() == size
        assert tipline.rows("processed") == burst  # not even the flood's message ids were kept
    async with tipline.store() as store:
        draft = await store.drafts.get(tipline.runtime.cipher.tipster_pseudonyms("sms", sender).current)
    assert draft is not None and draft.state["step"] == "language"
    # A message let through by a refill is kept like any first message (nothing anyone types is
    # dropped); the dropped flood itself leaves no trace.
    kept = json.dumps(draft.state).count("x" * 1500)
    assert kept <= len(answered) and (refills > 0 or kept == 0)

    # Once the sender calms down, the conversation goes on where it was (the language question).
    await asyncio.sleep(1 / limiter.rate + 0.1)
    assert shows("danger.question", " ".join(await tipline.sms(sender, "1")))


# --- a draft stuffed with text ------------------------------------------------------------------------


async def test_a_draft_keeps_at_most_the_configured_details_of_capped_length(tipline: Tipline) -> None:
    # 60 messages in a row from one person would rightly be throttled by the flood limit; this test
    # is about what the draft keeps, so the limit is lifted for it.
    tipline.runtime.engine.rate_limiter = RateLimiter(burst=10_000)
    config = ConversationConfig()
    chat = 7_200_000_001
    ids = iter(range(1, 10_000))

    async def say(text: str) -> str:
        before = len(tipline.fake_telegram.sent_messages(chat))
        update_id = next(ids)
        response = await tipline.telegram(make_text_update(update_id, chat, text, message_id=update_id))
        assert response.status_code == 200
        return " ".join(m["text"] for m in tipline.fake_telegram.sent_messages(chat)[before:])

    for text in ["/start", "2", "2", "2", "2", "Motel Lune", "3"]:
        await say(text)
    # Telegram itself stops at 4096 characters; the webhook does not rely on it. A longer message
    # is kept whole, as two details entries, so the cap of entries is reached after half as many.
    messages = [f"{i:02d} " + "é" * 4997 for i in range(60)]
    fits = config.max_details_messages // 2
    for i, text in enumerate(messages):
        # Past the cap the person is told so (details.full) instead of "noted".
        expected = "details.more" if i < fits else "details.full"
        assert shows(expected, await say(text))

    async with tipline.store() as store:
        draft = await store.drafts.get(tipline.runtime.cipher.tipster_pseudonyms("telegram", str(chat)).current)
    details = draft.state["answers"]["details"]
    assert len(details) == config.max_details_messages
    assert all(len(d) <= config.max_text_chars for d in details)
    assert "".join(details) == "".join(messages[:fits])  # the first ones, whole and in order
    review = await say("DONE") + " " + await say("2")
    assert shows("review.question", review) and f"{config.max_details_messages} msg" in review


# --- oversized requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SMS_PATH, TELEGRAM_PATH])
async def test_request_bodies_over_64_kb_are_refused_with_413(tipline: Tipline, path: str) -> None:
    headers = {SECRET_HEADER: WEBHOOK_SECRET, "X-Twilio-Signature": "x", "content-type": "application/x-www-form-urlencoded"}

    async def post(content: bytes | AsyncIterator[bytes]) -> int:
        return (await tipline.client.post(path, content=content, headers=headers)).status_code

    async def streamed(total: int) -> AsyncIterator[bytes]:
        # No Content-Length: the limit must hold while the body streams in.
        for start in range(0, total, 8192):
            yield b"a" * min(8192, total - start)

    assert await post(b"a" * (MAX_BODY_BYTES + 1)) == 413
    assert await post(streamed(MAX_BODY_BYTES + 1)) == 413
    assert await post(streamed(10 * MAX_BODY_BYTES)) == 413
    # At the limit the body is read and judged on its content (a bad form or update), not its size.
    assert await post(b"a" * MAX_BODY_BYTES) in (400, 403)
    assert await post(streamed(MAX_BODY_BYTES)) in (400, 403)
    assert (await tipline.client.get("/healthz")).status_code == 200


# --- markup typed into a tip ----------------------------------------------------------------------------


async def test_markup_typed_by_a_tipster_reaches_officers_as_plain_characters(tipline: Tipline) -> None:
    sender = "+15145550178"
    for said in ["Hello", "2", "2", "2", "2", HOSTILE, "3", HOSTILE, "DONE", "2"]:
        await tipline.sms(sender, said)
    receipt = " ".join(await tipline.sms(sender, "1"))
    assert RECEIPT.search(receipt)

    await wait_until(lambda: tipline.fake_telegram.sent_messages(OFFICER_CHAT), "the officer alert")
    (alert,) = tipline.fake_telegram.sent_messages(OFFICER_CHAT)
    text = alert["text"]
    assert alert["parse_mode"] == "HTML"
    assert alert["link_preview_options"] == {"is_disabled": True}  # no preview fetched of http://evil
    escaped = html.escape(HOSTILE)
    assert text.count(escaped) == 2  # where and details, both as characters
    assert "<a" not in text and "</a>" not in text and "http://evil\"" not in text
    assert text.count("<b>") == 1 and text.startswith("<b>")  # only the alert's own title is bold
    assert html.unescape(text).count(HOSTILE) == 2  # officers read exactly what was typed
    assert "entities" not in alert  # no formatting besides the escaped HTML
    # The officer's SMS carries the case and flags only, never what was typed.
    await wait_until(lambda: [m for m in tipline.fake_twilio.sent() if m["To"] == OFFICER_NUMBER], "the officer SMS")
    officer_sms = [m["Body"] for m in tipline.fake_twilio.sent() if m["To"] == OFFICER_NUMBER]
    assert officer_sms and all("evil" not in body and "everyone" not in body for body in officer_sms)
