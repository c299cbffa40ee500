"""The Twilio SMS/WhatsApp webhook, end to end: Tipline's real app (``create_app``) served on
loopback with its lifespan, requests signed by twilio's own ``RequestValidator`` for the PUBLIC URL
(never the loopback one), TwiML answers parsed with ``xml.etree``."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from twilio.request_validator import RequestValidator

from bot.channels.twilio.channel import PATH, build
from bot.channels.twilio.twiml import render_twiml
from bot.i18n import Catalogues
from bot.runtime import Runtime
from bot.messages import OutboundMessage
from bot.settings import Settings
from bot.sms_segments import is_gsm7, segments
from bot.web import create_app
from storage.crypto import Cipher, KeyRing
from storage.records import Tip
from storage.sqlite import DB_FILENAME, SqliteStore
from tests.fakes.server import LoopbackServer
from tests.fakes.twilio_api import FakeTwilioAPI

PUBLIC_URL = "https://tips.example.org"
SIGNED_URL = PUBLIC_URL + PATH
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "tok"
FROM_NUMBER = "+15550001111"
OFFICER_NUMBER = "+15550002222"
RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
CATALOGUES = Catalogues.load()

# The English flow of DESIGN §2, answer by answer, with the prompt each answer leads to.
ENGLISH_FLOW = [
    ("Hello", "danger.question"),  # a greeting in English skips the language question
    ("2", "role.question"),
    ("2", "kind.question"),
    ("2", "minors.question"),
    ("2", "where.question"),
    ("Motel Lune, 12 rue Fictive", "when.question"),
    ("3", "details.question"),
    ("A grey van parks there at night", "details.more"),
    ("DONE", "contact.question"),
    ("1", "review.question"),
    ("1", "submitted.receipt"),
]
FRENCH_FLOW = [
    ("👋", "language.question"),
    ("2", "danger.question"),
    ("non", "role.question"),
    ("Témoin", "kind.question"),
    ("1", "minors.question"),
    ("oui", "where.question"),
    ("Hôtel Étoile, boulevard Imaginaire", "when.question"),
    ("2", "details.question"),
    ("Deux jeunes femmes ne sortent jamais", "details.more"),
    ("fini", "contact.question"),
    ("2", "review.question"),
    ("1", "submitted.receipt"),
]
T = TypeVar("T")
TYPED_TEXT = ("Motel Lune", "grey van", "Hôtel Étoile", "jeunes femmes")


def norm(text: str) -> str:
    return " ".join(text.split())


def catalogue(language: str, key: str, **values: object) -> str:
    return norm(CATALOGUES.text(language, key, **values))


def signature(params: dict[str, str], url: str = SIGNED_URL, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


def inbound(sender: str, body: str, **extra: str) -> dict[str, str]:
    """A form like Twilio's, including the geo and profile fields Tipline must never keep."""
    return {
        "ToCountry": "CA",
        "ToState": "QC",
        "SmsMessageSid": (sid := extra.pop("MessageSid", "SM" + uuid.uuid4().hex)),
        "NumMedia": "0",
        "ToCity": "MONTREAL",
        "FromZip": "H2X 1Y4",
        "SmsSid": sid,
        "FromState": "QC",
        "SmsStatus": "received",
        "FromCity": "LAVAL",
        "Body": body,
        "FromCountry": "CA",
        "To": FROM_NUMBER,
        "MessagingServiceSid": "MG" + "1" * 32,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def messages(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    assert all(child.tag == "Message" for child in root)
    return [child.text or "" for child in root]


@dataclass
class Tipline:
    server: LoopbackServer
    client: httpx.AsyncClient
    settings: Settings
    fake: FakeTwilioAPI
    app: Starlette

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    async def post(self, params: dict[str, str], *, sign: str | None = None, query: str = "") -> httpx.Response:
        """POST a form as Twilio would, signed for the public URL unless ``sign`` is given."""
        suffix = f"?{query}" if query else ""
        header = sign if sign is not None else signature(params, SIGNED_URL + suffix)
        return await self.client.post(PATH + suffix, data=params, headers={"X-Twilio-Signature": header})

    async def say(self, sender: str, body: str, **extra: str) -> list[str]:
        return messages(await self.post(inbound(sender, body, **extra)))

    @asynccontextmanager
    async def store(self) -> AsyncIterator[SqliteStore]:
        """A second connection to the live database (WAL: it sees every committed write)."""
        store = await SqliteStore.open(self.settings.data_dir, self.cipher)
        try:
            yield store
        finally:
            await store.close()

    @property
    def cipher(self) -> Cipher:
        return Cipher(KeyRing.load(self.settings.resolved_keys_file))

    async def tips(self) -> list[Tip]:
        async with self.store() as store:
            return await store.tips.list(None, limit=100)

    async def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's event loop (where the runtime's database connections live)."""
        loop = self.runtime.tasks[0].get_loop()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def outbox_rows(self, sink_prefix: str) -> list[sqlite3.Row]:
        """Outbox rows by their clear columns (the payload is encrypted), read-only."""
        with closing(sqlite3.connect(f"file:{Path(self.settings.data_dir) / DB_FILENAME}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            return db.execute("SELECT * FROM outbox WHERE sink LIKE ? ORDER BY seq", (sink_prefix + "%",)).fetchall()

    def raw_data(self) -> bytes:
        """Every byte in the data directory: database, WAL, shared memory, key file."""
        return b"".join(p.read_bytes() for p in sorted(Path(self.settings.data_dir).iterdir()) if p.is_file())


@pytest.fixture
def fake_twilio() -> Iterator[tuple[FakeTwilioAPI, str]]:
    fake = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    with LoopbackServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def tipline_factory(make_settings: Callable[..., Settings], fake_twilio) -> Callable:
    fake, fake_url = fake_twilio

    @asynccontextmanager
    async def start(pictures: dict[str, object] | None = None, **twilio: object) -> AsyncIterator[Tipline]:
        settings = make_settings(
            public_url=PUBLIC_URL,
            pictures=pictures or {},
            twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_url": fake_url, **twilio},
            officers={"sms_numbers": [OFFICER_NUMBER]},
        )
        app = create_app(settings)
        with LoopbackServer(app, lifespan="on") as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                yield Tipline(server, client, settings, fake, app)

    return start


@pytest.fixture
async def tipline(tipline_factory) -> AsyncIterator[Tipline]:
    async with tipline_factory() as running:
        yield running


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll for something the server does in the background (the outbox worker)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def walk(tipline: Tipline, sender: str, flow: list[tuple[str, str]], language: str) -> list[list[str]]:
    """Say each line; check the answer ends with (or is) the expected prompt; return the answers."""
    answers = []
    for said, key in flow:
        got = await tipline.say(sender, said)
        assert got, f"no answer to {said!r}"
        # One bot turn is one SMS (the phone joins its segments): one buzz, one preview, in order.
        assert len(got) == 1 and len(got[0]) <= 1600, got
        text = norm(" ".join(got))
        if key == "review.question":
            assert text.startswith(catalogue(language, key, summary="").strip()), text
        elif key != "submitted.receipt":
            assert catalogue(language, key) in text, (said, text)
        answers.append(got)
    return answers


# -- the conversation ----------------------------------------------------------------------------


async def test_english_conversation_over_http_ends_with_a_durable_receipt(tipline: Tipline) -> None:
    answers = await walk(tipline, "+15145550100", ENGLISH_FLOW, "en")

    receipt = norm(" ".join(answers[-1]))
    code = RECEIPT.search(receipt).group()
    assert receipt.startswith(norm(catalogue("en", "submitted.receipt", receipt=code)))
    assert f"ADD {code}" in receipt
    [tip] = await tipline.tips()
    assert tip.channel == "sms" and tip.language == "en" and tip.complete and tip.contact_ok
    assert tip.contact_address == "+15145550100"  # consent given: kept (encrypted) to reply later
    assert tip.answers["where"] == "Motel Lune, 12 rue Fictive"
    assert tip.answers["details"] == ["A grey van parks there at night"]


async def test_french_conversation_over_http_uses_french_and_short_segments(tipline: Tipline) -> None:
    answers = await walk(tipline, "+15145550199", FRENCH_FLOW, "fr")

    receipt = norm(" ".join(answers[-1]))
    code = RECEIPT.search(receipt).group()
    assert receipt.startswith(norm(catalogue("fr", "submitted.receipt", receipt=code)))
    assert f"AJOUT {code}" in receipt
    # French costs no more than English: the bot's own French words stay in GSM-7 (é è à ù É are
    # GSM-7), so only a turn quoting what the person typed (the review) may be UCS-2.
    own_words = [a[0] for (said, key), a in zip(FRENCH_FLOW, answers) if key not in ("review.question", "language.question")]
    assert all(is_gsm7(turn) for turn in own_words), [t for t in own_words if not is_gsm7(t)]
    [tip] = await tipline.tips()
    assert tip.language == "fr" and tip.minor and not tip.contact_ok
    assert tip.contact_address is None  # no consent: no address


async def test_empty_body_gets_a_calm_prompt_never_silence(tipline: Tipline) -> None:
    first = norm(" ".join(await tipline.say("+15145550101", "")))
    assert catalogue("en", "language.question") in first

    await tipline.say("+15145550101", "1")
    again = norm(" ".join(await tipline.say("+15145550101", "   ")))
    assert again.startswith(catalogue("en", "reprompt.choice"))
    assert catalogue("en", "danger.question") in again


async def test_mms_from_another_host_is_refused_calmly_and_media_urls_are_never_kept(tipline: Tipline) -> None:
    sender = "+15145550102"
    await tipline.say(sender, "Hello")
    media_url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM{'c' * 32}/Media/ME{'d' * 32}"
    got = norm(" ".join(await tipline.say(sender, "", MessageSid="MM" + "c" * 32, NumMedia="1", MediaUrl0=media_url, MediaContentType0="image/jpeg")))

    assert got.startswith(catalogue("en", "picture.not_received"))  # api.twilio.com is not the configured host
    assert catalogue("en", "danger.question") in got
    assert b"ME" + b"d" * 32 not in tipline.raw_data() and b"api.twilio.com" not in tipline.raw_data()


async def test_whatsapp_is_its_own_channel_with_its_own_pseudonym(tipline: Tipline) -> None:
    number = "+15145550103"
    await tipline.say("whatsapp:" + number, "Hello")

    async with tipline.store() as store:
        draft = await store.drafts.get(store.cipher.tipster_pseudonyms("whatsapp", "whatsapp:" + number).current)
        assert draft is not None and draft.state["channel"] == "whatsapp"
        assert await store.drafts.get(store.cipher.tipster_pseudonyms("sms", number).current) is None


async def test_whatsapp_stop_is_not_a_carrier_word_and_gets_the_erased_answer(tipline: Tipline) -> None:
    sender = "whatsapp:+15145550104"
    await tipline.say(sender, "Hello")
    got = norm(" ".join(await tipline.say(sender, "STOP")))
    assert got == catalogue("en", "erased")  # no carrier confirms on WhatsApp: we must answer


async def test_a_shared_whatsapp_location_is_declined_and_not_kept(tipline: Tipline) -> None:
    sender = "whatsapp:+15145550105"
    await tipline.say(sender, "Hello")
    got = norm(" ".join(await tipline.say(sender, "", Latitude="45.5088", Longitude="-73.5878", Address="1 Rue Secrete")))
    assert got.startswith(catalogue("en", "unsupported"))
    assert b"45.5088" not in tipline.raw_data()


# -- carrier words -------------------------------------------------------------------------------


async def _has_draft(tipline: Tipline, number: str) -> bool:
    async with tipline.store() as store:
        return await store.drafts.get(store.cipher.tipster_pseudonyms("sms", number).current) is not None


@pytest.mark.parametrize("word", ["STOP", "stop", "Arrêt!", "ARRET", "STOPALL", "Unsubscribe", "CANCEL", "end", "QUIT"])
async def test_carrier_opt_out_erases_the_draft_and_answers_empty_twiml(tipline: Tipline, word: str) -> None:
    number = "+15145550110"
    await tipline.say(number, "Hello")
    assert await _has_draft(tipline, number)

    response = await tipline.post(inbound(number, word))

    assert messages(response) == []
    assert ET.fromstring(response.content).tag == "Response"
    assert not await _has_draft(tipline, number)


async def test_twilio_opt_out_type_counts_as_stop_even_for_a_custom_keyword(tipline: Tipline) -> None:
    number = "+15145550111"
    await tipline.say(number, "Hello")
    assert await tipline.say(number, "OPTOUT", OptOutType="STOP") == []
    assert not await _has_draft(tipline, number)


async def test_twilio_help_keyword_gets_our_help_and_unknown_opt_out_types_are_accepted(tipline: Tipline) -> None:
    got = norm(" ".join(await tipline.say("+15145550117", "SOS", OptOutType="HELP")))
    assert got == catalogue("en", "help.idle")
    assert await tipline.say("+15145550118", "Hello", OptOutType="SOMETHING-NEW")  # answered, not a 400


@pytest.mark.parametrize("word", ["START", "unstop"])
async def test_start_reopens_with_the_first_prompt(tipline: Tipline, word: str) -> None:
    number = "+15145550112"
    assert await tipline.say(number, "STOP") == []
    got = norm(" ".join(await tipline.say(number, word)))
    assert got.startswith(catalogue("en", "language.question")) and "1 English" in got
    async with tipline.store() as store:
        draft = await store.drafts.get(store.cipher.tipster_pseudonyms("sms", number).current)
    assert draft is not None and draft.state["answers"]["details"] == []  # "START" is not a report


async def test_help_fits_one_sms_and_aide_is_french(tipline: Tipline) -> None:
    help_parts = await tipline.say("+15145550113", "HELP")
    aide_parts = await tipline.say("+15145550114", "aide")
    info_parts = await tipline.say("+15145550115", "INFO")

    assert norm(" ".join(help_parts)) == catalogue("en", "help.idle")
    assert len(CATALOGUES.text("en", "help.idle")) <= 160 and len(help_parts) == 1
    assert norm(" ".join(aide_parts)) == catalogue("fr", "help.idle")
    assert len(CATALOGUES.text("fr", "help.idle")) <= 160
    assert all(segments(part) == 1 for part in aide_parts)
    assert info_parts == help_parts


async def test_help_during_a_report_is_help_then_the_same_question(tipline: Tipline) -> None:
    number = "+15145550116"
    await tipline.say(number, "Bonjour")  # French, straight to the first question
    got = norm(" ".join(await tipline.say(number, "AIDE")))
    assert got.startswith(catalogue("fr", "help.flow"))
    assert catalogue("fr", "danger.question") in got


# -- what reaches the webhook --------------------------------------------------------------------


async def _tip_count(tipline: Tipline) -> int:
    return len(await tipline.tips())


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    build: Callable[[dict[str, str]], dict]  # params -> keyword arguments for Tipline.post


def _without(field: str) -> Callable[[dict[str, str]], dict]:
    return lambda p: {"params": {k: v for k, v in p.items() if k != field}}


def _with(**changes: str) -> Callable[[dict[str, str]], dict]:
    return lambda p: {"params": {**p, **changes}}


CASES = [
    Case("valid", 200, lambda p: {"params": p}),
    Case("valid with a query string in the signed URL", 200, lambda p: {"params": p, "query": "v=2"}),
    Case("bad signature", 403, lambda p: {"params": p, "sign": signature(p, token="not-the-token")}),
    Case("missing signature", 403, lambda p: {"params": p, "sign": ""}),
    Case("signed for the URL the app sees, not the public one", 403, None),  # built in the test
    Case("signed without the query string", 403, lambda p: {"params": p, "query": "v=2", "sign": signature(p)}),
    Case("tampered body", 403, lambda p: {"params": {**p, "Body": "changed"}, "sign": signature(p)}),
    Case("no From", 400, _without("From")),
    Case("From is not a number", 400, _with(From="Mom")),
    Case("no MessageSid", 400, _without("MessageSid")),
    Case("MessageSid of another kind", 400, _with(MessageSid="CA" + "a" * 32)),
    Case("MessageSid too short", 400, _with(MessageSid="SM1234")),
    Case("NumMedia not a number", 400, _with(NumMedia="lots")),
    Case("SMS body over 1600 characters", 400, _with(Body="x" * 1601)),
    Case("WhatsApp body over 1600 characters is fine", 200, _with(From="whatsapp:+15145550121", Body="word " * 400)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_webhook_table(tipline: Tipline, case: Case) -> None:
    params = inbound("+15145550120", "Hello")
    if case.build is None:
        loopback_url = tipline.server.url + PATH
        kwargs = {"params": params, "sign": signature(params, url=loopback_url)}
    else:
        kwargs = case.build(params)
        if "sign" not in kwargs and "params" in kwargs:
            query = kwargs.get("query", "")
            kwargs["sign"] = signature(kwargs["params"], SIGNED_URL + (f"?{query}" if query else ""))

    response = await tipline.post(kwargs["params"], sign=kwargs["sign"], query=kwargs.get("query", ""))

    assert response.status_code == case.status, response.text
    async with tipline.store() as store:
        stored = await store.drafts.count()
    assert stored == (1 if case.status == 200 else 0)  # refused requests leave nothing behind


async def test_missing_signature_is_refused_before_the_body_is_read(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(public_url=PUBLIC_URL, twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER})
    channel = build(settings)
    assert channel is not None
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"From=%2B15145550122&Body=hi", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
    }
    response = await channel.webhook(Request(scope, receive))

    assert response.status_code == 403
    assert reads == 0


async def test_not_a_form_is_malformed(tipline: Tipline) -> None:
    response = await tipline.client.post(PATH, json={"From": "+15145550123"}, headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 400


@pytest.mark.parametrize("streamed", [False, True], ids=["declared length", "chunked"])
async def test_oversized_body_is_413(tipline: Tipline, streamed: bool) -> None:
    params = inbound("+15145550124", "x" * 70_000)
    sign = signature(params)
    if streamed:
        encoded = urlencode(params).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(encoded), 8192):
                yield encoded[start : start + 8192]

        response = await tipline.client.post(
            PATH, content=chunks(), headers={"X-Twilio-Signature": sign, "content-type": "application/x-www-form-urlencoded"}
        )
    else:
        response = await tipline.post(params, sign=sign)
    assert response.status_code == 413
    async with tipline.store() as store:
        assert await store.drafts.count() == 0


async def test_a_retried_message_gets_the_same_twiml_and_files_once(tipline: Tipline) -> None:
    number = "+15145550125"
    for said, _ in ENGLISH_FLOW[:-1]:
        await tipline.say(number, said)
    final = inbound(number, "1")

    first = await tipline.post(final)
    retry = await tipline.post(final)

    assert first.content == retry.content
    assert RECEIPT.search(" ".join(messages(first)))
    assert await _tip_count(tipline) == 1


def test_a_bot_turn_is_one_twiml_message_unless_twilio_would_refuse_its_length() -> None:
    long_reply = OutboundMessage("Word " * 100)
    french = OutboundMessage(CATALOGUES.text("fr", "submitted.receipt", receipt="123-456-789-012"))
    [one] = [m.text or "" for m in ET.fromstring(render_twiml([long_reply, french]))]
    assert norm(one) == norm(long_reply.text + " " + french.text) and "123-456-789-012" in one

    huge = [OutboundMessage(f"Sentence number {i} of a very long turn.") for i in range(120)]
    parts = [m.text or "" for m in ET.fromstring(render_twiml(huge))]
    assert len(parts) == 4 and all(len(p) <= 1600 for p in parts)  # 4,918 characters: as few as fit
    assert norm(" ".join(parts)) == norm(" ".join(r.text for r in huge))  # cut between sentences, nothing lost
    assert ET.fromstring(render_twiml([])).tag == "Response" and len(ET.fromstring(render_twiml([]))) == 0


# -- privacy -------------------------------------------------------------------------------------


async def test_no_number_profile_or_typed_text_reaches_the_disk_or_the_logs(
    tipline: Tipline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    english, french, whatsapp = "+15145550130", "+15145550131", "+15145550132"
    await walk(tipline, english, ENGLISH_FLOW, "en")
    await walk(tipline, french, FRENCH_FLOW, "fr")
    await walk(tipline, "whatsapp:" + whatsapp, ENGLISH_FLOW, "en")
    await tipline.say(english, "STOP")
    await wait_for(lambda: len(tipline.fake.sent()) == 3)  # the officer SMS path is logged too

    raw = tipline.raw_data()
    assert b"SQLite format 3" in raw and len(raw) > 20_000  # the data really is there
    assert "message from" in caplog.text and "delivered to sms" in caplog.text  # the server's logs are captured
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    numbers = [english, french, whatsapp, FROM_NUMBER, OFFICER_NUMBER]
    forms = {form for n in numbers for form in (n, n[1:], n[2:])}  # +15145550130, 15145550130, 5145550130
    for secret in [*forms, *TYPED_TEXT, "LAVAL", "H2X 1Y4"]:
        assert secret.encode() not in raw, secret
        assert secret.encode("utf-16-le") not in raw, secret
        assert secret not in logged, secret
    assert len(await tipline.tips()) == 3
