"""TwilioRest drives the real twilio-python client against FakeTwilioAPI over loopback http."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from bot.channels.twilio.rest import TwilioRest, classify, safe_summary
from tests.fakes.server import LoopbackServer
from tests.fakes.twilio_api import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilioAPI

FROM = "+15550000000"
TO = "+15551230001"


@pytest.fixture
def fake():
    return FakeTwilioAPI()


@pytest.fixture
def server(fake):
    with LoopbackServer(fake.app) as srv:
        yield srv


@pytest.fixture
async def rest(server):
    client = TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM, api_url=server.url)
    yield client
    await client.aclose()


async def _send_error(rest: TwilioRest) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as info:
        await rest.send_sms(TO, "hello")
    return info.value


# -- sending ----------------------------------------------------------------


async def test_send_sms_reaches_fake_with_auth_and_form(rest, fake):
    sid = await rest.send_sms(TO, "hello there")

    assert sid.startswith("SM") and len(sid) == 34
    assert fake.sent() == [{"To": TO, "From": FROM, "Body": "hello there"}]
    (call,) = fake.calls
    assert call.method == "POST"
    assert call.path == f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"


async def test_whatsapp_recipient_is_sent_from_whatsapp_sender(rest, fake):
    await rest.send_sms("whatsapp:" + TO, "hola")

    assert fake.sent() == [{"To": "whatsapp:" + TO, "From": "whatsapp:" + FROM, "Body": "hola"}]


async def test_opted_out_recipient_is_permanent(rest, fake):
    fake.fail_next("create", status=400, code=21610, message="Attempt to send to unsubscribed")

    exc = await _send_error(rest)

    assert (exc.status, exc.code) == (400, 21610)
    assert classify(exc) == "permanent"
    assert fake.sent() == []


async def test_server_error_is_retry_and_next_attempt_succeeds(rest, fake):
    fake.fail_next("create", status=500)

    exc = await _send_error(rest)
    assert classify(exc) == "retry"

    await rest.send_sms(TO, "again")
    assert [m["Body"] for m in fake.sent()] == ["again"]


@pytest.mark.parametrize("status", [429, 503])
async def test_throttling_and_unavailable_are_retry(rest, fake, status):
    fake.fail_next("create", status=status)

    assert classify(await _send_error(rest)) == "retry"


async def test_outage_is_retry_until_it_ends(rest, fake):
    fake.set_down(True)
    assert classify(await _send_error(rest)) == "retry"

    fake.set_down(False)
    assert await rest.send_sms(TO, "back")


async def test_wrong_token_is_rejected_by_fake_and_permanent(server, fake):
    bad = TwilioRest(DEFAULT_ACCOUNT_SID, "wrong-token", FROM, api_url=server.url)
    try:
        exc = await _send_error(bad)
    finally:
        await bad.aclose()

    assert (exc.status, exc.code) == (401, 20003)
    assert classify(exc) == "permanent"
    assert fake.sent() == []


async def test_error_text_may_quote_the_number_but_safe_summary_does_not(rest, fake):
    text = f"The 'To' number {TO} is not a valid phone number."
    fake.fail_next("create", status=400, code=21211, message=text)

    exc = await _send_error(rest)

    assert TO in exc.msg  # why callers must not log the exception itself
    assert TO not in safe_summary(exc)
    assert safe_summary(exc) == "twilio HTTP 400 code 21211 (permanent)"


async def test_region_and_edge_env_vars_do_not_redirect_the_fake(server, fake, monkeypatch):
    # Twilio's host rewriting would turn 127.0.0.1 into 127.ie1.0.1.
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    client = TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM, api_url=server.url + "/")
    try:
        await client.send_sms(TO, "hi")
    finally:
        await client.aclose()
    assert len(fake.sent()) == 1


async def test_unreachable_api_is_retry():
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM, api_url=url)
    try:
        with pytest.raises(aiohttp.ClientError) as info:
            await client.send_sms(TO, "hi")
    finally:
        await client.aclose()
    assert classify(info.value) == "retry"


# -- deleting ---------------------------------------------------------------


async def test_delete_message_is_recorded(rest, fake):
    sid = await rest.send_sms(TO, "secret tip")

    await rest.delete_message(sid)

    assert fake.deleted() == [sid]
    assert (fake.calls[-1].method, fake.calls[-1].path) == (
        "DELETE",
        f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages/{sid}.json",
    )


@pytest.mark.parametrize(("status", "code"), [(400, 20009), (409, 20009), (409, None)])
async def test_deleting_unfinished_message_is_too_early(rest, fake, status, code):
    fake.fail_next("delete", status=status, code=code, message="Cannot delete this resource yet")

    with pytest.raises(TwilioRestException) as info:
        await rest.delete_message("SM" + "a" * 32)

    assert classify(info.value) == "too_early"
    assert fake.deleted() == []


async def test_deleting_twice_is_permanent_not_found(rest, fake):
    sid = "SM" + "b" * 32
    await rest.delete_message(sid)

    with pytest.raises(TwilioRestException) as info:
        await rest.delete_message(sid)

    assert (info.value.status, info.value.code) == (404, 20404)
    assert classify(info.value) == "permanent"


# -- lifecycle --------------------------------------------------------------


async def test_aclose_closes_session_without_resource_warning(server):
    client = TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM, api_url=server.url)
    await client.send_sms(TO, "hi")
    session = client._http.session
    assert session is not None and not session.closed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await client.aclose()
        await client.aclose()  # idempotent
        del client, session
        gc.collect()

    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_construct_outside_event_loop_and_reject_plain_http_to_remote():
    # Built during synchronous start-up: no aiohttp session (which needs a loop) yet.
    client = TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM)
    assert client._http.session is None

    with pytest.raises(ValueError):
        TwilioRest(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FROM, api_url="http://api.twilio.com")


# -- classify edge cases ----------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (asyncio.TimeoutError(), "retry"),
        (aiohttp.ServerDisconnectedError(), "retry"),
        (ConnectionResetError(), "retry"),
        (TwilioRestException(409, "/x", "conflict", 20409, "POST"), "permanent"),
        (TwilioRestException(502, "/x", "bad gateway", 502, "POST"), "retry"),
        (TwilioServiceException("about:blank", "Too many", 429, 20429), "retry"),
        (TwilioServiceException("about:blank", "Bad", 400, 21211), "permanent"),
        (ValueError("unparseable 2xx"), "permanent"),
    ],
)
def test_classify_edge_cases(exc, expected):
    assert classify(exc) == expected
