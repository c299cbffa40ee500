"""The fake Bot API must be good enough for the *real* python-telegram-bot client.

Everything here goes over loopback TCP: PTB -> httpx -> uvicorn -> Starlette.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import threading
import time
from typing import Any
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, EndPointNotFound, NetworkError, RetryAfter
from telegram.ext import Application, CommandHandler, ContextTypes

from .server import LoopbackServer
from .telegram_api import FakeTelegramAPI, make_callback_update, make_text_update

TOKEN = "123456:TEST-token"


@pytest.fixture(autouse=True)
def _timedelta_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it PTB 22 emits a deprecation warning when reading
    # RetryAfter.retry_after (an int today, a timedelta in future) -> -W error.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture
def api() -> FakeTelegramAPI:
    return FakeTelegramAPI(token=TOKEN)


@pytest.fixture
def server(api: FakeTelegramAPI) -> Iterator[LoopbackServer]:
    with LoopbackServer(api.app) as srv:
        yield srv


@pytest.fixture
async def bot(server: LoopbackServer) -> AsyncIterator[Bot]:
    # PTB appends the token to base_url ("<base_url><token>/<method>") unless
    # base_url contains a "{token}" placeholder, hence ".../bot" without slash.
    async with Bot(TOKEN, base_url=f"{server.url}/bot") as bot:  # initialize/shutdown
        yield bot


async def test_loopback_server_serves_and_stops(api: FakeTelegramAPI) -> None:
    srv = LoopbackServer(api.app).start()
    try:
        async with httpx.AsyncClient() as client:
            res = await client.post(f"{srv.url}/bot{TOKEN}/getMe")
        assert res.json()["result"]["username"] == "tipline_test_bot"
    finally:
        srv.stop()
        srv.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = srv.url
    assert not [t for t in threading.enumerate() if t.name == "loopback-uvicorn"]


async def test_json_query_multipart_and_bad_token(api: FakeTelegramAPI, bot: Bot,
                                                  server: LoopbackServer) -> None:
    base = f"{server.url}/bot{TOKEN}"
    async with httpx.AsyncClient() as client:
        res = await client.post(f"{base}/sendmessage", json={"chat_id": 7, "text": "j"})
        assert res.json()["result"]["chat"] == {"id": 7, "type": "private"}
        await client.get(f"{base}/deleteMessages", params={"chat_id": 7, "message_ids": "[1]"})
        res = await client.post(f"{server.url}/bot1:wrong/getMe")
        assert res.status_code == 401
    assert api.calls_of("sendMessage")[-1].params == {"chat_id": 7, "text": "j"}
    assert api.calls_of("deleteMessages")[-1].params["message_ids"] == [1]

    def send_document(params: dict[str, Any]) -> dict[str, Any]:
        doc = {"file_id": "doc-1", "file_unique_id": "doc-1u", "file_name": "a.txt"}
        return {"message_id": 500, "date": 0, "chat": {"id": 42, "type": "private"},
                "document": doc}

    api.stub("sendDocument", send_document)  # unknown methods can be added ad hoc
    msg = await bot.send_document(42, b"hello", filename="a.txt", caption="c")
    assert msg.document.file_name == "a.txt"
    params = api.calls_of("sendDocument")[0].params
    # PTB uploads as multipart/form-data; the file part keeps the param's name.
    assert params["caption"] == "c" and params["document"]["content"] == b"hello"


async def test_initialize_calls_get_me(api: FakeTelegramAPI, bot: Bot) -> None:
    assert bot.id == 999 and bot.username == "tipline_test_bot"
    assert [c.method for c in api.calls] == ["getMe"]  # from initialize()
    me = await bot.get_me()
    assert me.is_bot and me.first_name == "Tipline"


async def test_send_message_records_decoded_markup(api: FakeTelegramAPI, bot: Bot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Tip 5", callback_data="tip:5")]])
    msg = await bot.send_message(42, "[not json] hello", reply_markup=markup)
    again = await bot.send_message(43, "second")

    assert msg.chat.id == 42 and msg.text == "[not json] hello"
    assert msg.reply_markup == markup  # echoed back and parsed by PTB
    assert again.message_id > msg.message_id
    (params,) = api.sent_messages(chat_id=42)
    assert params["chat_id"] == "42"  # form-encoded: scalars stay strings
    assert api.calls_of("sendMessage")[0].get_int("chat_id") == 42
    assert params["text"] == "[not json] hello"  # free text is never JSON-decoded
    assert params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Tip 5", "callback_data": "tip:5"}]]}


async def test_edit_and_delete(api: FakeTelegramAPI, bot: Bot) -> None:
    msg = await bot.send_message(42, "v1")
    edited = await bot.edit_message_text("v2", chat_id=42, message_id=msg.message_id)
    assert edited.text == "v2"
    with pytest.raises(BadRequest, match="not modified"):  # same as Telegram
        await bot.edit_message_text("v2", chat_id=42, message_id=msg.message_id)
    assert api.calls_of("editMessageText")[-1].status == 400

    assert await bot.delete_messages(42, [msg.message_id, 77]) is True
    assert api.calls_of("deleteMessages")[0].params["message_ids"] == [msg.message_id, 77]
    assert await bot.delete_message(42, 78) is True


async def test_get_updates_with_offset_and_long_poll(api: FakeTelegramAPI, bot: Bot) -> None:
    api.push_update(make_text_update(1, 42, "/start"))
    api.push_update(make_callback_update(2, 42, "tip:5", message_id=10))

    updates = await bot.get_updates(timeout=5)
    assert [u.update_id for u in updates] == [1, 2]
    assert updates[0].message.text == "/start" and updates[0].message.from_user.id == 42
    assert updates[1].callback_query.data == "tip:5"

    # The offset confirms 1 and 2; then the long-poll is capped at ~1s.
    started = time.monotonic()
    assert await bot.get_updates(offset=3, timeout=30) == ()
    assert 0.8 < time.monotonic() - started < 3
    assert api.calls_of("getUpdates")[-1].get_int("timeout") == 30


async def test_retry_after_then_success(api: FakeTelegramAPI, bot: Bot) -> None:
    api.fail_next("sendMessage", retry_after=3)
    with pytest.raises(RetryAfter) as exc_info:
        await bot.send_message(42, "hi")
    assert exc_info.value.retry_after == dtm.timedelta(seconds=3)

    await bot.send_message(42, "hi")
    assert [c.status for c in api.calls_of("sendMessage")] == [429, 200]
    assert len(api.sent_messages()) == 1  # only the delivered one


async def test_outage_and_other_failures(api: FakeTelegramAPI, bot: Bot) -> None:
    api.set_down(True)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.get_me()
    api.set_down(False)
    api.fail_next("getMe", times=2, status=500)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.get_me()
    api.fail_next("answerCallbackQuery", status=400, description="Bad Request: query is too old")
    with pytest.raises(BadRequest, match="^Query is too old$"):  # PTB strips "Bad Request: "
        await bot.answer_callback_query("cbq-1")
    assert await bot.get_me()


async def test_unknown_method_and_misc(api: FakeTelegramAPI, bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("noSuchMethod")
    assert api.calls[-1].method == "noSuchMethod" and api.calls[-1].status == 404

    assert await bot.set_my_commands([("start", "Start"), ("tip", "Send a tip")])
    assert [c.command for c in await bot.get_my_commands()] == ["start", "tip"]
    assert await bot.set_webhook("https://example.invalid/hook")
    assert (await bot.get_webhook_info()).url == "https://example.invalid/hook"
    assert await bot.delete_webhook()
    assert await bot.log_out() and await bot.close()


async def test_application_polling_end_to_end(api: FakeTelegramAPI,
                                              server: LoopbackServer) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(f"hello {update.effective_user.first_name}")

    app = Application.builder().token(TOKEN).base_url(f"{server.url}/bot").build()
    app.add_handler(CommandHandler("start", start))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        api.push_update(make_text_update(1, 42, "/start"))
        for _ in range(300):
            if api.sent_messages(42):
                break
            await asyncio.sleep(0.01)
        await app.updater.stop()
        await app.stop()
    assert api.sent_messages(42)[0]["text"] == "hello Alice"
    assert api.calls_of("deleteWebhook")  # PTB clears the webhook before polling
    assert not api.updates  # the final getUpdates confirmed update 1
