"""Twilio keeps nothing (issue 12 part 3): every inbound and outbound message of a conversation,
and every picture, is deleted at Twilio once handled. Tipline's real app on loopback, requests
signed with twilio's ``RequestValidator`` for the PUBLIC URL, the real twilio client talking to
FakeTwilioAPI; the status callbacks Twilio would post for our TwiML replies are posted by the test."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.channels.twilio import channel as twilio_sms
from bot.channels.twilio.channel import STATUS_PATH
from bot.messages import InboundMessage
from tests.channels.test_twilio_sms import (  # noqa: F401 - fixtures used by name
    ACCOUNT_SID,
    ENGLISH_FLOW,
    FROM_NUMBER,
    OFFICER_NUMBER,
    PUBLIC_URL,
    TYPED_TEXT,
    Tipline,
    catalogue,
    fake_twilio,
    inbound,
    messages,
    norm,
    signature,
    tipline_factory,
    wait_for,
)

STATUS_URL = PUBLIC_URL + STATUS_PATH
BSUID = "whatsapp:US.13491208655302741918"


@pytest.fixture
async def tipline(tipline_factory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Tipline]:
    """The default settings (REDACT is on unless turned off), without the production wait."""
    monkeypatch.setattr(twilio_sms, "REDACT_DELAY_SECONDS", 0.0)
    async with tipline_factory() as running:
        yield running


def status_form(sid: str, status: str, to: str) -> dict[str, str]:
    """What Twilio posts to a ``<Message action>`` (or a StatusCallback) for an outbound message."""
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "MessageStatus": status,
        "SmsStatus": status,
        "From": FROM_NUMBER,
        "To": to,
        "ApiVersion": "2010-04-01",
    }


async def post_status(tipline: Tipline, form: dict[str, str], *, path: str = STATUS_PATH, sign: str | None = None) -> httpx.Response:
    header = sign if sign is not None else signature(form, PUBLIC_URL + path)
    return await tipline.client.post(path, data=form, headers={"X-Twilio-Signature": header})


def actions(response: httpx.Response) -> list[str]:
    """The ``action`` of every ``<Message>`` of a TwiML answer (all POST)."""
    root = ET.fromstring(response.content)
    assert all(m.get("method") == "POST" for m in root if m.get("action"))
    return [m.get("action") or "" for m in root]


def empty_response(response: httpx.Response) -> bool:
    return response.status_code == 200 and ET.fromstring(response.content).tag == "Response" and len(ET.fromstring(response.content)) == 0


async def drafts(tipline: Tipline) -> int:
    async with tipline.store() as store:
        return await store.drafts.count()


async def converse(tipline: Tipline, sender: str, said: list[str]) -> tuple[list[str], list[str]]:
    """Say each line, then post the status callbacks Twilio would for each reply (sent, then
    delivered). Returns (inbound SIDs, outbound SIDs)."""
    inbound_sids, outbound_sids = [], []
    for text in said:
        form = inbound(sender, text)
        response = await tipline.post(form)
        assert messages(response), text
        assert set(actions(response)) == {STATUS_URL}  # the signature is over the public URL
        inbound_sids.append(form["MessageSid"])
        for _ in actions(response):
            sid = "SM" + uuid.uuid4().hex  # Twilio names each reply it creates from the TwiML
            outbound_sids.append(sid)
            for status in ("sent", "delivered"):
                assert empty_response(await post_status(tipline, status_form(sid, status, sender)))
    return inbound_sids, outbound_sids


# -- the whole conversation ------------------------------------------------------------------------


async def test_a_conversation_then_exit_leaves_no_message_at_twilio(tipline: Tipline) -> None:
    sender = "+15145550300"
    said = [text for text, _ in ENGLISH_FLOW[:8]] + ["EXIT"]
    inbound_sids, outbound_sids = await converse(tipline, sender, said)

    everything = set(inbound_sids) | set(outbound_sids)
    await wait_for(lambda: everything <= set(tipline.fake.deleted()), timeout=10)
    await wait_for(lambda: all(r["status"] == "delivered" for r in tipline.outbox_rows("twilio-redact")))
    # "delivered" after "sent" found the copy already gone: a 404, done, never dead.
    assert not [r for r in tipline.outbox_rows("twilio-redact") if r["status"] == "dead"]

    # Privacy: the outbound SIDs exist only in sealed redaction rows; the number and the words
    # never reach the bytes. (Inbound SIDs are also the de-duplication key: kept as keyed hashes
    # since main's 7815168, which this branch predates; see the report.)
    raw = tipline.raw_data()
    for secret in [*outbound_sids, sender, sender[1:], "Motel Lune", "grey van"]:
        assert secret.encode() not in raw, secret


async def test_a_status_that_is_not_final_deletes_nothing(tipline: Tipline) -> None:
    for status in ("queued", "sending", "accepted"):
        assert empty_response(await post_status(tipline, status_form("SM" + "a" * 32, status, "+15145550301")))
    assert tipline.outbox_rows("twilio-redact") == []


async def test_without_redact_replies_carry_no_action_and_nothing_is_queued(tipline_factory) -> None:
    async with tipline_factory(redact=False) as tipline:
        response = await tipline.post(inbound("+15145550302", "Hello"))
        assert messages(response) and actions(response) == [""]
        assert empty_response(await post_status(tipline, status_form("SM" + "b" * 32, "delivered", "+15145550302")))
        assert tipline.outbox_rows("twilio-redact") == []


# -- the status route refuses what Twilio did not sign -------------------------------------------


async def test_status_callback_unsigned_or_badly_signed_is_403_and_queues_nothing(tipline: Tipline) -> None:
    form = status_form("SM" + "c" * 32, "delivered", "+15145550303")
    assert (await tipline.client.post(STATUS_PATH, data=form)).status_code == 403
    assert (await post_status(tipline, form, sign=signature(form, PUBLIC_URL + STATUS_PATH, token="not-the-token"))).status_code == 403
    # Signed for the inbound route's URL: not this one.
    assert (await post_status(tipline, form, sign=signature(form, PUBLIC_URL + twilio_sms.PATH))).status_code == 403
    assert tipline.outbox_rows("twilio-redact") == []


@pytest.mark.parametrize(
    "change",
    [{"MessageSid": "CA" + "d" * 32}, {"MessageSid": ""}, {"MessageStatus": "", "SmsStatus": ""}, {"MessageStatus": "<delivered>"}],
    ids=["call sid", "no sid", "no status", "status not a word"],
)
async def test_status_callback_malformed_is_400(tipline: Tipline, change: dict[str, str]) -> None:
    form = {**status_form("SM" + "e" * 32, "delivered", "+15145550304"), **change}
    assert (await post_status(tipline, form)).status_code == 400
    assert tipline.outbox_rows("twilio-redact") == []


async def test_status_callback_that_is_not_a_form_is_400(tipline: Tipline) -> None:
    response = await tipline.client.post(STATUS_PATH, content=b"{}", headers={"X-Twilio-Signature": "x", "Content-Type": "application/json"})
    assert response.status_code == 400


# -- status callbacks on the inbound route -------------------------------------------------------


@pytest.mark.parametrize("status", ["sent", "delivered", "undelivered", "failed", "read"])
async def test_a_status_callback_on_the_inbound_route_is_answered_empty_and_opens_nothing(tipline: Tipline, status: str) -> None:
    form = status_form("SM" + "f" * 32, status, "+15145550305")
    response = await post_status(tipline, form, path=twilio_sms.PATH)
    assert empty_response(response)
    assert await drafts(tipline) == 0  # no draft for the bot's own number (or anyone)


async def test_an_inbound_message_says_received_and_is_a_conversation(tipline: Tipline) -> None:
    assert messages(await tipline.post(inbound("+15145550306", "Hello")))  # SmsStatus=received
    assert await drafts(tipline) == 1


# -- WhatsApp senders known only by a business-scoped user id ------------------------------------


async def test_a_business_scoped_whatsapp_sender_gets_the_flow(tipline: Tipline) -> None:
    first = await tipline.say(BSUID, "Hello", WaId="")
    assert catalogue("en", "danger.question") in norm(" ".join(first))
    second = await tipline.say(BSUID, "2")
    assert catalogue("en", "role.question") in norm(" ".join(second))
    async with tipline.store() as store:
        draft = await store.drafts.get(store.cipher.tipster_pseudonyms("whatsapp", BSUID).current)
        assert draft is not None and draft.state["channel"] == "whatsapp"
    assert BSUID.encode() not in tipline.raw_data() and b"13491208655302741918" not in tipline.raw_data()


@pytest.mark.parametrize("sender", ["whatsapp:US.ENT.11815799212886844830", "whatsapp:BR.abcDEF123"])
async def test_other_business_scoped_shapes_are_senders_too(tipline: Tipline, sender: str) -> None:
    assert await tipline.say(sender, "Hello")


@pytest.mark.parametrize("sender", ["US.13491208655302741918", "whatsapp:us.1349", "whatsapp:US.", "whatsapp:US.12-34"])
async def test_a_business_scoped_id_outside_whatsapp_or_misshapen_is_400(tipline: Tipline, sender: str) -> None:
    assert (await tipline.post(inbound(sender, "Hello"))).status_code == 400


# -- what we send by REST ------------------------------------------------------------------------


async def test_an_officer_sms_alert_is_deleted_at_twilio_once_sent(tipline: Tipline) -> None:
    await tipline.say("+15145550307", "Hello")
    await tipline.say("+15145550307", "1")  # danger now: the urgent alert goes to the on-call phone

    await wait_for(lambda: any(m["To"] == OFFICER_NUMBER for m in tipline.fake.sent()))
    [sid] = tipline.fake.sent_sids()
    await wait_for(lambda: sid in tipline.fake.deleted())


async def test_a_delete_twilio_refuses_while_the_alert_is_sending_is_retried_later(tipline: Tipline) -> None:
    first = inbound("+15145550308", "Hello")
    await tipline.post(first)
    await wait_for(lambda: first["MessageSid"] in tipline.fake.deleted())
    # The next two deletes (the answer "1" and the alert it triggers, in either order) are refused.
    tipline.fake.fail_next("delete", times=2, status=400, code=20009, message="Cannot delete this resource before it is complete")
    await tipline.say("+15145550308", "1")

    await wait_for(lambda: len(tipline.fake.sent_sids()) == 1)
    retried = lambda: [r for r in tipline.outbox_rows("twilio-redact") if r["status"] == "pending" and r["attempts"] == 1]  # noqa: E731
    await wait_for(lambda: len(retried()) == 2)
    assert all(r["last_error"] == "twilio HTTP 400 code 20009 (too_early)" for r in retried())
    assert tipline.fake.sent_sids()[0] not in tipline.fake.deleted()  # waits for its retry, not dead


async def test_an_officer_reply_sent_to_the_tipster_is_deleted_at_twilio(tipline: Tipline) -> None:
    number = "+15145550309"
    for said, _ in ENGLISH_FLOW:  # answers 1 (yes) to "may officers reply"
        await tipline.say(number, said)
    [tip] = await tipline.tips()
    officer = InboundMessage("console", "officer-pseudonym", f"/reply {tip.case_number} Which floor?", officer="officer-pseudonym")
    await tipline.on_server(tipline.runtime.engine.handle(officer))

    await wait_for(lambda: any(m["To"] == number for m in tipline.fake.sent()))
    sid = [s for s, m in zip(tipline.fake.sent_sids(), tipline.fake.sent()) if m["To"] == number][0]
    await wait_for(lambda: sid in tipline.fake.deleted())


# -- pictures ------------------------------------------------------------------------------------


async def test_inbound_media_is_deleted_at_twilio_then_its_message(tipline: Tipline) -> None:
    message_sid, media = "MM" + "1" * 32, ["ME" + "2" * 32, "ME" + "3" * 32]
    base = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/"
    urls = {f"MediaUrl{i}": base + m for i, m in enumerate(media)}
    types = {f"MediaContentType{i}": "image/jpeg" for i in range(len(media))}
    await tipline.say("+15145550310", "", MessageSid=message_sid, NumMedia="2", **urls, **types)

    await wait_for(lambda: message_sid in tipline.fake.deleted())
    assert tipline.fake.deleted_media() == [(message_sid, m) for m in media]
    deletes = [c.path for c in tipline.fake.calls if c.method == "DELETE"]
    assert deletes[-1].endswith(f"/Messages/{message_sid}.json")  # media first, under a live message
    raw = tipline.raw_data()
    assert all(m.encode() not in raw for m in media) and b"api.twilio.com" not in raw
