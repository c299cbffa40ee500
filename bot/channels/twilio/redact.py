"""Twilio keeps nothing: the deletion of Twilio's copy of every message (inbound, TwiML replies,
REST sends) and of inbound media, queued through the outbox as sealed "twilio-redact" rows."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import ImmutableMultiDict
from twilio.base.exceptions import TwilioRestException

from bot.channels.twilio.rest import TwilioRest, classify, safe_summary
from bot.outbox import DeliveryError
from bot.runtime import Runtime
from storage.records import OutboxItem, OutboxStatus

log = logging.getLogger(__name__)

REDACT_SINK = "twilio-redact"
REDACT_TOO_EARLY_RETRY_SECONDS = 120.0
SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
_MEDIA_SID_ONLY = re.compile(r"^ME[0-9a-fA-F]{32}$")
_MEDIA_SID = re.compile(r"/Messages/(?:SM|MM)[0-9a-fA-F]{32}/Media/(ME[0-9a-fA-F]{32})$")


def media_sids(form: ImmutableMultiDict) -> list[str]:
    """The Media SIDs of an inbound MMS/WhatsApp message, read from MediaUrl0..N only to delete
    them at Twilio (the URLs themselves are never stored)."""
    sids = []
    for key, value in form.multi_items():
        if key.startswith("MediaUrl") and key[8:].isdigit():
            found = _MEDIA_SID.search(value.split("?")[0])
            if found:
                sids.append(found.group(1))
    return sids


def redaction(sid: str, media: list[str] | None = None, delay: float = 0.0) -> OutboxItem:
    """The outbox row that deletes Twilio's copy of message ``sid`` (and its media); the payload is
    sealed like every outbox payload, so the SID never sits in the database in clear."""
    now = time.time()
    payload: dict[str, object] = {"sid": sid}
    if media:
        payload["media"] = media
    return OutboxItem(
        id=uuid.uuid4().hex, sink=REDACT_SINK, payload=payload, status=OutboxStatus.PENDING, attempts=0,
        next_at=now + delay, created_at=now,
    )  # fmt: skip


async def queue_redaction(runtime: Runtime, sid: str, media: list[str] | None = None, delay: float = 0.0) -> None:
    """The deletion queued in a transaction of its own (a status callback: no message to join)."""
    try:
        async with runtime.store.transaction() as tx:
            await tx.outbox.add(redaction(sid, media, delay))
    except Exception as exc:  # noqa: BLE001 - the tip is safe; the person must still get the answer
        if runtime.engine.storage.report(exc) is None:  # a storage failure: logged once a minute there
            log.exception("could not queue the redaction of a Twilio message")
        return
    runtime.worker.wake()


def delivery_error(exc: BaseException) -> DeliveryError:
    """Twilio's verdict as the outbox understands it. The reason is ``safe_summary`` (Twilio's
    own message text may quote a phone number, so it is never kept or logged)."""
    verdict, reason = classify(exc), safe_summary(exc)
    if verdict == "too_early":
        return DeliveryError(reason, retry_after=REDACT_TOO_EARLY_RETRY_SECONDS)
    return DeliveryError(reason, permanent=verdict == "permanent")


class RedactSink:
    """Deletes Twilio's copy (body and metadata) of an inbound message."""

    # The message to delete is named in the sealed payload; the row has no target to check.
    addressed_by_payload = True

    def __init__(self, rest: Callable[[], TwilioRest]) -> None:
        self.rest = rest

    async def deliver(self, item: OutboxItem, target: str) -> None:
        sid = item.payload.get("sid")
        if not isinstance(sid, str) or not SID.match(sid):
            raise DeliveryError("redaction row without a valid message sid", permanent=True)
        media = item.payload.get("media") or []
        if not isinstance(media, list) or not all(isinstance(m, str) and _MEDIA_SID_ONLY.match(m) for m in media):
            raise DeliveryError("redaction row with an invalid media sid", permanent=True)
        rest = self.rest()
        try:
            # Media first: they are addressed under their message, which must still exist.
            for media_sid in media:
                try:
                    await rest.delete_media(sid, media_sid)
                except TwilioRestException as exc:
                    if exc.status != 404:
                        raise
            await rest.delete_message(sid)
        except TwilioRestException as exc:
            if exc.status == 404:
                return  # already gone (deleted by an earlier attempt, or by hand): done
            raise delivery_error(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise delivery_error(exc) from None
