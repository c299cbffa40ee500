"""The Telegram channel's parts, each through the real python-telegram-bot client against
``FakeTelegramAPI`` on loopback: flood limits, alert HTML and delivery errors, officers' replies
to tipsters, start-up failures, and when an update is given up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import RetryAfter
from telegram.ext import ExtBot

from bot.channels.telegram import channel as telegram
from bot.channels.telegram.alerts import GROUP_UNREACHABLE, TelegramAlertSink, alert_html
from bot.channels.telegram.limits import FloodLimiter, FloodLimits, Retries
from bot.channels.telegram.messages import choice_keyboard, delete_answer, inbound_from_message, split_text
from bot.messages import Choice, InboundKind, OutboundMessage
from bot.i18n import Catalogues
from bot.outbox import UNREACHABLE_RETRY_SECONDS, DeliveryError
from bot.runtime import Runtime
from bot.settings import Settings
from handlers.alerts import AlertEvent, enqueue_alert
from storage.records import Followup, OutboxItem, OutboxStatus, Tip, TipStatus
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import (
    FakeTelegramAPI,
    make_callback_update,
    make_location_update,
    make_document_update,
    make_photo_update,
    make_sticker_update,
    make_text_update,
    make_voice_update,
)

TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
CHAT = 7312345678
GROUP = -1001
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)


@pytest.fixture
def fake() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI(token=TOKEN)
    with LoopbackServer(api.app) as server:
        api.base = server.url  # type: ignore[attr-defined]
        yield api


@pytest.fixture
async def bot(fake: FakeTelegramAPI) -> AsyncIterator[Callable[[FloodLimits], Awaitable[ExtBot]]]:
    opened: list[ExtBot] = []

    async def build(limits: FloodLimits = FAST) -> ExtBot:
        made = ExtBot(TOKEN, base_url=f"{fake.base}/bot", rate_limiter=FloodLimiter(limits))
        await made.initialize()  # so that shutdown() closes its HTTP connections
        opened.append(made)
        return made

    yield build
    for made in opened:
        await made.shutdown()


# --- updates in, messages out --------------------------------------------------------------------


def inbound(update: dict):
    parsed = Update.de_json(update, None)
    return inbound_from_message(parsed.message, parsed.update_id, "pseudonym")


def test_a_text_message_becomes_an_inbound_message_with_no_identifier_in_it():
    msg = inbound(make_text_update(41, CHAT, "hello", language_code="fr", message_id=9, first_name="Zephyrine", username="zephy"))

    assert (msg.channel, msg.sender, msg.text, msg.kind) == ("telegram", "pseudonym", "hello", InboundKind.TEXT)
    assert (msg.provider_id, msg.language_hint, msg.message_ref, msg.reply_address) == ("41", "fr", "9", str(CHAT))
    assert str(CHAT) not in repr(msg) and "Zephyrine" not in repr(msg)  # the address is repr=False


@pytest.mark.parametrize(
    ("text", "kind", "kept"),
    [("/start", InboundKind.START, ""), ("/start campaign-7", InboundKind.START, "campaign-7"), ("/start@tipline_test_bot", InboundKind.START, ""), ("/help", InboundKind.TEXT, "/help")],
)
def test_start_and_its_deep_link_payload(text, kind, kept):
    msg = inbound(make_text_update(1, CHAT, text))
    assert (msg.kind, msg.text) == (kind, kept)


@pytest.mark.parametrize(
    "update",
    [make_sticker_update(1, CHAT), make_voice_update(1, CHAT), make_location_update(1, CHAT)],
    ids=["sticker", "voice", "location"],
)
def test_what_cannot_be_kept_as_words_is_unsupported_and_carries_no_content(update):
    msg = inbound(update)
    assert (msg.kind, msg.text, msg.has_media) == (InboundKind.UNSUPPORTED, "", False)


def test_a_photo_with_a_caption_keeps_the_caption_and_its_largest_size():
    msg = inbound(make_photo_update(1, CHAT, caption="the van"))
    assert (msg.kind, msg.text, msg.has_media) == (InboundKind.TEXT, "the van", True)
    (ref,) = msg.media
    assert (ref.source, ref.locator, ref.content_type) == ("telegram", "photo-file-800", "image/jpeg")
    assert "photo-file" not in repr(msg)  # a file id is never logged


def test_a_photo_without_a_caption_is_a_picture_with_no_text():
    msg = inbound(make_photo_update(1, CHAT))
    assert (msg.kind, msg.text, len(msg.media)) == (InboundKind.TEXT, "", 1)


def test_a_document_carries_its_declared_type_to_be_checked():
    msg = inbound(make_document_update(1, CHAT, "doc-9", "application/pdf", 1234))
    assert [(r.locator, r.content_type, r.size) for r in msg.media] == [("doc-9", "application/pdf", 1234)]


def test_a_service_message_is_not_answered():
    update = make_text_update(1, CHAT, "x")
    del update["message"]["text"]
    update["message"]["message_auto_delete_timer_changed"] = {"message_auto_delete_time": 86400}
    assert inbound(update) is None


def test_choices_become_one_button_per_row_answering_like_the_number():
    markup = choice_keyboard(OutboundMessage("Q?", (Choice("1", "Yes"), Choice("2", "No"))))
    assert [[(b.text, b.callback_data) for b in row] for row in markup.inline_keyboard] == [[("1 Yes", "c:1")], [("2 No", "c:2")]]
    assert choice_keyboard(OutboundMessage("Thanks")) is None


@pytest.mark.parametrize(("data", "expected"), [("del:yes:fr", (True, "fr")), ("del:no:en", (False, "en")), ("del:maybe:en", None), ("c:1", None)])
def test_deletion_buttons_are_read_back(data, expected):
    query = Update.de_json(make_callback_update(1, CHAT, data, 5), None).callback_query
    answer = delete_answer(query)
    assert (answer and (answer.confirmed, answer.language)) == expected


# --- flood limits ---------------------------------------------------------------------------------


async def test_one_private_chat_is_spaced_but_other_chats_are_not_held_up(bot, fake: FakeTelegramAPI):
    sender = await bot(FloodLimits(chat_burst=1, chat_period=0.3))
    started = time.monotonic()
    await asyncio.gather(*(sender.send_message(CHAT, f"m{i}") for i in range(3)), sender.send_message(CHAT + 1, "other"))
    elapsed = time.monotonic() - started

    assert elapsed >= 0.6  # three messages, 0.3 s apart
    other = next(i for i, c in enumerate(fake.calls_of("sendMessage")) if c.params["chat_id"] == str(CHAT + 1))
    assert other <= 1  # the other chat went out at once, not behind the first chat's queue


async def test_a_group_gets_its_burst_then_waits(bot, fake: FakeTelegramAPI):
    sender = await bot(FloodLimits(group_max=2, group_period=0.4))
    started = time.monotonic()
    for i in range(3):
        await sender.send_message(GROUP, f"alert {i}")

    assert time.monotonic() - started >= 0.4
    assert len(fake.sent_messages(GROUP)) == 3


async def test_edits_and_callback_answers_are_not_throttled(bot, fake: FakeTelegramAPI):
    sender = await bot(FloodLimits(chat_burst=1, chat_period=5))
    message = await sender.send_message(CHAT, "prompt", reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("1 Yes", callback_data="c:1")]]))
    started = time.monotonic()
    await sender.edit_message_reply_markup(CHAT, message.message_id, reply_markup=None)
    await sender.answer_callback_query("cbq-1")

    assert time.monotonic() - started < 1


async def test_429_is_waited_out_and_retried(bot, fake: FakeTelegramAPI):
    sender = await bot(FAST)
    fake.fail_next("sendMessage", times=2, status=429, retry_after=1)
    started = time.monotonic()
    await sender.send_message(CHAT, "hello")

    assert time.monotonic() - started >= 2
    assert [c.status for c in fake.calls_of("sendMessage")] == [429, 429, 200]


async def test_429_beyond_the_wait_limit_or_with_no_retries_is_raised_at_once(bot, fake: FakeTelegramAPI):
    sender = await bot(FloodLimits(max_retry_wait=5))
    fake.fail_next("sendMessage", status=429, retry_after=60)
    with pytest.raises(RetryAfter):
        await sender.send_message(CHAT, "hello")
    fake.fail_next("sendMessage", status=429, retry_after=1)
    with pytest.raises(RetryAfter):
        await sender.send_message(CHAT, "hello", rate_limit_args=Retries(0))
    assert len(fake.calls_of("sendMessage")) == 2


# --- officer alerts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StubTip:
    case_number: str = "26-0001"


@dataclass
class Composed:
    text: str
    tip: StubTip = StubTip()
    pictures: int = 0


class StubComposer:
    """Stands in for AlertComposer (which needs a stored tip): returns a fixed alert text."""

    catalogues = Catalogues.load()
    language = "en"

    def __init__(self, text: str | None) -> None:
        self.text = text

    async def compose(self, item: OutboxItem) -> Composed | None:
        return None if self.text is None else Composed(self.text)


def alert_item() -> OutboxItem:
    return OutboxItem("a" * 32, f"telegram:{GROUP}", {"kind": "alert", "event": "new", "tip_id": "t"}, OutboxStatus.PENDING, 0, 0.0, 0.0)


def test_alert_html_makes_the_title_bold_and_escapes_everything():
    (html,) = alert_html("New tip <b>, case 26-0001\nWhere: <a href='http://evil'>x</a> & co")

    assert html == "<b>New tip &lt;b&gt;, case 26-0001</b>\nWhere: &lt;a href=&#x27;http://evil&#x27;&gt;x&lt;/a&gt; &amp; co"


def test_long_alerts_are_split_within_telegrams_limit():
    text = "Case 26-0001\n" + "\n".join(f"+ detail line {i} " + "x" * 200 for i in range(60))
    pieces = alert_html(text)

    assert len(pieces) > 1
    assert all(len(p) <= 4096 for p in pieces)
    assert pieces[0].startswith("<b>Case 26-0001</b>") and all("<b>" not in p for p in pieces[1:])


def test_split_text_cuts_at_line_ends_and_loses_nothing():
    text = "\n".join(f"line {i}" for i in range(50)) + "\n" + "y" * 95
    pieces = split_text(text, limit=40)

    assert all(len(p) <= 40 for p in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")
    assert split_text("short") == ["short"]


async def test_alert_sink_sends_html_without_link_previews(bot, fake: FakeTelegramAPI):
    sink = TelegramAlertSink(await bot(FAST), StubComposer("New tip, case 26-0001\nWhere: http://example.org"))
    await sink.deliver(alert_item(), str(GROUP))

    (sent,) = fake.sent_messages(GROUP)
    assert sent["parse_mode"] == "HTML" and sent["link_preview_options"] == {"is_disabled": True}
    assert sent["text"] == "<b>New tip, case 26-0001</b>\nWhere: http://example.org"


async def test_alert_sink_has_nothing_to_send_for_a_purged_tip(bot, fake: FakeTelegramAPI):
    await TelegramAlertSink(await bot(FAST), StubComposer(None)).deliver(alert_item(), str(GROUP))
    assert fake.calls_of("sendMessage") == []


@pytest.mark.parametrize(
    ("status", "description", "permanent", "unreachable", "retry_after"),
    [
        (429, None, False, False, 7.0),
        (502, None, False, False, None),
        (500, None, False, False, None),
        (403, "Forbidden: bot was kicked from the supergroup chat", False, True, None),
        (403, "Forbidden: bot is not a member of the group chat", False, True, None),
        (400, "Bad Request: chat not found", False, True, None),
        (400, "Bad Request: can't parse entities: unsupported start tag", True, False, None),
    ],
    ids=["429 waits", "502 retries", "500 retries", "403 kicked", "403 not a member", "400 chat not found", "400 bad markup"],
)
async def test_alert_sink_maps_telegram_errors_for_the_outbox(bot, fake: FakeTelegramAPI, status, description, permanent, unreachable, retry_after):
    fake.fail_next("sendMessage", status=status, retry_after=7, **({"description": description} if description else {}))
    sink = TelegramAlertSink(await bot(FAST), StubComposer("New tip, case 26-0001"))

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(alert_item(), str(GROUP))

    # A 429 is a wait, not a failed attempt (issue 16): the outbox does not count it.
    assert (info.value.permanent, info.value.unreachable, info.value.deferred) == (permanent, unreachable, status == 429)
    assert info.value.retry_after == retry_after
    if unreachable:  # what is wrong and what to do, naming no chat and quoting nothing sent
        assert str(info.value) == GROUP_UNREACHABLE and str(GROUP) not in str(info.value)
    assert len(fake.calls_of("sendMessage")) == 1  # the outbox retries, not the sink


# --- the channel on a runtime, in this event loop -------------------------------------------------


@pytest.fixture
async def runtime(make_settings: Callable[..., Settings], fake: FakeTelegramAPI) -> AsyncIterator[Runtime]:
    settings = make_settings(telegram={"token": TOKEN, "api_url": fake.base, "mode": "polling"})
    opened = await Runtime.open(settings)
    yield opened
    await opened.close()


async def test_officer_reply_reaches_the_tipster_and_joins_the_deletable_conversation(runtime: Runtime, fake: FakeTelegramAPI):
    channel = telegram.build(runtime.settings, limits=FAST, poll_timeout=0.1)
    await channel.start(runtime)
    try:
        assert runtime.tipster_sink.senders["telegram"] is channel
        await channel.send_to_tipster(str(CHAT), "Officers: thank you. Is the van still there?")
        fake.fail_next("sendMessage", status=403)
        with pytest.raises(DeliveryError) as blocked:
            await channel.send_to_tipster(str(CHAT), "second")
    finally:
        await channel.stop()

    (sent,) = fake.sent_messages(CHAT)
    assert sent["protect_content"] == "true" and "parse_mode" not in sent
    assert blocked.value.permanent
    refs = await runtime.store.message_refs.get(runtime.cipher.tipster_pseudonyms("telegram", str(CHAT)).current)
    assert len(refs) == 1 and refs[0].isdigit()


async def test_forbidden_waits_for_an_officer_group_but_gives_up_on_a_tipster_who_blocked_the_bot(runtime: Runtime, fake: FakeTelegramAPI):
    """The same 403, two verdicts: an officers' group that lost the bot is fixed by a person, so its
    alert waits (pending, unreachable); a tipster who blocked the bot will not be reached, so the
    officer's reply notice is given up (dead, as before)."""
    channel = telegram.build(runtime.settings, limits=FAST, poll_timeout=0.1)
    await channel.start(runtime)
    runtime.route_alerts(channel.sinks(), (f"telegram:{GROUP}",))  # the group is a configured target
    now = time.time()
    tip = Tip(uuid.uuid4().hex, "26-0001", TipStatus.OPEN, "s1", "telegram", "en", now, now, contact_ok=True, contact_address=str(CHAT))
    followup = Followup(uuid.uuid4().hex, tip.id, "officer", "Which floor?", now)
    reply = OutboxItem(uuid.uuid4().hex, "tipster:telegram", {"kind": "reply", "tip_id": tip.id, "followup_id": followup.id}, OutboxStatus.PENDING, 0, now, now)
    async with runtime.store.transaction() as tx:
        await tx.tips.save(tip)
        await tx.followups.add(followup)
        await enqueue_alert(tx, tip, AlertEvent.NEW, (f"telegram:{GROUP}",), now)
        await tx.outbox.add(reply)
    fake.fail_chat(GROUP, 403, "Forbidden: bot was kicked from the group chat")
    fake.fail_chat(CHAT, 403, "Forbidden: bot was blocked by the user")
    try:
        await runtime.worker.run_once()
    finally:
        await channel.stop()

    (alert,) = [e for e in await runtime.store.outbox.listing((OutboxStatus.PENDING, OutboxStatus.DEAD)) if e.sink.startswith("telegram:")]
    assert (alert.status, alert.unreachable, alert.attempts, alert.last_error) == (OutboxStatus.PENDING, True, 0, GROUP_UNREACHABLE)
    assert alert.next_at >= now + UNREACHABLE_RETRY_SECONDS
    given_up = await runtime.store.outbox.get(reply.id)
    assert (given_up.status, given_up.attempts) == (OutboxStatus.DEAD, 1)
    assert given_up.last_error.startswith("telegram Forbidden") and "blocked by the user" in given_up.last_error
    assert str(CHAT) not in given_up.last_error
    assert await runtime.store.outbox.unreachable() == {f"telegram:{GROUP}": 1}


async def test_a_rejected_token_stops_start_up_without_printing_it(make_settings, fake: FakeTelegramAPI):
    settings = make_settings(telegram={"token": "654321:WRONG-token-WRONG-token-xx", "api_url": fake.base, "mode": "polling"})
    opened = await Runtime.open(settings)
    try:
        with pytest.raises(telegram.TelegramSetupError) as info:
            await telegram.build(settings, limits=FAST).start(opened)
    finally:
        await opened.close()
    assert "TIPLINE_TELEGRAM__TOKEN" in str(info.value) and "WRONG" not in str(info.value)


async def test_unreachable_telegram_does_not_stop_start_up(make_settings, caplog: pytest.LogCaptureFixture):
    settings = make_settings(
        public_url="https://tips.example.org", telegram={"token": TOKEN, "api_url": "http://127.0.0.1:9", "webhook_secret": "s3cret"}
    )
    opened = await Runtime.open(settings)
    channel = telegram.build(settings, limits=FAST, retry_delay=0.05)
    try:
        await channel.start(opened)
        await asyncio.sleep(0.2)  # a background attempt or two
        started = time.monotonic()
        await channel.stop()
        assert time.monotonic() - started < 2
    finally:
        await opened.close()
    assert "unreachable" in caplog.text


# --- giving up on an update (the polling lanes are tested in test_telegram_polling.py) -----------


def test_an_update_that_keeps_failing_is_dropped_after_five_tries(make_settings) -> None:
    from bot.channels.telegram.channel import MAX_UPDATE_FAILURES, build
    from bot.channels.telegram.polling import Outcome

    channel = build(make_settings(telegram={"token": "123456:" + "A" * 35, "mode": "polling"}))
    outcomes = [channel._retry_or_give_up(77) for _ in range(MAX_UPDATE_FAILURES)]
    assert outcomes == [Outcome.RETRY] * (MAX_UPDATE_FAILURES - 1) + [Outcome.DONE]
    assert channel._retry_or_give_up(78) is Outcome.RETRY  # counted per update
