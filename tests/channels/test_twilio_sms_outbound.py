"""What the SMS channel sends through Twilio's REST API: officer alerts, officers' replies to
tipsters, and the redaction of Twilio's copy of inbound messages. The real twilio client talks to
FakeTwilioAPI over loopback; Tipline's real app runs the outbox worker."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import httpx
import pytest

import main
from bot.channels.twilio import channel as twilio_sms
from bot.channels.twilio.channel import OfficerSmsSink, RedactSink, SmsChannel, build
from bot.messages import InboundMessage
from bot.outbox import DeliveryError
from bot.runtime import Runtime
from bot.settings import Settings, SettingsError
from storage.records import OutboxItem, OutboxStatus
from tests.channels.test_twilio_sms import (  # noqa: F401 - fixtures used by name
    CATALOGUES,
    ACCOUNT_SID,
    AUTH_TOKEN,
    ENGLISH_FLOW,
    FROM_NUMBER,
    OFFICER_NUMBER,
    PUBLIC_URL,
    Tipline,
    fake_twilio,
    inbound,
    messages,
    tipline,
    tipline_factory,
    wait_for,
)
from tests.conftest import HEALTH_HEADERS

URGENT_MINOR_FLOW = [
    "Hello",
    "1",  # danger now: the urgent alert goes out at once, and Where is asked next
    "Secret motel, room 12",
    "2",
    "1",
    "1",  # a minor is involved
    "0",
    "Secret detail about room 12",
    "DONE",
    "2",
    "1",
]


def _sent_to(tipline: Tipline, number: str) -> list[dict[str, str]]:
    return [m for m in tipline.fake.sent() if m["To"] == number]


async def _health(tipline: Tipline) -> dict:
    return (await tipline.client.get("/healthz/detail", headers=HEALTH_HEADERS)).json()


async def _case_number(tipline: Tipline) -> str:
    [tip] = await tipline.tips()
    return tip.case_number


# -- officer alerts ------------------------------------------------------------------------------


async def test_officer_alerts_carry_the_case_and_flags_and_never_the_tip(tipline: Tipline) -> None:
    number = "+15145550200"
    for said in URGENT_MINOR_FLOW:
        await tipline.say(number, said)

    await wait_for(lambda: len(_sent_to(tipline, OFFICER_NUMBER)) == 2)
    case = await _case_number(tipline)
    urgent, filed = _sent_to(tipline, OFFICER_NUMBER)
    assert urgent == {"To": OFFICER_NUMBER, "From": FROM_NUMBER, "Body": f"URGENT: someone may be in danger now. Case {case}"}
    assert filed["Body"] == f"New tip, case {case}\nURGENT · MINOR INVOLVED"
    # The outbox names the officer by pseudonym; the number exists only in the settings.
    rows = tipline.outbox_rows("sms:")
    pseudonym = tipline.cipher.pseudonym("officer-sms", OFFICER_NUMBER)
    assert [r["sink"] for r in rows] == [f"sms:{pseudonym}"] * 2
    assert all(r["status"] == "delivered" for r in rows)


async def test_an_opted_out_officer_number_goes_dead_without_stopping_anything(tipline: Tipline) -> None:
    tipline.fake.fail_next("create", status=400, code=21610, message=f"Attempt to send to unsubscribed recipient {OFFICER_NUMBER}")
    await tipline.say("+15145550201", "Hello")
    await tipline.say("+15145550201", "1")  # urgent alert: refused by Twilio (21610)

    await wait_for(lambda: tipline.outbox_rows("sms:") and tipline.outbox_rows("sms:")[0]["status"] == "dead")
    [row] = tipline.outbox_rows("sms:")
    assert row["attempts"] == 1 and row["last_error"] == "twilio HTTP 400 code 21610 (permanent)"
    assert (await _health(tipline))["outbox"]["dead"] == 1
    # The webhook and the worker carry on: the next alert goes out.
    assert await tipline.say("+15145550202", "Hello")
    await tipline.say("+15145550202", "1")
    await wait_for(lambda: len(tipline.fake.sent()) == 1)


async def test_a_twilio_500_is_retried_and_the_alert_is_delivered_once(tipline: Tipline) -> None:
    tipline.runtime.worker.base_delay = 0.02  # seconds, not the production 2 s
    tipline.fake.fail_next("create", status=500)
    await tipline.say("+15145550203", "Hello")
    await tipline.say("+15145550203", "1")

    await wait_for(lambda: [r["status"] for r in tipline.outbox_rows("sms:")] == ["delivered"])
    await asyncio.sleep(0.2)  # ten retry periods: time enough for a wrong second send to show
    posts = [c for c in tipline.fake.calls if c.method == "POST"]
    assert [c.status for c in posts] == [500, 201]
    assert len(tipline.fake.sent()) == 1
    [row] = tipline.outbox_rows("sms:")
    assert (row["status"], row["attempts"]) == ("delivered", 1)


# -- officer replies to the tipster --------------------------------------------------------------


async def test_an_officer_reply_reaches_the_tipster_who_accepted_replies(tipline: Tipline) -> None:
    number = "+15145550204"
    for said, _ in ENGLISH_FLOW:  # answers 1 (yes) to "may officers reply"
        await tipline.say(number, said)
    case = await _case_number(tipline)

    officer = InboundMessage("console", "officer-pseudonym", f"/reply {case} Which floor?", officer="officer-pseudonym")
    await tipline.on_server(tipline.runtime.engine.handle(officer))

    await wait_for(lambda: len(_sent_to(tipline, number)) == 1)
    [reply] = _sent_to(tipline, number)
    # Content-free: whoever sees the phone learns nothing; the reply is read with CHECK.
    assert reply["From"] == FROM_NUMBER and reply["Body"] == CATALOGUES.text("en", "tipster.reply_notice")


# -- redaction of Twilio's copy ------------------------------------------------------------------


@pytest.fixture
async def redacting(tipline_factory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(twilio_sms, "REDACT_DELAY_SECONDS", 0.0)
    async with tipline_factory(redact=True) as running:
        yield running


async def test_each_inbound_message_is_deleted_from_twilio_once_handled(redacting: Tipline) -> None:
    params = inbound("+15145550205", "Hello")
    messages(await redacting.post(params))
    await wait_for(lambda: redacting.fake.deleted() == [params["MessageSid"]])

    # A retried webhook gets the same answer and queues nothing more: the deletion was queued
    # with the message the first time (in its transaction), and one per message is enough.
    first = messages(await redacting.post(params))
    assert messages(await redacting.post(params)) == first
    await wait_for(lambda: all(r["status"] == "delivered" for r in redacting.outbox_rows("twilio-redact")))
    assert len(redacting.outbox_rows("twilio-redact")) == 1
    assert [c.status for c in redacting.fake.calls if c.method == "DELETE"] == [204]
    assert (await _health(redacting))["outbox"]["dead"] == 0


async def test_a_delete_twilio_is_not_ready_for_is_retried_two_minutes_later(redacting: Tipline) -> None:
    redacting.fake.fail_next("delete", status=400, code=20009, message="Cannot delete this resource before it is complete")
    before = time.time()
    messages(await redacting.post(inbound("+15145550206", "Hello")))

    await wait_for(lambda: redacting.outbox_rows("twilio-redact")[0]["attempts"] == 1)
    [row] = redacting.outbox_rows("twilio-redact")
    assert row["status"] == "pending" and row["next_at"] >= before + 120
    assert redacting.fake.deleted() == []


async def test_without_redact_nothing_is_deleted(tipline_factory) -> None:
    async with tipline_factory(redact=False) as tipline:
        messages(await tipline.post(inbound("+15145550207", "Hello")))
        assert tipline.outbox_rows("twilio-redact") == []
        assert [c for c in tipline.fake.calls if c.method == "DELETE"] == []


# -- sinks on their own --------------------------------------------------------------------------


def _item(payload: dict) -> OutboxItem:
    return OutboxItem("i" * 32, "x", payload, OutboxStatus.PENDING, 0, 0.0, 0.0)


def _no_rest():
    raise AssertionError("a row that cannot be delivered must not reach Twilio")


async def test_sinks_refuse_rows_they_cannot_deliver_for_good() -> None:
    officer_sink = OfficerSmsSink(rest=_no_rest, composer=None, numbers={"known": OFFICER_NUMBER})  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as gone:
        await officer_sink.deliver(_item({"kind": "alert", "tip_id": "t", "event": "new"}), "no-longer-configured")
    with pytest.raises(DeliveryError) as wrong_kind:
        await officer_sink.deliver(_item({"kind": "reply", "tip_id": "t"}), "known")
    with pytest.raises(DeliveryError) as bad_sid:
        await RedactSink(rest=_no_rest).deliver(_item({"sid": "not-a-sid"}), "")
    assert gone.value.permanent and wrong_kind.value.permanent and bad_sid.value.permanent


# -- configuration and lifecycle -----------------------------------------------------------------


def _twilio(**extra: object) -> dict:
    return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, **extra}


def test_build_is_off_without_twilio_and_refuses_to_run_without_a_public_url(make_settings: Callable[..., Settings]) -> None:
    assert build(make_settings()) is None
    assert isinstance(build(make_settings(public_url=PUBLIC_URL, twilio=_twilio())), SmsChannel)
    with pytest.raises(SettingsError, match="TIPLINE_PUBLIC_URL"):
        build(make_settings(twilio=_twilio()))
    with pytest.raises(SettingsError, match="TIPLINE_OFFICERS__SMS_NUMBERS: entry 2"):
        build(make_settings(public_url=PUBLIC_URL, twilio=_twilio(), officers={"sms_numbers": [OFFICER_NUMBER, "555-0100"]}))


def test_serve_without_a_public_url_stops_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setattr(sys, "argv", ["main.py", "serve"])
    monkeypatch.setenv("TIPLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIPLINE_TWILIO__ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TIPLINE_TWILIO__AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TIPLINE_TWILIO__FROM_NUMBER", FROM_NUMBER)
    monkeypatch.setenv("TIPLINE_LOG_LEVEL", "WARNING")

    with pytest.raises(SystemExit) as stopped:
        main.main()

    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("tipline: setting TIPLINE_PUBLIC_URL: required for SMS")


async def test_start_routes_and_stop_closes_the_rest_client(make_settings: Callable[..., Settings], fake_twilio) -> None:
    fake, url = fake_twilio
    settings = make_settings(public_url=PUBLIC_URL, twilio=_twilio(api_url=url), officers={"sms_numbers": [OFFICER_NUMBER]})
    channel = build(settings)
    runtime = await Runtime.open(settings)
    try:
        await channel.start(runtime)
        assert channel.alert_targets() == (f"sms:{runtime.cipher.pseudonym('officer-sms', OFFICER_NUMBER)}",)
        sinks = channel.sinks()
        assert set(sinks) == {"sms", "twilio-redact"}
        await channel.send_to_tipster("whatsapp:+15145550208", "Officers: thank you")
        assert fake.sent() == [{"To": "whatsapp:+15145550208", "From": "whatsapp:" + FROM_NUMBER, "Body": "Officers: thank you"}]
        rest = channel._rest
        await channel.stop()
        assert rest._http.session is None  # closed, no aiohttp session left behind
        # A delivery the worker attempts after stop waits for the next start instead of reopening
        # (and leaking) an HTTP session.
        with pytest.raises(DeliveryError) as later:
            await sinks["twilio-redact"].deliver(_item({"sid": "SM" + "e" * 32}), "")
        assert not later.value.permanent and later.value.retry_after == twilio_sms.STOPPED_RETRY_SECONDS
        assert rest._http.session is None and fake.deleted() == []
    finally:
        await runtime.close()


async def test_webhook_before_start_is_unavailable_not_a_crash(make_settings: Callable[..., Settings]) -> None:
    channel = build(make_settings(public_url=PUBLIC_URL, twilio=_twilio()))
    transport = httpx.ASGITransport(app=_only(channel))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(twilio_sms.PATH, data={"Body": "hi"}, headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 503


def _only(channel: SmsChannel):
    from starlette.applications import Starlette

    return Starlette(routes=channel.routes())
