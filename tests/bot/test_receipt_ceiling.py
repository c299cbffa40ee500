"""The global ceiling on failed receipt look-ups (security review F11): across all senders, the
failure that reaches ``receipt_failures_global_per_hour`` pauses every look-up for an hour, and
officers get one notice for it through the outbox, delivered by every officer sink (console,
Telegram group through the real python-telegram-bot client, officer SMS through the real twilio
client; both against their fakes on loopback). The per-sender lock-out is unchanged."""

from __future__ import annotations

import html
import io
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from telegram.ext import ExtBot

from bot.alerting import AlertComposer
from bot.channels.console import ConsoleSink
from bot.channels.telegram.alerts import TelegramAlertSink
from bot.channels.telegram.limits import FloodLimiter, FloodLimits
from bot.channels.twilio.rest import TwilioRest
from bot.channels.twilio.channel import OfficerSmsSink
from bot.engine import Engine
from bot.i18n import Catalogues
from bot.outbox import OutboxWorker
from bot.rate_limit import RateLimiter
from bot.settings import Settings, SettingsError, load_settings
from handlers.turn import ConversationConfig
from storage.crypto import Cipher
from storage.records import OutboxItem, OutboxStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.twilio_api import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilioAPI
from tests.handlers.test_transcripts import ENGLISH_FULL
from tests.handlers.transcript import Talk, run_transcript

CEILING = 12
HOUR = 3600.0
RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
GROUP = -1001
OFFICER_NUMBER = "+15550002222"
FROM_NUMBER = "+15550001111"
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)


def make_engine(store: SqliteStore, cipher: Cipher, catalogues: Catalogues, clock: Clock, sinks: tuple[str, ...] = ("console",)) -> tuple[Engine, list[int]]:
    woken: list[int] = []
    config = replace(ConversationConfig(alert_sinks=sinks), receipt_failures_global_per_hour=CEILING)
    engine = Engine(store, cipher, catalogues, config, clock=clock, rate_limiter=RateLimiter(burst=10_000), on_alerts=lambda: woken.append(1))
    return engine, woken


async def file_tip(engine: Engine) -> str:
    replies = await run_transcript(Talk(engine, sender="the-real-tipster"), ENGLISH_FULL)
    return RECEIPT.search(replies[-1][0].text).group()


async def guess(engine: Engine, sender: str, code: str = "000-000-000-001") -> list[str]:
    return [r.key for r in await Talk(engine, sender=sender, channel="sms").say(f"CHECK {code}")]


async def wrong_guesses(engine: Engine, count: int, tag: str) -> list[list[str]]:
    """``count`` wrong codes from distinct senders, 3 each (under the per-sender limit of 5)."""
    return [await guess(engine, f"{tag}-{n // 3}", f"000-000-{n:03d}-999") for n in range(count)]


async def notices(store: SqliteStore) -> list[OutboxItem]:
    return [i for i in await store.outbox.due(1e12, 1000) if i.payload.get("kind") == "notice"]


async def test_the_failure_reaching_the_ceiling_pauses_every_look_up_and_sends_one_notice(
    store: SqliteStore, cipher: Cipher, catalogues: Catalogues, clock: Clock
) -> None:
    engine, woken = make_engine(store, cipher, catalogues, clock)
    code = await file_tip(engine)
    woken.clear()

    answers = await wrong_guesses(engine, CEILING, "guesser")
    assert answers == [["receipt.unknown"]] * CEILING  # the tripping failure itself is a real look-up
    (notice,) = await notices(store)
    assert notice.payload == {"kind": "notice", "notice": "receipt_guessing"} and notice.sink == "console"
    assert woken == [1]  # the worker is woken once, for the notice

    # Paused: the right code is refused like a wrong one, and nothing is looked up or counted.
    assert await guess(engine, "someone-with-the-receipt", code) == ["receipt.locked"]
    assert await guess(engine, "a-fresh-guesser") == ["receipt.locked"]
    assert await guess(engine, "someone-else", "") == ["receipt.locked"]  # even before a code is read
    assert await store.receipt_attempts.failures_since("someone-with-the-receipt", 0) == 0
    assert await store.receipt_attempts.failures_since("a-fresh-guesser", 0) == 0
    assert await store.receipt_attempts.failures_total_since(0) == CEILING
    # Many more refused attempts: still one notice for this tripping.
    for n in range(30):
        clock.advance(60)
        assert await guess(engine, f"late-{n}") == ["receipt.locked"]
    assert len(await notices(store)) == 1 and woken == [1]

    # An hour after the tripping failure, look-ups work again, for everyone.
    clock.now = notice.created_at + HOUR + 1
    assert await guess(engine, "someone-with-the-receipt", code) == ["check.status", "check.none"]
    assert await guess(engine, "a-fresh-guesser") == ["receipt.unknown"]


async def test_the_pause_lasts_a_full_hour_even_as_older_failures_age_out(
    store: SqliteStore, cipher: Cipher, catalogues: Catalogues, clock: Clock
) -> None:
    engine, _ = make_engine(store, cipher, catalogues, clock)
    code = await file_tip(engine)
    start = clock.now
    await wrong_guesses(engine, CEILING - 1, "early")
    clock.advance(50 * 60)
    assert await guess(engine, "tripper") == ["receipt.unknown"]  # the 12th failure in the hour trips
    tripped = clock.now

    # Ten minutes later the 11 early failures have left the last hour; the pause holds anyway.
    clock.now = start + HOUR + 60
    assert await store.receipt_attempts.failures_total_since(clock.now - HOUR) == 1
    assert await guess(engine, "someone-with-the-receipt", code) == ["receipt.locked"]
    clock.now = tripped + HOUR - 1
    assert await guess(engine, "someone-with-the-receipt", code) == ["receipt.locked"]
    clock.now = tripped + HOUR + 1
    assert await guess(engine, "someone-with-the-receipt", code) == ["check.status", "check.none"]
    assert len(await notices(store)) == 1


async def test_under_the_ceiling_nothing_pauses_and_a_new_tripping_sends_a_new_notice(
    store: SqliteStore, cipher: Cipher, catalogues: Catalogues, clock: Clock
) -> None:
    engine, _ = make_engine(store, cipher, catalogues, clock)
    code = await file_tip(engine)
    await wrong_guesses(engine, CEILING - 1, "first")
    assert await guess(engine, "someone-with-the-receipt", code) == ["check.status", "check.none"]
    assert await notices(store) == []

    await guess(engine, "tripper")  # the ceiling
    clock.advance(HOUR + 1)
    await wrong_guesses(engine, CEILING - 1, "second")  # the old hour has aged out: room again
    assert len(await notices(store)) == 1
    await guess(engine, "second-tripper")
    assert len(await notices(store)) == 2  # one per tripping


async def test_the_per_sender_lock_out_still_comes_first(store: SqliteStore, cipher: Cipher, catalogues: Catalogues, clock: Clock) -> None:
    engine, _ = make_engine(store, cipher, catalogues, clock)
    code = await file_tip(engine)
    assert [await guess(engine, "one-sender", f"000-000-000-00{n}") for n in range(6)] == [["receipt.unknown"]] * 5 + [["receipt.locked"]]
    assert await guess(engine, "one-sender", code) == ["receipt.locked"]
    assert await guess(engine, "another-sender", code) == ["check.status", "check.none"]  # the ceiling is far
    assert await notices(store) == []


# -- the notice reaches officers through every sink ----------------------------------------------


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI(token=TOKEN)
    with LoopbackServer(api.app) as server:
        api.base = server.url  # type: ignore[attr-defined]
        yield api


@pytest.fixture
def twilio_api() -> Iterator[FakeTwilioAPI]:
    api = FakeTwilioAPI()
    with LoopbackServer(api.app) as server:
        api.base = server.url  # type: ignore[attr-defined]
        yield api


@pytest.fixture
async def telegram_bot(telegram_api: FakeTelegramAPI) -> AsyncIterator[ExtBot]:
    bot = ExtBot(TOKEN, base_url=f"{telegram_api.base}/bot", rate_limiter=FloodLimiter(FAST))  # type: ignore[attr-defined]
    await bot.initialize()
    yield bot
    await bot.shutdown()


@pytest.fixture
async def twilio_rest(twilio_api: FakeTwilioAPI) -> AsyncIterator[TwilioRest]:
    rest = TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM_NUMBER, api_url=twilio_api.base)  # type: ignore[attr-defined]
    yield rest
    await rest.aclose()


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_one_notice_per_sink_in_the_officers_language(
    store: SqliteStore,
    cipher: Cipher,
    catalogues: Catalogues,
    clock: Clock,
    telegram_api: FakeTelegramAPI,
    twilio_api: FakeTwilioAPI,
    telegram_bot: ExtBot,
    twilio_rest: TwilioRest,
    language: str,
) -> None:
    officer = cipher.pseudonym("officer-sms", OFFICER_NUMBER)
    sinks = ("console", f"telegram:{GROUP}", f"sms:{officer}")
    engine, _ = make_engine(store, cipher, catalogues, clock, sinks)
    composer = AlertComposer(store, catalogues, language)
    console = io.StringIO()
    worker = OutboxWorker(
        store,
        {
            "console": ConsoleSink(composer, console),
            "telegram": TelegramAlertSink(telegram_bot, composer),
            "sms": OfficerSmsSink(lambda: twilio_rest, composer, {officer: OFFICER_NUMBER}),
        },
        clock=clock,
    )

    await wrong_guesses(engine, CEILING + 20, "guesser")
    assert await worker.run_once() == 3
    assert await worker.run_once() == 0  # nothing left: one notice each, not one per refused attempt

    text = catalogues.text(language, "notice.receipt_guessing")
    assert text and "{" not in text
    assert "OFFICER NOTICE" in console.getvalue() and text in console.getvalue()
    (group_message,) = telegram_api.sent_messages(GROUP)
    assert group_message["text"] == f"<b>{html.escape(text)}</b>" and group_message["parse_mode"] == "HTML"
    assert "reply_markup" not in group_message  # no case, so no Acknowledge / Show buttons
    assert [m["Body"] for m in twilio_api.sent() if m["To"] == OFFICER_NUMBER] == [text]
    counts = await store.outbox.counts()
    assert counts[OutboxStatus.DEAD] == 0 and counts[OutboxStatus.PENDING] == 0


def test_the_ceiling_is_a_setting_with_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).receipt_failures_per_hour == 200
    monkeypatch.setenv("TIPLINE_RECEIPT_FAILURES_PER_HOUR", "50")
    assert load_settings(_env_file=None).receipt_failures_per_hour == 50
    monkeypatch.setenv("TIPLINE_RECEIPT_FAILURES_PER_HOUR", "0")
    with pytest.raises(SettingsError, match="TIPLINE_RECEIPT_FAILURES_PER_HOUR"):
        load_settings(_env_file=None)
