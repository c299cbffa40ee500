"""Log scrubbing: at DEBUG level, on every channel, with officer alerts and failures, no phone
number, Telegram id, name, username, token or typed text reaches the logs.

Run alone (about 10 s)::

    .venv/bin/python -m pytest tests/reliability/test_log_scrubbing.py -q -p no:cacheprovider

Two runs:

* the console: ``python main.py chat`` as a subprocess with ``TIPLINE_LOG_LEVEL=DEBUG``, a whole
  report, then officer commands (list, show, an anonymous reply); its standard error is read. The
  officer alert is printed there too, by design (the console is the officer's side as well), so
  the framed alert is set aside and everything else on standard error must be clean.
* SMS, WhatsApp and Telegram through the real app served on loopback, officer alerts to a Telegram
  group (with full details) and to an officer's SMS, officers' commands in their group (show a
  tip, reply to its tipster, relayed by SMS), with failures on the way: Twilio answers 500
  to the first officer SMS (its message quoting phone numbers, as Twilio's messages do) and
  Telegram fails one reply to the tipster. Logging is set up with the real
  ``bot.logs.setup_logging("DEBUG", stream=...)`` (the redaction filter on its handler), and
  pytest's ``caplog`` handler is put in front of it, so caplog sees each record as Tipline and its
  libraries wrote it, before any redaction: both must be clean, the second proving the logs are
  clean by construction and not only thanks to the filter.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from bot.channels import registry
from bot.channels.telegram import channel as telegram
from bot.channels.telegram.limits import FloodLimits
from bot.logs import setup_logging
from bot.settings import Settings
from bot.web import create_app
from tests.conftest import set_up_line
from tests.fakes.server import LoopbackServer
from tests.fakes.telegram_api import FakeTelegramAPI, make_callback_update, make_text_update
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.reliability.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BOT_TOKEN,
    FROM_NUMBER,
    MAIN,
    OFFICER_CHAT,
    OFFICER_NUMBER,
    PUBLIC_URL,
    RECEIPT,
    SECRET_HEADER,
    SMS_PATH,
    TELEGRAM_PATH,
    WEBHOOK_SECRET,
    shows,
    sms_form,
    signed_sms,
    twiml_messages,
)

SMS_SENDER = "+15145550123"
WHATSAPP_SENDER = "whatsapp:+15145550124"
CHAT = 7312345678  # a private chat's id is the person's Telegram user id
FIRST_NAME = "Zephyrine"
USERNAME = "zephy_tip_user"
PLACE = "Motel Quokka 4417 Imaginary Road"
DETAILS = "Grey van plate QX7ZB9, the driver said call him at +1 438 555 0177 or quokka.boss@example.net"
ADDITION = "The van came back tonight with Zorblatt"
OFFICER_REPLY = "Thank you, could you tell us the colour of the door"
OFFICER_USER = 4412345678  # an officer's Telegram user id, in the officers' group
OFFICER_NAME = "Bartholomew"
# Everything that must never be in a log line, each in the forms it could take.
SECRETS = [
    SMS_SENDER, SMS_SENDER[1:], SMS_SENDER[2:],  # +E.164, digits only, national
    WHATSAPP_SENDER, WHATSAPP_SENDER.removeprefix("whatsapp:+"),
    OFFICER_NUMBER, OFFICER_NUMBER[1:],
    "+1 438 555 0177", "4385550177", "quokka.boss@example.net",
    str(CHAT), FIRST_NAME, USERNAME, str(OFFICER_USER), OFFICER_NAME,
    BOT_TOKEN, BOT_TOKEN.split(":")[1], AUTH_TOKEN, WEBHOOK_SECRET,
    PLACE, "Quokka", DETAILS, "QX7ZB9", ADDITION, "Zorblatt", OFFICER_REPLY, "colour of the door",
]  # fmt: skip
FAST = FloodLimits(chat_burst=1000, chat_period=0.01, group_max=1000, group_period=0.01, overall_max=1000, overall_period=0.01)
REPORT = ["2", "2", "2", "2", PLACE, "3", DETAILS, "DONE", "1", "1"]  # danger no … contact yes, send


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


# --- the console -------------------------------------------------------------------------------------

ALERT_FRAME = re.compile(r"\n  \+-- OFFICER ALERT -+\n(?:  \|.*\n)*  \+-+\n")


def test_console_chat_at_debug_logs_nothing_personal(tmp_path: Path) -> None:
    case = f"{datetime.now(timezone.utc).year % 100:02d}-0001"  # the first case of a new database
    lines = ["Hello", *REPORT, "/list", f"/show {case}", f"/reply {case} {OFFICER_REPLY}"]
    env = {"PATH": os.environ.get("PATH", ""), "PTB_TIMEDELTA": "1", "TIPLINE_DATA_DIR": str(tmp_path / "data"), "TIPLINE_LOG_LEVEL": "DEBUG"}
    result = subprocess.run(
        [sys.executable, str(MAIN), "chat"], input="\n".join(lines) + "\n", capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )

    assert result.returncode == 0, result.stderr[-2000:]
    # The run did what it should: a receipt, the officer's view of the tip, the reply relayed.
    # The reply reaches the console tipster as a content-free notice (it is read with CHECK).
    assert RECEIPT.search(result.stdout) and DETAILS in result.stdout and "New message for you" in result.stdout
    alerts = ALERT_FRAME.findall(result.stderr)
    assert len(alerts) == 1 and PLACE in alerts[0]  # the officer's alert shows where, by design
    logs = ALERT_FRAME.sub("\n", result.stderr)
    assert " DEBUG " in logs and "bot.engine: console message from" in logs  # DEBUG is on, Tipline logged
    assert "delivered to console" in logs and "delivered to tipster" in logs
    assert leaks(logs) == [], logs


# --- SMS, WhatsApp and Telegram through the served app ---------------------------------------------


@dataclass
class Served:
    client: httpx.Client
    fake_telegram: FakeTelegramAPI
    fake_twilio: FakeTwilioAPI
    next_update: int = 100

    def sms(self, sender: str, body: str) -> list[str]:
        form = sms_form(sender, body)
        response = self.client.post(SMS_PATH, **signed_sms(form))
        return twiml_messages(response)

    def post_update(self, update: dict) -> int:
        response = self.client.post(
            TELEGRAM_PATH, content=json.dumps(update), headers={SECRET_HEADER: WEBHOOK_SECRET, "content-type": "application/json"}
        )
        return response.status_code

    def text_update(self, text: str) -> dict:
        self.next_update += 1
        return make_text_update(self.next_update, CHAT, text, message_id=10_000 + self.next_update, first_name=FIRST_NAME, username=USERNAME)

    def telegram(self, text: str) -> list[str]:
        before = len(self.fake_telegram.sent_messages(CHAT))
        assert self.post_update(self.text_update(text)) == 200
        return [m["text"] for m in self.fake_telegram.sent_messages(CHAT)[before:]]

    def wait_for(self, found: Callable[[], object], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The real logging set-up at DEBUG, writing to a buffer, from before the app starts. The
    process-wide logging configuration is restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    stream = io.StringIO()
    setup_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))


def raw_records_first(caplog: pytest.LogCaptureFixture) -> None:
    """Put caplog's handler before the redacting one, so it keeps each record as it was written
    (the filter rewrites records in place). Called in the test body: caplog has a handler per phase."""
    caplog.set_level(logging.DEBUG)
    root = logging.getLogger()
    if caplog.handler in root.handlers:
        root.handlers.remove(caplog.handler)
    root.handlers.insert(0, caplog.handler)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO) -> Iterator[Served]:
    fake_telegram = FakeTelegramAPI(token=BOT_TOKEN)
    fake_twilio = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    # Telegram's flood limits would only make this test wait; tests/channels covers them.
    monkeypatch.setattr(
        registry, "FACTORIES", [(lambda s: telegram.build(s, limits=FAST)) if f is telegram.build else f for f in registry.FACTORIES]
    )
    with LoopbackServer(fake_telegram.app) as telegram_api, LoopbackServer(fake_twilio.app) as twilio_api:
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            public_url=PUBLIC_URL,
            twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_url": twilio_api.url},
            telegram={"token": BOT_TOKEN, "api_url": telegram_api.url, "webhook_secret": WEBHOOK_SECRET, "mode": "webhook"},
            officers={"telegram_chat_ids": [OFFICER_CHAT], "telegram_user_ids": [OFFICER_USER], "sms_numbers": [OFFICER_NUMBER], "full_details": True},
        )
        set_up_line(settings)  # python main.py init
        with LoopbackServer(create_app(settings), lifespan="on") as server, httpx.Client(base_url=server.url, timeout=30) as client:
            yield Served(client, fake_telegram, fake_twilio)


def test_every_channel_at_debug_with_alerts_and_failures_logs_nothing_personal(
    served: Served, log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    raw_records_first(caplog)
    # Twilio's error messages quote numbers ("The 'To' number +1… is not valid"): the first officer
    # SMS fails with one, and the outbox must log its reason without it.
    served.fake_twilio.fail_next("create", status=500, message=f"The 'To' number {OFFICER_NUMBER} is not valid; tipster {SMS_SENDER}")

    # SMS: danger yes (an urgent alert at once), a whole report with consent to replies, then an addition.
    assert shows("danger.question", " ".join(served.sms(SMS_SENDER, "Hello")))
    assert shows("danger.urgent", " ".join(served.sms(SMS_SENDER, "1")))
    # Urgent: the place is asked first, then the rest of the report.
    for said in [PLACE, *REPORT[1:4], *REPORT[5:]]:
        reply = " ".join(served.sms(SMS_SENDER, said))
    receipt = RECEIPT.search(reply).group()
    assert shows("add.sent", " ".join(served.sms(SMS_SENDER, f"ADD {receipt} {ADDITION}")))

    # WhatsApp: half a report, a wrong receipt, then EXIT.
    for said in ["Hello", "2", "2", "1", "1", PLACE]:
        served.sms(WHATSAPP_SENDER, said)
    assert shows("erased", " ".join(served.sms(WHATSAPP_SENDER, "EXIT")))
    assert shows("receipt.unknown", " ".join(served.sms(WHATSAPP_SENDER, "CHECK 000-111-222-333")))

    # Telegram: a whole report; one reply fails on the way (Telegram must deliver that update again),
    # then the conversation is deleted from the phone.
    assert shows("danger.question", " ".join(served.telegram("/start")))
    served.fake_telegram.fail_next("sendMessage", status=502)
    failing = served.text_update("2")
    assert served.post_update(failing) == 503
    assert served.post_update(failing) == 200  # the redelivery: same update id, answered this time
    for said in REPORT[1:]:
        replies = served.telegram(said)
    assert shows("submitted.receipt", " ".join(replies))
    offer = max(mid for (chat, mid), m in served.fake_telegram.messages.items() if chat == str(CHAT) and m.get("reply_markup"))
    served.next_update += 1
    delete = make_callback_update(served.next_update, CHAT, "del:yes:en", offer, first_name=FIRST_NAME, username=USERNAME)
    assert served.post_update(delete) == 200 and served.fake_telegram.calls_of("deleteMessages")

    # Officers in their group read the SMS tip and reply to the tipster, who accepted replies: the
    # reply goes out by SMS to the tipster's number.
    case = f"{datetime.now(timezone.utc).year % 100:02d}-0001"  # the SMS tip: the first case, made urgent
    for command in (f"/show {case}", f"/reply {case} {OFFICER_REPLY}"):
        served.next_update += 1
        update = make_text_update(served.next_update, OFFICER_CHAT, command, user_id=OFFICER_USER, chat_type="supergroup", first_name=OFFICER_NAME)
        assert served.post_update(update) == 200
    served.wait_for(lambda: [m for m in served.fake_twilio.sent() if m["To"] == SMS_SENDER], "the officer's reply by SMS")
    notice = [m for m in served.fake_twilio.sent() if m["To"] == SMS_SENDER][0]["Body"]
    assert notice.startswith("New message for you") and OFFICER_REPLY not in notice  # content-free

    # Officer alerts: urgent + new + addition (SMS tip), new (Telegram tip), in the group and by SMS,
    # the SMS one after Twilio's 500 and the outbox's retry.
    def group() -> str:
        return "\n".join(m["text"] for m in served.fake_telegram.sent_messages(OFFICER_CHAT))

    # Full details reach officers (the addition too); only the logs must not have them.
    served.wait_for(lambda: "Quokka" in group() and "Zorblatt" in group(), "alerts in the officer group")
    served.wait_for(lambda: len([m for m in served.fake_twilio.sent() if m["To"] == OFFICER_NUMBER]) >= 4, "officer SMS after the retry")
    assert [c.status for c in served.fake_twilio.calls if c.method == "POST"][0] == 500

    # A canary through the same handler: a number in a log line is masked, so the filter is on.
    logging.getLogger("bot.reliability").warning("canary %s", "+15145550999")

    logs = log_stream.getvalue()
    raw = caplog.text
    assert "canary ****" in logs and "+15145550999" not in logs and "+15145550999" in raw
    for channel in ("sms", "whatsapp", "telegram"):
        assert f"bot.engine: {channel} message from" in logs, channel  # every channel logged at DEBUG/INFO
    assert re.search(r"outbox \w+ attempt 1 failed \(twilio HTTP 500", logs)  # the error path was logged
    assert "Telegram will deliver the update again" in logs
    assert "telegram officer command" in logs and "delivered to tipster" in logs
    assert " DEBUG " in logs
    assert leaks(logs) == [], logs
    assert leaks(raw) == [], raw
