"""Webhook fuzzing: whatever arrives at ``POST /sms/twilio`` or ``POST /telegram/webhook``, signed or
not, well-formed or not, the answer is 2xx or 4xx (never 5xx), and the server keeps serving.
And any Unicode text a person can send, through any channel, gets an answer.

Run alone (about 10 s)::

    .venv/bin/python -m pytest tests/reliability/test_webhook_fuzz.py -q -p no:cacheprovider

Tipline's real app (``bot.web.create_app``) is served on loopback with its lifespan, both channels
on, the real python-telegram-bot and twilio clients talking to the loopback fakes. Hypothesis
drives a plain ``httpx.Client`` from the test thread; the app runs on the server's own thread.

Each property runs inside a test function (hypothesis's inner ``@given``), so the test can check
afterwards that ``/healthz`` still answers 200 with a healthy database.

One finding is kept as a strict expected failure rather than left out: an update that breaks the
Bot API's schema gets a 503 (see ``SCHEMA_BREAKING``). The random updates of the property are
therefore drawn within the schema (any values, missing optional fields, unknown extra fields,
unknown kinds of update), next to arbitrary JSON and arbitrary bytes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from bot.channels import registry
from bot.channels.telegram import channel as telegram
from bot.channels.telegram.limits import FloodLimits
from bot.channels.twilio.channel import CARRIER_STOP
from bot.settings import Settings
from bot.web import MAX_BODY_BYTES, create_app
from handlers.words import fold
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
    PUBLIC_URL,
    SECRET_HEADER,
    SMS_PATH,
    TELEGRAM_PATH,
    WEBHOOK_SECRET,
    signed_sms,
    sms_form,
    twilio_signature,
    twiml_messages,
)

# The Telegram flood limits would make each example wait for the chat's window; they are tested
# in tests/channels/test_telegram_parts.py. Here they are lifted so the fuzzing stays fast.
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@dataclass
class Tipline:
    url: str
    client: httpx.Client
    fake_telegram: FakeTelegramAPI

    def sms(self, content: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post(SMS_PATH, content=content, headers=headers)

    def telegram(self, content: bytes, secret: str | None = WEBHOOK_SECRET) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        return self.client.post(TELEGRAM_PATH, content=content, headers=headers)

    def assert_healthy(self) -> None:
        response = self.client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}, response.text


@pytest.fixture(scope="module")
def tipline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tipline]:
    """One app for the module: hypothesis runs hundreds of examples against the same server, the
    way a public webhook meets whatever the internet sends it."""
    fake_telegram = FakeTelegramAPI(token=BOT_TOKEN)
    fake_twilio = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    with LoopbackServer(fake_telegram.app) as telegram_api, LoopbackServer(fake_twilio.app) as twilio_api:
        settings_ = Settings(
            _env_file=None,
            data_dir=data_dir,
            public_url=PUBLIC_URL,
            twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_url": twilio_api.url},
            telegram={"token": BOT_TOKEN, "api_url": telegram_api.url, "webhook_secret": WEBHOOK_SECRET, "mode": "webhook"},
            officers={"telegram_chat_ids": [OFFICER_CHAT]},
        )
        set_up_line(settings_)  # python main.py init
        with pytest.MonkeyPatch.context() as patch:
            fast = lambda s: telegram.build(s, limits=FAST)  # noqa: E731
            patch.setattr(registry, "FACTORIES", [fast if f is telegram.build else f for f in registry.FACTORIES])
            app = create_app(settings_)
        with LoopbackServer(app, lifespan="on") as server, httpx.Client(base_url=server.url, timeout=30) as client:
            yield Tipline(server.url, client, fake_telegram)


# --- strategies ------------------------------------------------------------------------------------

# Any character a client can put in UTF-8 (lone surrogates cannot be encoded, so no one sends them).
any_char = st.characters(blacklist_categories=("Cs",))
any_text = st.text(alphabet=any_char, max_size=200)
TWILIO_FIELDS = [
    "MessageSid", "SmsMessageSid", "SmsSid", "AccountSid", "From", "To", "Body", "NumMedia", "NumSegments",
    "MediaUrl0", "MediaContentType0", "OptOutType", "Latitude", "Longitude", "ProfileName", "WaId", "FromCity",
]  # fmt: skip
field_name = st.one_of(st.sampled_from(TWILIO_FIELDS), any_text)
field_value = st.one_of(
    any_text,
    st.sampled_from(["+15145550100", "whatsapp:+15145550100", "SM" + "a" * 32, "MM" + "0" * 32, "-1", "11", "STOP", "START"]),
    st.integers(-(10**20), 10**20).map(str),
    st.integers(0, 3).map(lambda n: ["", "0", "\x00", " "][n]),
)
huge_value = st.integers(MAX_BODY_BYTES - 200, MAX_BODY_BYTES + 2000).map(lambda n: "x" * n)


@st.composite
def twilio_forms(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A form that starts as Twilio's and then loses, gains, repeats or garbles fields."""
    pairs = list(sms_form(draw(st.sampled_from(["+15145550100", "whatsapp:+15145550101", "+1"])), draw(any_text)).items())
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["drop", "replace", "add", "repeat", "huge"]))
        if action == "drop" and pairs:
            pairs.pop(draw(st.integers(0, len(pairs) - 1)))
        elif action == "replace" and pairs:
            index = draw(st.integers(0, len(pairs) - 1))
            pairs[index] = (pairs[index][0], draw(field_value))
        elif action == "add":
            pairs.append((draw(field_name), draw(field_value)))
        elif action == "repeat" and pairs:
            name = pairs[draw(st.integers(0, len(pairs) - 1))][0]
            pairs.append((name, draw(field_value)))
        elif action == "huge":
            pairs.append((draw(field_name), draw(huge_value)))
    return pairs


random_forms = st.one_of(twilio_forms(), st.lists(st.tuples(field_name, field_value), max_size=12))
signing = st.sampled_from(["signed", "unsigned", "wrong signature", "signed for another url"])
content_types = st.sampled_from(
    ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8", "application/json", "text/plain", None]
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), any_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=20)
chat_types = st.one_of(st.sampled_from(["private", "group", "supergroup", "channel"]), any_text)


ints = st.integers(-(2**53), 2**53)
extra_fields = st.dictionaries(any_text, json_values, max_size=2)  # fields a newer Bot API may add


@st.composite
def users(draw: st.DrawFn) -> dict:
    user = {"id": draw(ints), "is_bot": draw(st.booleans()), "first_name": draw(any_text)}
    for name in draw(st.lists(st.sampled_from(["username", "last_name", "language_code"]), max_size=3, unique=True)):
        user[name] = draw(any_text)
    return user


@st.composite
def messages(draw: st.DrawFn) -> dict:
    """A message as the Bot API documents it: the required fields with their types, any optional
    content (text, entities, caption, media, location), and unknown extra fields."""
    chat = {"id": draw(ints), "type": draw(chat_types), **draw(extra_fields)}
    message = {"message_id": draw(ints), "date": draw(st.integers(0, 2**32)), "chat": chat, "from": draw(users())}
    entity = st.fixed_dictionaries({"type": st.sampled_from(["bot_command", "url", "bold", "mention"]) | any_text, "offset": ints, "length": ints})
    size = st.fixed_dictionaries({"file_id": any_text, "file_unique_id": any_text, "width": ints, "height": ints})
    optional = {
        "text": any_text,
        "entities": st.lists(entity, max_size=3),
        "caption": any_text,
        "photo": st.lists(size, max_size=2),
        "location": st.fixed_dictionaries({"latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180)}),
        "sticker": st.fixed_dictionaries(
            {"file_id": any_text, "file_unique_id": any_text, "type": st.just("regular"), "width": ints, "height": ints,
             "is_animated": st.booleans(), "is_video": st.booleans()}
        ),
    }  # fmt: skip
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
        message[name] = draw(optional[name])
    message.update(draw(extra_fields))
    return message


@st.composite
def updates(draw: st.DrawFn) -> dict:
    """Any update Telegram could send, including kinds Tipline does not handle and unknown ones."""
    kind = draw(st.sampled_from(["message", "edited_message", "channel_post", "callback_query", "unknown_kind"]))
    if kind == "callback_query":
        body = {"id": draw(any_text), "from": draw(users()), "chat_instance": draw(any_text)}
        if draw(st.booleans()):
            body["data"] = draw(st.one_of(any_text, st.sampled_from(["c:1", "c:2", "c:0", "del:yes:en", "del:no:fr", "del:maybe"])))
        if draw(st.booleans()):
            body["message"] = draw(messages())
    elif kind == "unknown_kind":
        body = draw(json_values)
    else:
        body = draw(messages())
    return {"update_id": draw(ints), kind: body, **draw(extra_fields)}


telegram_bodies = st.one_of(
    updates().map(lambda u: json.dumps(u).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.text(alphabet=any_char, max_size=300).map(lambda t: t.encode("utf-8")),
)

# What people type: any text, the global words in any case and accents, emoji, right-to-left
# scripts, control characters and very long lines.
WORDS = ["exit", "QUIT", "Quitter", "stop", "Arrêt", "ARRET", "help", "AIDE", "lang", "Langue", "back", "RETOUR",
         "skip", "Passer", "0", "done", "Fini", "ADD 123-456-789-012", "ajout 000", "CHECK 1", "suivi", "start", "/start",
         "/start deep-link", "/list", "1", "２", "#3", "oui", "NON", "yes"]  # fmt: skip
accented = st.sampled_from(WORDS).flatmap(
    lambda w: st.sampled_from([w, w.upper(), w.lower(), w.title(), w.replace("e", "é"), w.replace("a", "à"), f"  {w}!! ", f"\u200f{w}"])
)
special = st.sampled_from(
    ["👍", "🙏🏽 help", "مرحبا، أحتاج مساعدة", "שלום", "\u202eEXIT\u202c", "\x00\x01\x1b[31m", "\r\n\t", "ﷺ", "𝔥𝔢𝔩𝔭", "Z̸̢͍a̷l̶g̵o", " "]
)
long_line = st.tuples(st.sampled_from(["a", "é", "😀", "word ", "ا"]), st.integers(100, 4096)).map(lambda p: (p[0] * p[1])[:4096])
people_text = st.one_of(any_text, accented, special, long_line, st.text(alphabet=any_char, min_size=1, max_size=4096))
TEXT_LIMITS = {"sms": 1600, "whatsapp": 4096, "telegram": 4096}  # what each provider can deliver


# --- the properties ---------------------------------------------------------------------------------


def test_any_form_to_the_sms_webhook_is_answered_2xx_or_4xx(tipline: Tipline) -> None:
    @FUZZ
    @given(pairs=random_forms, how=signing, content_type=content_types)
    def one(pairs: list[tuple[str, str]], how: str, content_type: str | None) -> None:
        body = urlencode(pairs).encode()
        headers = {"content-type": content_type} if content_type else {}
        if how == "signed":
            headers["X-Twilio-Signature"] = twilio_signature(pairs)
        elif how == "wrong signature":
            headers["X-Twilio-Signature"] = RequestValidator("not-the-auth-token").compute_signature(PUBLIC_URL + SMS_PATH, dict(pairs))
        elif how == "signed for another url":
            headers["X-Twilio-Signature"] = twilio_signature(pairs, url="http://127.0.0.1" + SMS_PATH)
        status = tipline.sms(body, headers).status_code

        assert status < 500, (status, how, pairs[:5])
        if len(body) > MAX_BODY_BYTES:
            assert status == 413
        elif how == "unsigned":
            assert status == 403  # refused before the body is read
        elif how != "signed":
            assert status in (400, 403)  # 400 only for a body that is not a form at all
        else:
            assert status in (200, 400)

    one()
    tipline.assert_healthy()


def test_non_utf8_and_oversized_sms_bodies_are_4xx(tipline: Tipline) -> None:
    @FUZZ
    @given(body=st.binary(max_size=2000), signed=st.booleans(), chunked=st.booleans())
    def one(body: bytes, signed: bool, chunked: bool) -> None:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if signed:
            headers["X-Twilio-Signature"] = twilio_signature([])
        content: bytes | Iterator[bytes] = body
        if chunked:
            # No Content-Length: the size limit must hold for a streamed body too.
            content = iter([body, b"A" * (MAX_BODY_BYTES // 2), b"B" * (MAX_BODY_BYTES // 2 + 10)])
        status = tipline.client.post(SMS_PATH, content=content, headers=headers).status_code
        if not signed:
            assert status == 403  # refused before a byte of the body is read
        elif chunked:
            assert status == 413
        else:
            assert status in (400, 403)  # not UTF-8 / not a form, or the signature does not match it

    one()
    tipline.assert_healthy()


def _is_update(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and type(data.get("update_id")) is int


def test_any_body_to_the_telegram_webhook_with_the_secret_is_answered_2xx_or_4xx(tipline: Tipline) -> None:
    @FUZZ
    @given(body=telegram_bodies)
    def one(body: bytes) -> None:
        response = tipline.telegram(body)
        assert response.status_code < 500, (response.status_code, body[:300])
        if _is_update(body):
            # Telegram's shape, whatever is inside: handled or acknowledged, never refused (a 400
            # would lose a message sent in a shape python-telegram-bot does not know yet).
            assert response.status_code == 200, (response.status_code, body[:300])

    one()
    tipline.assert_healthy()


# Updates that break the Bot API's schema (a required field missing, a field of the wrong type).
# Telegram never sends these and only a holder of the secret can post them, but python-telegram-bot
# builds an Update from them anyway; before ``well_formed`` the channel then failed on them and
# answered 503, asking Telegram for the same broken update again and again (found by the property
# above before its updates were restricted to the schema).
SCHEMA_BREAKING = {
    "message without a chat": {"update_id": 2**42 + 4, "message": {"message_id": 1, "date": 1, "from": {"id": 1, "is_bot": False, "first_name": "A"}, "text": "hi"}},
    "text that is an object": {"update_id": 2**42 + 5, "message": {"message_id": 1, "date": 1, "chat": {"id": 42, "type": "private"}, "text": {"a": 1}}},
    "button press on a message without a chat": {
        "update_id": 2**42 + 6,
        "callback_query": {"id": "q", "from": {"id": 1, "is_bot": False, "first_name": "A"}, "chat_instance": "c", "data": "c:1", "message": {"message_id": 1, "date": 1}},
    },
    "caption that is a number": {"update_id": 2**42 + 7, "message": {"message_id": 1, "date": 1, "chat": {"id": 43, "type": "private"}, "caption": 5, "photo": []}},
}  # fmt: skip


@pytest.mark.parametrize("update", SCHEMA_BREAKING.values(), ids=SCHEMA_BREAKING.keys())
def test_an_update_that_breaks_the_schema_is_acknowledged_not_retried(tipline: Tipline, update: dict) -> None:
    # Acknowledged (200): neither a 5xx, which asks Telegram for the same update again, nor a 400.
    assert tipline.telegram(json.dumps(update).encode()).status_code == 200
    tipline.assert_healthy()


def test_any_body_to_the_telegram_webhook_without_the_secret_is_refused(tipline: Tipline) -> None:
    @settings(FUZZ, max_examples=40)
    @given(body=telegram_bodies, secret=st.one_of(st.none(), st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", max_size=40)))
    def one(body: bytes, secret: str | None) -> None:
        if secret == WEBHOOK_SECRET:
            secret = None
        assert tipline.telegram(body, secret=secret).status_code == 403

    one()
    tipline.assert_healthy()


def test_any_text_a_person_sends_gets_an_answer_on_every_channel(tipline: Tipline) -> None:
    senders = itertools.count(1)  # a new person each time: the flood limit is not what is tested here

    @FUZZ
    @given(channel=st.sampled_from(["sms", "whatsapp", "telegram"]), text=people_text, in_draft=st.booleans())
    def one(channel: str, text: str, in_draft: bool) -> None:
        text = text[: TEXT_LIMITS[channel]]
        n = next(senders)
        if channel == "telegram":
            chat = 8_000_000_000 + n
            messages = (["/start"] if in_draft else []) + [text or "."]  # Telegram never delivers empty text
            for index, said in enumerate(messages):
                before = len(tipline.fake_telegram.sent_messages(chat))
                # Update ids above any the random-JSON property uses: a shared id would be de-duplicated.
                update_id = 2**41 + n * 10 + index
                update = make_text_update(update_id, chat, said, message_id=n * 10 + index)
                response = tipline.telegram(json.dumps(update).encode())
                assert response.status_code == 200, (response.status_code, said[:80])
                assert len(tipline.fake_telegram.sent_messages(chat)) > before, f"no answer to {said[:80]!r}"
            return
        sender = ("whatsapp:" if channel == "whatsapp" else "") + f"+1438{n:07d}"
        for said in (["Hello"] if in_draft else []) + [text]:
            replies = twiml_messages(tipline.client.post(SMS_PATH, **signed_sms(sms_form(sender, said))))
            # After a carrier opt-out word the carrier itself answers and blocks ours: silence is right.
            carrier_stop = channel == "sms" and fold(said) in CARRIER_STOP
            assert bool(replies) != carrier_stop, (said[:80], replies)

    one()
    tipline.assert_healthy()
