"""The officer workflow over Telegram, end to end: Tipline's real app (``create_app``) served on
loopback with its lifespan, the real python-telegram-bot client against ``FakeTelegramAPI`` (and,
for SMS tipsters, the real twilio client against ``FakeTwilioAPI``), updates posted to the webhook
as Telegram would post them. Officers command from their group by typing or by the buttons under an
alert; anyone else gets silence (groups) or the tipster flow (private chats); every officer action
is in the audit log. Alert delivery itself: test_officer_alerts.py.
"""

from __future__ import annotations

import httpx
import pytest

from bot.settings import SettingsError, load_settings
from storage.records import TipStatus
from tests.channels.officer_app import (  # noqa: F401 - fake_server, fake and serve are fixtures used by name
    NOT_AN_OFFICER,
    OFFICER,
    OTHER_GROUP,
    Group,
    case_of,
    fake,
    fake_server,
    file_urgent_tip,
    next_update_id,
    serve,
    tipster,
)
from tests.channels.test_telegram_app import CATALOGUES, CHAT, DETAILS, OFFICERS, PLACE, RECEIPT, finish_english_conversation, opening
from tests.channels.test_twilio_sms import (  # noqa: F401 - fake_twilio is a fixture used by name
    ACCOUNT_SID,
    AUTH_TOKEN,
    ENGLISH_FLOW,
    FROM_NUMBER,
    fake_twilio,
    inbound,
    messages,
    signature,
)
from tests.fakes.telegram_api import BOT_USER, FakeTelegramAPI, make_callback_update, make_text_update


# --- who may command ------------------------------------------------------------------------------


def test_telegram_user_ids_setting_is_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).officers.telegram_user_ids == []  # unset: nobody may command
    assert load_settings(_env_file=None).officers.every_member_is_officer is False
    monkeypatch.setenv("TIPLINE_OFFICERS__TELEGRAM_USER_IDS", "424242, 515151")
    assert load_settings(_env_file=None).officers.telegram_user_ids == [424242, 515151]
    monkeypatch.setenv("TIPLINE_OFFICERS__TELEGRAM_USER_IDS", "424242,@sergeant")
    with pytest.raises(SettingsError, match="^setting TIPLINE_OFFICERS__TELEGRAM_USER_IDS:"):
        load_settings(_env_file=None)


def test_without_an_officer_list_commands_and_buttons_are_refused_in_one_line(serve, fake: FakeTelegramAPI) -> None:
    running = serve(officers={"telegram_user_ids": []})
    group = Group(fake, running.url)
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    group.alert(CATALOGUES.text("en", "alert.urgent", case=case))

    for answer in (group.type("/list"), group.type(f"/close {case} done"), group.press(f"o:ack:{case}")):
        (refusal,) = answer
        assert refusal["text"] == CATALOGUES.text("en", "officer.access_off")
        assert "TIPLINE_OFFICERS__TELEGRAM_USER_IDS" in refusal["text"] and case not in refusal["text"]
    assert running.on_server(running.runtime.store.tips.by_case(case)).status is TipStatus.IN_PROGRESS
    assert running.on_server(running.runtime.store.audit.entries()) == []


def test_every_member_is_an_officer_only_when_the_deployer_says_so(serve, fake: FakeTelegramAPI) -> None:
    running = serve(officers={"telegram_user_ids": [], "every_member_is_officer": True})
    group = Group(fake, running.url)
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    running.settled()

    (listing,) = group.type("/list", user=NOT_AN_OFFICER)
    assert case in listing["text"]
    assert listing["protect_content"] == "true"


def test_alerts_and_show_answers_are_protected_from_forwarding(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    alert = group.alert(CATALOGUES.text("en", "alert.urgent", case=case))
    assert alert["protect_content"] == "true"
    (shown,) = group.type(f"/show {case}")
    assert shown["protect_content"] == "true"


def test_a_command_sent_as_a_reply_to_an_alert_acts_on_its_case(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    alert = group.alert(CATALOGUES.text("en", "alert.urgent", case=case))

    def reply_to_alert(text: str) -> list[dict]:
        before = len(group.sent())
        update = make_text_update(next_update_id(), group.chat, text, user_id=OFFICER, chat_type="supergroup", first_name="Officer")
        plain = alert["text"].replace("<b>", "").replace("</b>", "")  # what Telegram shows as the replied text
        update["message"]["reply_to_message"] = {
            "message_id": 7, "date": update["message"]["date"], "chat": update["message"]["chat"],
            "from": dict(BOT_USER), "text": plain,
        }  # fmt: skip
        assert group.post(update) == 200
        return group.sent()[before:]

    (shown,) = reply_to_alert("/show")
    assert shown["text"].split("\n")[0] == f"URGENT — {case}"
    (acked,) = reply_to_alert("/ack")
    assert acked["text"] == CATALOGUES.text("en", "officer.ack.done", case=case)
    assert running.on_server(running.runtime.store.tips.by_case(case)).status is TipStatus.ACKNOWLEDGED


def test_commands_from_another_group_get_silence_and_from_a_private_chat_the_tipster_flow(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    stranger = Group(fake, running.url, chat=OTHER_GROUP)

    assert stranger.type("/list") == []
    assert stranger.type("/show 26-0001") == []
    stranger_press = make_callback_update(next_update_id(), OTHER_GROUP, "o:show:26-0001", 7, user_id=OFFICER, chat_type="supergroup")
    assert stranger.post(stranger_press) == 200
    assert fake.calls_of("sendMessage") == [] and fake.calls_of("answerCallbackQuery") == []
    assert running.rows("processed") == 0  # the engine never saw them

    person = tipster(fake, running)
    replies = person.say("/list")
    assert replies[0]["text"] == CATALOGUES.text("en", "safety.notice")
    assert replies[-1]["text"].startswith(opening("en", "danger.question"))
    assert running.on_server(running.runtime.store.audit.entries()) == []


def test_in_the_officer_group_only_commands_from_listed_users_are_answered(serve, fake: FakeTelegramAPI) -> None:
    running = serve(officers={"telegram_user_ids": [OFFICER]})
    group = Group(fake, running.url)
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    group.alert(CATALOGUES.text("en", "alert.urgent", case=case))
    answered_before = len(fake.calls_of("answerCallbackQuery"))  # the tipster's own button press

    assert group.type("/list", user=NOT_AN_OFFICER) == []
    assert group.press(f"o:ack:{case}", user=NOT_AN_OFFICER) == []
    assert group.type("good morning everyone") == []  # ordinary talk, even an officer's
    assert group.type("/list@some_other_bot") == []  # addressed to another bot in the group
    assert len(fake.calls_of("answerCallbackQuery")) == answered_before  # not even the spinner
    assert running.rows("processed") == 2  # only the tipster's two messages reached the engine
    assert running.on_server(running.runtime.store.tips.by_case(case)).status is TipStatus.IN_PROGRESS

    (listing,) = group.type("/list@tipline_test_bot")
    assert listing["text"].startswith("Open tips: 1") and case in listing["text"]
    assert "parse_mode" not in listing  # plain text: a tip's words are never read as markup


# --- replies, round trip --------------------------------------------------------------------------


def test_a_reply_round_trip_with_a_telegram_tipster(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    person = tipster(fake, running)
    receipt, _offer = finish_english_conversation(person)  # accepts replies
    code = RECEIPT.search(receipt["text"]).group(0)
    case = case_of(running)

    alert = group.alert(CATALOGUES.text("en", "alert.new", case=case))
    (buttons,) = alert["reply_markup"]["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [("Acknowledge", f"o:ack:{case}"), ("Show", f"o:show:{case}")]

    answered_before = len(fake.calls_of("answerCallbackQuery"))  # the tipster's own presses
    assert [m["text"] for m in group.press(f"o:ack:{case}")] == [f"Case {case} acknowledged."]
    (shown,) = group.press(f"o:show:{case}")
    headline, state = shown["text"].split("\n")[:2]
    assert headline.endswith(f" — {case}") and state.startswith("acknowledged · ") and state.endswith("(just now)")
    assert PLACE in shown["text"] and DETAILS in shown["text"]
    assert len(fake.calls_of("answerCallbackQuery")) == answered_before + 2  # both spinners stopped

    (sent,) = group.type(f"/reply {case} Which floor is the room on?")
    assert sent["text"] == CATALOGUES.text("en", "officer.reply.sent", case=case)
    # The phone is told, without the content, that something arrived; CHECK reads it.
    notice = CATALOGUES.text("en", "tipster.reply_notice")
    relayed = group.wait_for(lambda: [m for m in person.sent() if m["text"] == notice])
    assert relayed[0]["protect_content"] == "true"  # like every message to a tipster
    assert not any("Which floor" in m["text"] for m in person.sent())
    checked = [m["text"] for m in person.say(f"CHECK {code}")]
    assert CATALOGUES.text("en", "check.reply", text="Which floor is the room on?") in checked

    assert [m["text"] for m in person.say("Third floor, room 312")] == [CATALOGUES.text("en", "tipster.answer_sent")]
    answered = group.alert(CATALOGUES.text("en", "alert.answer", case=case))
    assert "Third floor" not in answered["text"]  # details only on /show (full_details is off)
    (shown,) = group.type(f"/show {case}")
    assert "Which floor is the room on?" in shown["text"] and "Third floor, room 312" in shown["text"]

    (closed,) = group.type(f"/close {case} family relocated")
    assert closed["text"] == CATALOGUES.text("en", "officer.close.done", case=case)

    store = running.runtime.store
    entries = running.on_server(store.audit.entries())
    assert [e.action for e in entries] == ["acknowledge", "view", "reply", "view", "close"]
    assert {e.officer for e in entries} == {running.runtime.cipher.pseudonym("officer-telegram", str(OFFICER))}
    assert running.on_server(store.audit.verify()) == []
    tip = running.on_server(store.tips.by_case(case))
    assert tip.status is TipStatus.CLOSED and tip.contact_address is None
    # Nothing in the group names the person.
    assert all(str(CHAT) not in m["text"] and "Zephyrine" not in m["text"] for m in group.sent())


def test_a_reply_round_trip_with_an_sms_tipster(serve, fake: FakeTelegramAPI, fake_twilio) -> None:
    twilio, twilio_url = fake_twilio
    running = serve(twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_url": twilio_url})
    group = Group(fake, running.url)
    number = "+15145550300"

    def sms(body: str) -> list[str]:
        params = inbound(number, body)
        response = httpx.post(f"{running.url}/sms/twilio", data=params, headers={"X-Twilio-Signature": signature(params)}, timeout=20)
        return messages(response)

    for said, _ in ENGLISH_FLOW:  # accepts replies
        last = sms(said)
    code = RECEIPT.search(" ".join(last)).group(0)
    case = case_of(running)
    alert = group.alert(CATALOGUES.text("en", "alert.new", case=case))
    assert "Channel: SMS" in alert["text"] and "Contact: may reply" in alert["text"]

    (shown,) = group.press(f"o:show:{case}")
    assert "Motel Lune, 12 rue Fictive" in shown["text"] and "A grey van parks there at night" in shown["text"]
    group.type(f"/reply {case} Is the van there tonight?")

    body = CATALOGUES.text("en", "tipster.reply_notice")  # content-free: the lock screen learns nothing
    group.wait_for(lambda: twilio.sent())
    assert twilio.sent() == [{"To": number, "From": FROM_NUMBER, "Body": body}]
    assert "Is the van there tonight?" in " ".join(sms(f"CHECK {code}"))

    assert sms("Yes, since 10pm") == [CATALOGUES.text("en", "tipster.answer_sent")]
    group.alert(CATALOGUES.text("en", "alert.answer", case=case))
    (closed,) = group.type(f"/close {case} van found")
    assert closed["text"] == CATALOGUES.text("en", "officer.close.done", case=case)

    store = running.runtime.store
    assert [e.action for e in running.on_server(store.audit.entries())] == ["view", "reply", "close"]
    assert running.on_server(store.audit.verify()) == []
    assert all(number not in m["text"] and number[2:] not in m["text"] for m in group.sent())


def test_alerts_follow_a_group_that_became_a_supergroup_and_its_officers_still_command(serve, fake: FakeTelegramAPI) -> None:
    new_id = -1009876543210
    fake.migrate_chat(OFFICERS, new_id)
    running = serve()
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    moved = Group(fake, running.url, chat=new_id)

    alert = moved.alert(CATALOGUES.text("en", "alert.urgent", case=case))
    assert alert["protect_content"] == "true"
    moved.wait_for(lambda: all(r["status"] == "delivered" for r in running.outbox("telegram")))
    (listing,) = moved.type("/list")
    assert case in listing["text"]


# --- alerts about one case read as one thread ---------------------------------------------------


def stored(fake: FakeTelegramAPI, group: Group, sent: dict) -> dict:
    """The message the fake keeps for what the bot sent (with its id and what it replies to)."""
    return next(m for (chat, _), m in fake.messages.items() if chat == str(group.chat) and m["text"] == sent["text"])


def test_later_alerts_about_an_urgent_case_reply_to_its_first_alert(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    person = tipster(fake, running)
    file_urgent_tip(person)
    case = case_of(running)
    first = group.alert(CATALOGUES.text("en", "alert.urgent", case=case))
    person.say("Motel Lune, Laval")  # the urgent flow asks where first; the answer updates the case
    update = group.alert(CATALOGUES.text("en", "alert.update", case=case))
    assert stored(fake, group, update)["reply_to_message"]["message_id"] == stored(fake, group, first)["message_id"]
    assert update["text"].startswith(f"<b>URGENT · Motel Lune, Laval — {case}</b>")
    assert "reply_to_message" not in stored(fake, group, first)  # the first alert starts the thread


def test_an_addition_alert_says_what_arrived_and_how_to_read_it(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    person = tipster(fake, running)
    code = RECEIPT.search(finish_english_conversation(person)[0]["text"]).group(0)
    case = case_of(running)
    first = group.alert(CATALOGUES.text("en", "alert.new", case=case))
    person.say(f"ADD {code} I saw a second van this morning")
    added = group.alert(CATALOGUES.text("en", "alert.addition", case=case))
    assert CATALOGUES.text("en", "alert.arrived", count=1, case=case) in added["text"]
    assert "second van" not in added["text"]  # full_details is off: read with Show
    assert stored(fake, group, added)["reply_to_message"]["message_id"] == stored(fake, group, first)["message_id"]
    assert [b["callback_data"] for row in added["reply_markup"]["inline_keyboard"] for b in row] == [f"o:ack:{case}", f"o:show:{case}"]
    (shown,) = group.press(f"o:show:{case}")
    assert "I saw a second van this morning" in shown["text"]
