"""The Telegram channel end to end: Tipline's real app (``create_app``) served on loopback with its
lifespan, the real python-telegram-bot client talking to ``FakeTelegramAPI`` over loopback, and
updates posted to the webhook with httpx as Telegram would post them.

The app runs in its own thread and event loop, so the tests are plain functions: they post, then
look at what the fake received and at the database file (read-only, with sqlite3).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.channels import registry
from bot.channels.telegram import channel as telegram
from bot.channels.telegram.limits import FloodLimits
from bot.i18n import Catalogues
from bot.settings import Settings, SettingsError
from bot.web import MAX_BODY_BYTES, create_app
from storage.sqlite import DB_FILENAME
from tests.fakes.server import LoopbackServer
from tests.fakes.images import PLANTED, phone_photo
from tests.fakes.telegram_api import (
    FakeTelegramAPI,
    make_callback_update,
    make_document_update,
    make_edited_message_update,
    make_photo_update,
    make_sticker_update,
    make_text_update,
)

TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
SECRET = "s3cret"
PUBLIC_URL = "http://127.0.0.1:1"
OFFICERS = -1001
CHAT = 7312345678  # a private chat's id is the person's user id
FIRST_NAME = "Zephyrine"
USERNAME = "zephy_tip_user"
PLACE = "Maple Motel 88 Rue Sainte-Catherine"
DETAILS = "blue van plate XKQ 4471 parks behind the motel"
RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
CATALOGUES = Catalogues.load()
# Limits that never make a test wait (the real ones are tested in test_telegram_parts.py).
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)


def opening(language: str, key: str) -> str:
    """The fixed start of a catalogue text (before any placeholder)."""
    return CATALOGUES.text(language, key).split("{")[0]


@dataclass
class Tipline:
    """One running Tipline (app + fake Bot API) and the person chatting with it."""

    fake: FakeTelegramAPI
    url: str
    data_dir: Path
    chat: int = CHAT
    language: str = "en"
    next_update: int = 100
    person_messages: list[int] = field(default_factory=list)

    def post(self, update: dict[str, Any] | bytes, secret: str | None = SECRET) -> httpx.Response:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        if isinstance(update, dict):
            update = json.dumps(update).encode()
        return httpx.post(f"{self.url}/telegram/webhook", content=update, headers={**headers, "content-type": "application/json"}, timeout=20)

    def new_update_id(self) -> int:
        self.next_update += 1
        return self.next_update

    def text_update(self, text: str) -> dict[str, Any]:
        update_id = self.new_update_id()
        message_id = 10_000 + update_id  # the person's ids, apart from the fake's ids for the bot's messages
        self.person_messages.append(message_id)
        return make_text_update(
            update_id, self.chat, text, language_code=self.language, message_id=message_id, first_name=FIRST_NAME, username=USERNAME
        )

    def sent(self) -> list[dict[str, Any]]:
        return self.fake.sent_messages(self.chat)

    def say(self, text: str) -> list[dict[str, Any]]:
        """Type ``text``; the bot's messages in answer."""
        before = len(self.sent())
        response = self.post(self.text_update(text))
        assert response.status_code == 200, response.text
        return self.sent()[before:]

    def buttons(self) -> tuple[int, list[dict[str, str]]]:
        """The newest message in the chat that still has buttons, and its buttons."""
        with self.fake._lock:
            found = [
                (message_id, msg["reply_markup"]["inline_keyboard"])
                for (chat, message_id), msg in self.fake.messages.items()
                if chat == str(self.chat) and msg.get("reply_markup")
            ]
        message_id, rows = max(found)
        return message_id, [button for row in rows for button in row]

    def press_update(self, data: str) -> dict[str, Any]:
        message_id, buttons = self.buttons()
        assert data in [b["callback_data"] for b in buttons], (data, buttons)
        return make_callback_update(
            self.new_update_id(), self.chat, data, message_id, language_code=self.language, first_name=FIRST_NAME, username=USERNAME
        )

    def press(self, data: str) -> list[dict[str, Any]]:
        before = len(self.sent())
        response = self.post(self.press_update(data))
        assert response.status_code == 200, response.text
        return self.sent()[before:]

    def rows(self, table: str) -> int:
        with closing(sqlite3.connect(f"file:{self.data_dir / DB_FILENAME}?mode=ro", uri=True)) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def case_numbers(self) -> list[str]:
        with closing(sqlite3.connect(f"file:{self.data_dir / DB_FILENAME}?mode=ro", uri=True)) as db:
            return [row[0] for row in db.execute("SELECT case_number FROM tips ORDER BY case_number")]

    def wait_for(self, found: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := found():
                return result
            time.sleep(0.02)
        raise AssertionError("not seen in time")

    def officer_messages(self) -> list[dict[str, Any]]:
        return self.fake.sent_messages(OFFICERS)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeTelegramAPI, str]]:
    fake = FakeTelegramAPI(token=TOKEN, max_long_poll=0.2)
    with LoopbackServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def fake_api(fake_server: tuple[FakeTelegramAPI, str]) -> tuple[FakeTelegramAPI, str]:
    """The module's fake Bot API, with no memory of earlier tests."""
    fake_server[0].clear()
    return fake_server


@pytest.fixture
def start_tipline(make_settings: Callable[..., Settings], fake_api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Start Tipline's app with the Telegram channel on the fake; settings can be overridden."""
    fake, api_url = fake_api
    assert telegram.build in registry.FACTORIES  # the channel is registered
    factories = list(registry.FACTORIES)
    stack = ExitStack()

    def start(telegram_settings: dict[str, Any] | None = None, channel_options: dict[str, Any] | None = None, **values: Any) -> Tipline:
        """``channel_options`` go to ``telegram.build`` (e.g. ``update_retry_delay``)."""
        fast = partial(telegram.build, **{"limits": FAST, "retry_delay": 0.05, "poll_timeout": 1.0, **(channel_options or {})})
        monkeypatch.setattr(registry, "FACTORIES", [fast if f is telegram.build else f for f in factories])
        values.setdefault("public_url", PUBLIC_URL)
        values.setdefault("officers", {"telegram_chat_ids": [OFFICERS]})
        settings = make_settings(telegram={"token": TOKEN, "api_url": api_url, "webhook_secret": SECRET, **(telegram_settings or {})}, **values)
        server = stack.enter_context(LoopbackServer(create_app(settings), lifespan="on"))
        return Tipline(fake, server.url, tmp_path / "data")

    with stack:
        yield start


@pytest.fixture
def tipline(start_tipline) -> Tipline:
    return start_tipline()


# --- start-up -------------------------------------------------------------------------------------


def test_startup_registers_the_webhook_with_secret_and_public_url(tipline: Tipline):
    (call,) = tipline.fake.calls_of("setWebhook")
    assert call.params["url"] == f"{PUBLIC_URL}/telegram/webhook"
    assert call.params["secret_token"] == SECRET
    assert call.params["allowed_updates"] == ["message", "callback_query"]
    assert "drop_pending_updates" not in call.params


def test_webhook_mode_without_secret_refuses_to_start(make_settings: Callable[..., Settings]):
    settings = make_settings(public_url=PUBLIC_URL, telegram={"token": TOKEN, "api_url": "http://127.0.0.1:9"})
    with pytest.raises(SettingsError, match="TIPLINE_TELEGRAM__WEBHOOK_SECRET"):
        create_app(settings)


def test_no_token_no_channel(make_settings: Callable[..., Settings]):
    assert telegram.build(make_settings()) is None


# --- the webhook, case by case --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    body: Callable[[Tipline], dict[str, Any] | bytes]
    status: int
    reply_key: str | None = None  # the catalogue key of the one reply expected, None for silence
    secret: str | None = SECRET
    engine_called: bool = True


CASES = [
    Case("valid", lambda t: t.text_update("/start"), 200, "danger.question"),
    Case("missing secret", lambda t: t.text_update("/start"), 403, secret=None, engine_called=False),
    Case("wrong secret", lambda t: t.text_update("/start"), 403, secret="s3creT", engine_called=False),
    Case("malformed JSON", lambda t: b'{"update_id": 5, "message": ', 400, engine_called=False),
    Case("JSON that is not an update", lambda t: b'[{"update_id": 5}]', 400, engine_called=False),
    Case("oversized body", lambda t: b'{"update_id": 5, "x": "' + b"a" * MAX_BODY_BYTES + b'"}', 413, engine_called=False),
    Case(
        "group message",
        lambda t: make_text_update(t.new_update_id(), -100777, "/start hello", user_id=CHAT, chat_type="supergroup"),
        200,
        engine_called=False,
    ),
    Case(
        "edited message",
        lambda t: make_edited_message_update(t.new_update_id(), CHAT, "changed words", message_id=5),
        200,
        engine_called=False,
    ),
    Case("sticker", lambda t: make_sticker_update(t.new_update_id(), CHAT, file_id="STICKER-FILE-77"), 200, "unsupported"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_webhook(tipline: Tipline, case: Case):
    response = tipline.post(case.body(tipline), secret=case.secret)

    assert response.status_code == case.status
    sent = tipline.fake.sent_messages()
    if case.reply_key is None:
        assert sent == []
    else:
        assert sent[-1]["text"].startswith(opening("en", case.reply_key))
        assert all(s["chat_id"] == str(CHAT) and s["protect_content"] == "true" for s in sent)
    # The engine records every update it handled (for de-duplication); nothing else was kept.
    assert tipline.rows("processed") == (1 if case.engine_called else 0)
    if case.name != "valid":
        assert tipline.rows("drafts") == tipline.rows("tips") == 0


def test_sticker_keeps_nothing_of_the_sticker(tipline: Tipline):
    tipline.post(make_sticker_update(tipline.new_update_id(), CHAT, file_id="STICKER-FILE-77"))
    raw = b"".join(p.read_bytes() for p in tipline.data_dir.iterdir() if p.is_file())
    assert b"STICKER-FILE-77" not in raw


def test_photo_with_caption_keeps_the_photo_stripped_and_the_caption(tipline: Tipline):
    tipline.say("/start")
    tipline.press("c:2")  # no danger
    tipline.press("c:2")  # witness
    tipline.press("c:1")
    tipline.press("c:2")
    tipline.say(PLACE)
    tipline.press("c:2")
    tipline.fake.add_file("photo-file-800", phone_photo(120, 80, orientation=6))
    before = len(tipline.sent())
    response = tipline.post(make_photo_update(tipline.new_update_id(), CHAT, caption=DETAILS))
    replies = tipline.sent()[before:]

    assert response.status_code == 200
    assert [r["text"] for r in replies] == [CATALOGUES.text("en", "picture.kept", count=1, limit=10), CATALOGUES.text("en", "details.more")]
    assert tipline.fake.downloads == ["photos/photo-file-800.bin"]  # the largest size, from the Bot API server
    assert tipline.rows("pictures") == 1
    raw = b"".join(p.read_bytes() for p in tipline.data_dir.iterdir() if p.is_file())
    for planted in (*PLANTED, "Exif", "photo-file-800"):
        assert planted.encode() not in raw, planted


def test_a_file_that_is_no_picture_is_refused_calmly(tipline: Tipline):
    tipline.say("/start")
    tipline.fake.add_file("doc-1", b"%PDF-1.4 not a picture")
    before = len(tipline.sent())
    tipline.post(make_document_update(tipline.new_update_id(), CHAT, "doc-1", "application/pdf", 22))
    replies = tipline.sent()[before:]
    assert replies[0]["text"] == CATALOGUES.text("en", "media.note")
    assert tipline.fake.downloads == [] and tipline.rows("pictures") == 0


def test_a_picture_sent_as_a_file_is_decoded_not_trusted(tipline: Tipline):
    tipline.say("/start")
    tipline.fake.add_file("fake-png", b"\x89PNG\r\n\x1a\n but nothing after")
    tipline.fake.add_file("real-png", phone_photo(fmt="PNG"))
    before = len(tipline.sent())
    tipline.post(make_document_update(tipline.new_update_id(), CHAT, "fake-png", "image/png", 30))
    tipline.post(make_document_update(tipline.new_update_id(), CHAT, "real-png", "image/png", 600))
    texts = [r["text"] for r in tipline.sent()[before:]]
    assert CATALOGUES.text("en", "picture.unreadable") in texts
    assert CATALOGUES.text("en", "picture.kept", count=1, limit=10) in texts
    assert tipline.rows("pictures") == 1


def test_duplicate_update_is_handled_once_and_answered_again(tipline: Tipline):
    finish_english_conversation(tipline, until_review=True)
    send = tipline.press_update("c:1")

    first = tipline.post(send)
    first_replies = tipline.sent()
    second = tipline.post(send)
    second_replies = tipline.sent()[len(first_replies) :]

    assert first.status_code == second.status_code == 200
    assert tipline.rows("tips") == 1
    tipline.wait_for(tipline.officer_messages)
    time.sleep(0.3)  # time for a second alert, if there were one
    assert len(tipline.officer_messages()) == 1
    # The same receipt again (not a new one), and the deletion offer again.
    receipt = [r["text"] for r in first_replies if RECEIPT.search(r["text"])][-1]
    assert [r["text"] for r in second_replies] == [receipt, CATALOGUES.text("en", "telegram.delete_offer")]


def test_a_second_tap_on_an_answered_prompt_is_ignored(tipline: Tipline):
    tipline.say("/start")
    first_tap = tipline.press_update("c:2")
    double_tap = make_callback_update(tipline.new_update_id(), CHAT, "c:2", first_tap["callback_query"]["message"]["message_id"])

    assert tipline.post(first_tap).status_code == 200
    before = len(tipline.sent())
    assert tipline.post(double_tap).status_code == 200

    assert tipline.sent()[before:] == []  # role was not answered by the second tap
    assert len(tipline.fake.calls_of("answerCallbackQuery")) == 2  # both spinners stopped
    _, buttons = tipline.buttons()
    assert buttons[0]["text"] == f"1 {CATALOGUES.text('en', 'role.affected')}"  # still asking the role


# --- delivery -------------------------------------------------------------------------------------


def test_telegram_429_is_waited_out_and_the_reply_still_arrives(tipline: Tipline):
    tipline.fake.fail_next("sendMessage", status=429, retry_after=1)
    started = time.monotonic()
    replies = tipline.say("/start")

    assert time.monotonic() - started >= 1.0
    assert [c.status for c in tipline.fake.calls_of("sendMessage")][:2] == [429, 200]
    assert replies[-1]["text"].startswith(opening("en", "danger.question"))


def test_a_failed_send_asks_telegram_to_retry_and_the_retry_resends_without_refiling(tipline: Tipline):
    update = tipline.text_update("/start")
    tipline.fake.fail_next("sendMessage", status=502)

    assert tipline.post(update).status_code == 503
    assert tipline.sent() == []
    assert tipline.post(update).status_code == 200

    texts = [s["text"] for s in tipline.sent()]
    assert texts[0] == CATALOGUES.text("en", "safety.notice")
    assert texts[1].startswith(opening("en", "danger.question"))
    assert tipline.rows("processed") == 1 and tipline.rows("drafts") == 1


# --- whole conversations --------------------------------------------------------------------------


def finish_english_conversation(tipline: Tipline, *, until_review: bool = False) -> list[dict[str, Any]]:
    """Answer every question, choices by button; the replies to the last answer."""
    first = tipline.say("/start")
    assert first[0]["text"] == CATALOGUES.text("en", "safety.notice")
    assert first[1]["text"].startswith(opening("en", "danger.question"))
    steps: list[tuple[Callable[[str], list[dict[str, Any]]], str, str]] = [
        (tipline.press, "c:2", "role.question"),  # no danger
        (tipline.press, "c:2", "kind.question"),  # a witness
        (tipline.press, "c:2", "minors.question"),  # forced work
        (tipline.press, "c:2", "where.question"),  # no minors
        (tipline.say, PLACE, "when.question"),
        (tipline.press, "c:2", "details.question"),  # today
        (tipline.say, DETAILS, "details.more"),
        (tipline.say, "DONE", "contact.question"),
        (tipline.press, "c:1", "review.question"),  # officers may reply
    ]
    for act, answer, key in steps:
        replies = act(answer)
        assert replies[-1]["text"].startswith(opening("en", key)), (answer, replies)
    if until_review:
        return replies
    return tipline.press("c:1")  # send


def test_english_conversation_by_buttons_ends_with_receipt_and_deletion_offer(tipline: Tipline):
    replies = finish_english_conversation(tipline)

    receipt, offer = replies
    assert receipt["text"].startswith(opening("en", "submitted.receipt")) and RECEIPT.search(receipt["text"])
    assert offer["text"] == CATALOGUES.text("en", "telegram.delete_offer")
    (buttons,) = offer["reply_markup"]["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [("Delete now", "del:yes:en"), ("Keep it", "del:no:en")]
    # Every message to the person is plain text that cannot be forwarded.
    assert all(s["protect_content"] == "true" and "parse_mode" not in s for s in tipline.sent())
    # What stays is the short after-receipt state (the case id only, "thanks" is not a new report).
    assert tipline.rows("tips") == 1 and tipline.rows("drafts") == 1


def test_french_conversation_by_buttons(tipline: Tipline):
    tipline.language = "fr"  # Telegram's language_code skips the language question
    replies = tipline.say("/start")
    assert replies[0]["text"] == CATALOGUES.text("fr", "safety.notice")
    labels = [row[0]["text"] for row in replies[1]["reply_markup"]["inline_keyboard"]]
    assert labels == [f"{n} {CATALOGUES.text('fr', key)}" for n, key in (("1", "answer.yes"), ("2", "answer.no"), ("3", "answer.unsure"))]
    for act, answer, key in [
        (tipline.press, "c:3", "role.question"),  # pas certain
        (tipline.press, "c:3", "kind.question"),  # préfère ne pas dire
        (tipline.press, "c:1", "minors.question"),
        (tipline.press, "c:3", "where.question"),
        (tipline.say, "Hôtel Étoile, boulevard Imaginaire", "when.question"),
        (tipline.press, "c:0", "details.question"),  # passer
        (tipline.say, "Deux jeunes femmes ne sortent jamais", "details.more"),
        (tipline.say, "fini", "contact.question"),
        (tipline.press, "c:2", "review.question"),
    ]:
        replies = act(answer)
        assert replies[-1]["text"].startswith(opening("fr", key)), (answer, replies)
    receipt, offer = tipline.press("c:1")

    assert receipt["text"].startswith(opening("fr", "submitted.receipt")) and RECEIPT.search(receipt["text"])
    assert offer["text"] == CATALOGUES.text("fr", "telegram.delete_offer")
    (buttons,) = offer["reply_markup"]["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [("Effacer maintenant", "del:yes:fr"), ("La garder", "del:no:fr")]


def test_pressed_buttons_are_removed_so_old_prompts_cannot_answer_later_questions(tipline: Tipline):
    tipline.say("/start")
    danger_prompt, _ = tipline.buttons()
    tipline.press("c:2")

    assert "reply_markup" not in tipline.fake.messages[(str(CHAT), danger_prompt)]
    newest, _ = tipline.buttons()
    assert newest > danger_prompt


# --- deleting the conversation --------------------------------------------------------------------


def test_delete_yes_deletes_both_sides_of_the_conversation(tipline: Tipline):
    finish_english_conversation(tipline)
    offer_id, _ = tipline.buttons()
    bot_messages = {message_id for chat, message_id in tipline.fake.messages if chat == str(CHAT)}

    before = len(tipline.sent())
    response = tipline.post(tipline.press_update("del:yes:en"))

    assert response.status_code == 200
    deleted = [int(m) for call in tipline.fake.calls_of("deleteMessages") for m in call.params["message_ids"]]
    assert all(str(call.params["chat_id"]) == str(CHAT) and len(call.params["message_ids"]) <= 100 for call in tipline.fake.calls_of("deleteMessages"))
    assert set(deleted) == bot_messages | set(tipline.person_messages)
    assert offer_id in deleted
    assert tipline.sent()[before:] == []  # nothing left behind on the phone
    assert tipline.rows("message_refs") == 0


def test_delete_after_exit_still_has_the_conversation(tipline: Tipline):
    tipline.say("/start")
    tipline.press("c:2")
    erased, offer = tipline.say("EXIT")
    assert erased["text"] == CATALOGUES.text("en", "erased")
    assert offer["text"] == CATALOGUES.text("en", "telegram.delete_offer")

    tipline.post(tipline.press_update("del:yes:en"))

    (call,) = tipline.fake.calls_of("deleteMessages")
    assert set(tipline.person_messages) <= {int(m) for m in call.params["message_ids"]}


def test_delete_too_old_tells_the_person_to_delete_the_chat_themselves(tipline: Tipline):
    tipline.say("EXIT")
    tipline.fake.fail_next("deleteMessages", status=400, description="Bad Request: message can't be deleted for everyone")

    replies = tipline.press("del:yes:en")

    assert [r["text"] for r in replies] == [CATALOGUES.text("en", "telegram.delete_too_old")]
    assert tipline.rows("message_refs") == 0


def test_delete_no_keeps_the_chat_and_forgets_the_ids(tipline: Tipline):
    tipline.say("EXIT")
    offer_id, _ = tipline.buttons()

    assert tipline.press("del:no:en") == []

    assert tipline.fake.calls_of("deleteMessages") == []
    assert "reply_markup" not in tipline.fake.messages[(str(CHAT), offer_id)]
    assert tipline.rows("message_refs") == 0
    assert tipline.rows("processed") == 1  # the deletion buttons never reached the engine


# --- officer alerts -------------------------------------------------------------------------------


def test_officer_alert_arrives_in_the_officer_group_with_the_case_number(tipline: Tipline):
    finish_english_conversation(tipline)

    (alert,) = tipline.wait_for(tipline.officer_messages)
    (case,) = tipline.case_numbers()
    # Headline first (flags, the place as the person typed it, the case), then what happened.
    assert alert["text"].startswith(f"<b>{PLACE[:39]}")
    assert f" — {case}</b>\n{CATALOGUES.text('en', 'alert.new', case=case)}\n" in alert["text"]
    assert alert["parse_mode"] == "HTML"
    assert alert["link_preview_options"] == {"is_disabled": True}
    assert PLACE in alert["text"]


def test_officer_alert_escapes_what_the_tipster_typed(start_tipline):
    tipline = start_tipline(officers={"telegram_chat_ids": [OFFICERS], "full_details": True})
    hostile = "<b>x</b><a href='http://evil'>"
    tipline.say("/start")
    for data in ("c:2", "c:2", "c:2", "c:2"):
        tipline.press(data)
    tipline.say(hostile)
    tipline.press("c:0")
    tipline.say(hostile + " & more")
    tipline.say("DONE")
    tipline.press("c:2")
    tipline.press("c:1")

    (alert,) = tipline.wait_for(tipline.officer_messages)
    text = alert["text"]
    assert "&lt;b&gt;x&lt;/b&gt;&lt;a href=&#x27;http://evil&#x27;&gt;" in text
    assert "&amp; more" in text
    assert "<a " not in text and text.count("<b>") == 1  # only the title is bold


# --- polling --------------------------------------------------------------------------------------


def test_polling_mode_answers_pushed_updates(start_tipline):
    tipline = start_tipline(public_url=None, telegram_settings={"webhook_secret": None})
    fake = tipline.fake
    assert fake.calls_of("deleteWebhook") and not fake.calls_of("setWebhook")
    assert httpx.post(f"{tipline.url}/telegram/webhook", content=b"{}").status_code == 404  # no webhook route

    fake.push_update(tipline.text_update("/start"))
    replies = tipline.wait_for(lambda: tipline.sent()[1:])
    assert replies[-1]["text"].startswith(opening("en", "danger.question"))

    fake.push_update(tipline.press_update("c:2"))
    role = tipline.wait_for(lambda: tipline.sent()[2:])
    assert role[-1]["text"].startswith(opening("en", "role.question"))
    assert all("drop_pending_updates" not in c.params for c in fake.calls_of("deleteWebhook"))


def test_polling_refetches_an_update_whose_reply_failed(start_tipline):
    tipline = start_tipline(public_url=None, telegram_settings={"webhook_secret": None})
    tipline.fake.fail_next("sendMessage", status=502)

    tipline.fake.push_update(tipline.text_update("/start"))

    replies = tipline.wait_for(lambda: tipline.sent()[1:])
    assert replies[-1]["text"].startswith(opening("en", "danger.question"))
    assert tipline.rows("processed") == 1


# --- privacy --------------------------------------------------------------------------------------


def test_nothing_identifying_reaches_the_database_or_the_logs(start_tipline, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    tipline = start_tipline()
    finish_english_conversation(tipline)
    tipline.wait_for(tipline.officer_messages)
    secrets = [str(CHAT), FIRST_NAME, USERNAME, PLACE, DETAILS, "Maple Motel", "XKQ 4471"]

    raw = b"".join(p.read_bytes() for p in tipline.data_dir.iterdir() if p.is_file())
    assert tipline.rows("tips") == 1  # the data is there, just not readable
    for secret in secrets:
        assert secret.encode() not in raw, secret
    for secret in secrets:
        assert secret not in caplog.text, secret
    assert "telegram" in caplog.text  # the channel did log, by pseudonym and update id
