"""SMS, MMS and WhatsApp through Twilio: the ``POST /sms/twilio`` webhook and two outbox sinks.

Inbound: Twilio posts a form for every message and waits (up to 15 s) for TwiML. The webhook

1. refuses a request without ``X-Twilio-Signature`` before reading its body (403);
2. checks the signature with twilio's ``RequestValidator`` against the *public* URL
   (``TIPLINE_PUBLIC_URL`` + path + query), never the URL this process sees behind a proxy, and
   refuses a bad one before anything is parsed into a message or stored (403);
3. validates the fields it uses (400 when malformed; bodies over 64 KB are the app's 413);
4. hands the engine an :class:`InboundMessage` named by a pseudonym. The number is only the
   in-memory ``reply_address`` (stored, encrypted, solely with consent); Twilio's geo fields,
   ProfileName and WaId are never read; media URLs only to fetch pictures (bot.channels.twilio.media);
5. answers the replies as TwiML, each ``<Message>`` one SMS segment.

The engine de-duplicates on (channel, MessageSid) in its own transaction, so a retried webhook
gets the same TwiML and files nothing twice.

Carrier words (SMS only; WhatsApp has no carrier opt-out): after STOP and its synonyms the carrier
(or Twilio's opt-out handling) confirms and blocks replies, so the draft is erased and the TwiML is
empty. START / UNSTOP re-open the conversation.

Outbound: officer alerts as short SMS (``officers``: "sms:<pseudonym>" outbox rows, the number is
looked up in the settings at delivery so it never sits in the database), the TwiML itself
(``twiml``) and, with ``TIPLINE_TWILIO__REDACT``, deletion of Twilio's copy of every message
(``redact``: "twilio-redact" rows, queued from the status route ``/sms/twilio/status`` too).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bot.channels.twilio.officers import OFFICER_PSEUDONYM_CHANNEL, OFFICER_SINK, OfficerSmsSink
from bot.channels.twilio.media import SOURCE as MEDIA_SOURCE
from bot.channels.twilio.media import TwilioPictureSource, media_refs
from bot.channels.twilio.redact import REDACT_SINK, SID, RedactSink, delivery_error, media_sids, queue_redaction, redaction
from bot.channels.twilio.rest import TwilioRest
from bot.channels.twilio.signature import SignatureCheck
from bot.channels.twilio.twiml import twiml_response
from bot.messages import InboundKind, InboundMessage
from bot.outbox import DeliveryError, Sink
from bot.runtime import Runtime
from bot.settings import Settings, SettingsError
from handlers.understanding import Control
from handlers.words import fold

log = logging.getLogger(__name__)

PATH = "/sms/twilio"
# Where each TwiML <Message> reports its status (its ``action``): the final status is our cue to
# delete Twilio's copy of the reply we sent.
STATUS_PATH = "/sms/twilio/status"
SMS = "sms"
WHATSAPP = "whatsapp"
WHATSAPP_PREFIX = "whatsapp:"

# Opt-out words carriers and Twilio act on (ARRET for Canadian French). After one of them the
# carrier sends its own confirmation and blocks further replies, so we answer nothing.
CARRIER_STOP = frozenset({"stop", "arret", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke"})
# Opt-in words. Twilio also accepts YES, but "yes" is an answer in the flow, so it stays one.
CARRIER_START = frozenset({"start", "unstop"})

# Wait before deleting Twilio's copy of an inbound message, so the delete never races Twilio's own
# handling of the TwiML answer still on its way back.
REDACT_DELAY_SECONDS = 5.0
STOPPED_RETRY_SECONDS = 30.0

MAX_FORM_FIELDS = 200  # a real webhook has ~20 fields, plus MediaUrlN/MediaContentTypeN (<= 10 each)
SMS_BODY_LIMIT = 1600  # Twilio's limit for one (concatenated) SMS
WHATSAPP_BODY_LIMIT = 4096  # WhatsApp's own text limit: a long WhatsApp message must not get a 400
# A WhatsApp user who adopted a username may be known only by Meta's business-scoped user id
# (BSUID): ISO country code, a dot, up to 128 alphanumerics (``US.13491208655302741918``; a parent
# id has ``.ENT.``). It is an address like a number: pseudonymised, answered, never a 400.
_FROM = r"^((whatsapp:)?\+[1-9]\d{1,14}|whatsapp:[A-Z]{2}(\.ENT)?\.[A-Za-z0-9]{1,128})$"
# Status values Twilio posts for a message it is handing over (outbound), as opposed to an inbound
# message ("received"; "receiving" while an MMS is fetched). Such a form is a status callback,
# never something a person said.
INBOUND_STATUSES = frozenset({"received", "receiving"})
# Statuses after which Twilio will not change the message any more (Twilio's "Outbound Message
# Status in Status Callbacks" guide): delivered/undelivered/failed, read (WhatsApp), canceled
# (scheduled messages). "sent" is final for carriers and channels that never report delivery; a
# later "delivered" just finds the copy already gone (404, done).
FINAL_STATUSES = frozenset({"sent", "delivered", "undelivered", "failed", "read", "canceled"})
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class TwilioInbound(BaseModel):
    """The few fields of Twilio's messaging webhook that Tipline reads. Everything else (FromCity,
    FromZip, ProfileName, WaId…) is ignored by construction, never copied; MediaUrlN is read apart,
    only to fetch the picture (``bot.channels.twilio.media``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_sid: str = Field(alias="MessageSid", pattern=SID.pattern)
    from_: str = Field(alias="From", pattern=_FROM)
    body: str = Field("", alias="Body", max_length=WHATSAPP_BODY_LIMIT)
    num_media: int = Field(0, alias="NumMedia", ge=0, le=10)
    # Set by Twilio's Advanced Opt-Out when the text matched an opt-out/in/help keyword, including
    # keywords a deployment configured in Twilio's console. Free text: a value Twilio adds one day
    # must not turn a message into a 400 (silence for the person).
    opt_out_type: str | None = Field(None, alias="OptOutType", max_length=32)

    @model_validator(mode="after")
    def _sms_body_limit(self) -> TwilioInbound:
        if not self.from_.startswith(WHATSAPP_PREFIX) and len(self.body) > SMS_BODY_LIMIT:
            raise ValueError(f"Body is longer than {SMS_BODY_LIMIT} characters")
        return self

    @property
    def channel(self) -> str:
        return WHATSAPP if self.from_.startswith(WHATSAPP_PREFIX) else SMS


def carrier_action(channel: str, text: str, opt_out_type: str | None) -> str | None:
    """What the carrier or Twilio does with this SMS besides handing it to us: "stop", "start",
    "help" or None."""
    if channel != SMS:
        return None
    word = fold(text)
    if opt_out_type == "STOP" or word in CARRIER_STOP:
        return "stop"
    if opt_out_type == "START" or word in CARRIER_START:
        return "start"
    if opt_out_type == "HELP":
        return "help"
    return None


class SmsChannel:
    name = SMS

    def __init__(self, settings: Settings) -> None:
        twilio = settings.twilio
        assert twilio.auth_token is not None and settings.public_url is not None  # checked by build()
        self.settings = settings
        self.webhook_url = settings.public_url + PATH
        self.status_url = settings.public_url + STATUS_PATH
        self._signatures = SignatureCheck(twilio.auth_token.get_secret_value())
        self._runtime: Runtime | None = None
        self._rest: TwilioRest | None = None
        self._pictures: TwilioPictureSource | None = None
        self._officers: dict[str, str] = {}  # pseudonym -> number, in memory only

    # -- Channel protocol ---------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [Route(PATH, self.webhook, methods=["POST"]), Route(STATUS_PATH, self.status_callback, methods=["POST"])]

    async def start(self, runtime: Runtime) -> None:
        twilio = self.settings.twilio
        assert twilio.account_sid and twilio.auth_token and twilio.from_number
        self._rest = TwilioRest(twilio.account_sid, twilio.auth_token.get_secret_value(), twilio.from_number, api_url=twilio.api_url)
        # Officers' numbers: the fixed pepper (officers are named for good, see Cipher.pseudonym).
        self._officers = {runtime.cipher.pseudonym(OFFICER_PSEUDONYM_CHANNEL, n): n for n in self.settings.officers.sms_numbers}
        self._runtime = runtime
        self._pictures = TwilioPictureSource(twilio)
        runtime.engine.pictures.add_source(MEDIA_SOURCE, self._pictures)
        # Officers' replies to tipsters who accepted them go back the way the tip came.
        runtime.tipster_sink.register(SMS, self)
        runtime.tipster_sink.register(WHATSAPP, self)

    def sinks(self) -> dict[str, Sink]:
        runtime = self._runtime
        if runtime is None:
            raise RuntimeError("the SMS channel is not started")
        redact = self._redact_sent if self.settings.twilio.redact else None
        return {
            OFFICER_SINK: OfficerSmsSink(self._rest_for_delivery, runtime.composer, self._officers, redact),
            REDACT_SINK: RedactSink(self._rest_for_delivery),
        }

    async def _redact_sent(self, sid: str) -> None:
        """A message we sent by REST: queue the delete of its copy at once. Twilio refuses it while
        the message is still queued/sending (20009), and RedactSink retries those later."""
        runtime = self._runtime
        if runtime is not None and SID.match(sid):
            await queue_redaction(runtime, sid, delay=REDACT_DELAY_SECONDS)

    def alert_targets(self) -> tuple[str, ...]:
        return tuple(f"{OFFICER_SINK}:{pseudonym}" for pseudonym in self._officers)

    async def stop(self) -> None:
        self._runtime = None
        rest, self._rest = self._rest, None
        if rest is not None:
            await rest.aclose()
        pictures, self._pictures = self._pictures, None
        if pictures is not None:
            await pictures.close()

    async def send_to_tipster(self, address: str, text: str) -> None:
        """An officer's reply, to the number (or ``whatsapp:`` number) the tip came from."""
        rest = self._rest_for_delivery()
        try:
            sid = await rest.send_sms(address, text)
        except Exception as exc:  # noqa: BLE001 - classify decides; unknown errors are permanent
            raise delivery_error(exc) from None
        if self.settings.twilio.redact:
            await self._redact_sent(sid)

    def _rest_for_delivery(self) -> TwilioRest:
        """The REST client, or a retry later when the channel is stopped. The web app stops
        channels before the outbox worker, and TwilioRest would quietly reopen (and leak) an HTTP
        session if used after ``stop``; the row simply waits for the next start."""
        if self._rest is None:
            raise DeliveryError("the SMS channel is stopped", retry_after=STOPPED_RETRY_SECONDS)
        return self._rest

    # -- webhook ------------------------------------------------------------------------------

    async def _signed_form(self, request: Request, public_url: str, path: str) -> tuple[Runtime, ImmutableMultiDict] | Response:
        """The form of a request Twilio signed for ``public_url``, or the refusal to answer."""
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            return PlainTextResponse("forbidden", status_code=403)  # the body is not even read
        runtime = self._runtime
        if runtime is None:
            return PlainTextResponse("starting", status_code=503)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return PlainTextResponse("expected a form", status_code=400)
        try:
            pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            return PlainTextResponse("malformed form", status_code=400)
        form = ImmutableMultiDict(pairs)  # the validator signs every value of a repeated field
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = public_url + (f"?{query}" if query else "")
        if not self._signatures.valid(url, form, signature):
            log.warning("twilio webhook refused: signature does not match %s", path)
            return PlainTextResponse("forbidden", status_code=403)
        return runtime, form

    async def status_callback(self, request: Request) -> Response:
        """Status of a reply we sent as TwiML (its ``<Message action>``). Once final, Twilio's copy
        of that reply is deleted through the outbox; the answer is always an empty Response."""
        signed = await self._signed_form(request, self.status_url, STATUS_PATH)
        if isinstance(signed, Response):
            return signed
        runtime, form = signed
        sid = form.get("MessageSid", "")
        status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        if not SID.match(sid) or not re.fullmatch(r"[a-z_]{1,32}", status):
            log.warning("twilio status callback malformed")
            return PlainTextResponse("malformed status", status_code=400)
        if status in FINAL_STATUSES and self.settings.twilio.redact:
            await queue_redaction(runtime, sid, delay=REDACT_DELAY_SECONDS)
        return twiml_response([])

    async def webhook(self, request: Request) -> Response:
        signed = await self._signed_form(request, self.webhook_url, PATH)
        if isinstance(signed, Response):
            return signed
        runtime, form = signed
        # A status callback pointed at this URL (a console's status callback set to it, or an old
        # number configuration): it is about a message we sent, never words of a person. Opening a
        # conversation for it would open a draft for our own number.
        status = form.get("MessageStatus") or form.get("SmsStatus")
        if status is not None and status not in INBOUND_STATUSES:
            return twiml_response([])
        try:
            inbound = TwilioInbound.model_validate(dict(form))
        except ValidationError as exc:
            # Field names only: the error text would include the values (a phone number).
            fields = sorted({str(e["loc"][0]) if e["loc"] else "-" for e in exc.errors()})
            log.warning("twilio webhook malformed: %s", ", ".join(fields))
            return PlainTextResponse("malformed message", status_code=400)

        channel = inbound.channel
        action = carrier_action(channel, inbound.body, inbound.opt_out_type)
        text, kind = inbound.body, InboundKind.TEXT
        if action == "stop":
            # STOP, ARRET, QUIT… already erase; the other opt-out words mean the same thing here.
            text = text if runtime.engine.vocabulary.read(text).is_(Control.EXIT) else "STOP"
        elif action == "start":
            text, kind = "", InboundKind.START
        elif action == "help" and not runtime.engine.vocabulary.read(text).is_(Control.HELP):
            text = "HELP"  # a help keyword configured in Twilio's console: our help, not a report
        elif "Latitude" in form and not text and not inbound.num_media:
            kind = InboundKind.UNSUPPORTED  # a shared WhatsApp location: answered calmly, not kept
        names = runtime.cipher.tipster_pseudonyms(channel, inbound.from_)
        message = InboundMessage(
            channel=channel,
            sender=names.current,
            earlier_sender=names.previous,
            text=text,
            kind=kind,
            provider_id=inbound.message_sid,
            reply_address=inbound.from_,
            has_media=inbound.num_media > 0,
            media=media_refs(form, inbound.num_media, inbound.message_sid, self.settings.twilio),
        )
        redact = self.settings.twilio.redact
        # The deletion of Twilio's copy commits with the message (one transaction, one fsync).
        deletion = (redaction(inbound.message_sid, media_sids(form), delay=REDACT_DELAY_SECONDS),) if redact else ()
        replies = await runtime.engine.handle(message, outbox_rows=deletion)
        # After STOP the carrier confirms on its own and blocks anything we would send.
        return twiml_response([] if action == "stop" else replies, self.status_url if redact else None)


def build(settings: Settings) -> SmsChannel | None:
    """The SMS channel when Twilio is configured. Signatures are checked against the public URL,
    so without one the channel refuses to start rather than accept unverifiable webhooks."""
    if not settings.twilio.enabled:
        if settings.officers.sms_numbers:
            log.warning("TIPLINE_OFFICERS__SMS_NUMBERS is set but Twilio is not: no officer SMS will be sent")
        return None
    if not settings.public_url:
        raise SettingsError(
            "setting TIPLINE_PUBLIC_URL: required for SMS (Twilio signs each webhook with the public URL "
            f"it calls, e.g. https://tips.example.org{PATH})"
        )
    bad = [i + 1 for i, n in enumerate(settings.officers.sms_numbers) if not _E164.match(n)]
    if bad:
        raise SettingsError(
            f"setting TIPLINE_OFFICERS__SMS_NUMBERS: entry {', '.join(map(str, bad))} is not an E.164 number like +15145550100"
        )
    return SmsChannel(settings)
