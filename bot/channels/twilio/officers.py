"""Officer alerts by SMS: case number and flags only, to numbers kept in the settings (the outbox
row names the officer by pseudonym), and the deletion of Twilio's copy once sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.alerting import AlertComposer
from bot.channels.twilio.redact import delivery_error
from bot.channels.twilio.rest import TwilioRest
from bot.outbox import DeliveryError
from handlers import officer_view
from handlers.alerts import AlertEvent
from storage.records import OutboxItem, Tip

OFFICER_SINK = "sms"
OFFICER_PSEUDONYM_CHANNEL = "officer-sms"


def officer_text(composer: AlertComposer, tip: Tip, event: AlertEvent) -> str:
    """Case number and flags only: an SMS to an officer's phone never carries what was reported."""
    t = composer.catalogues.text
    language = composer.language
    lines = [t(language, f"alert.{event.value}", case=tip.case_number)]
    # Every character counts in an SMS: the urgent title already says URGENT.
    flags = officer_view.flags(composer.catalogues, language, tip, urgent=event is not AlertEvent.URGENT)
    if flags:
        lines.append(" · ".join(flags))
    return "\n".join(lines)


class OfficerSmsSink:
    """Short officer alerts (and service notices) by SMS. ``target`` is a pseudonym; the number
    comes from settings."""

    # An on-call phone gets the urgent alert and the filed tip, not an SMS for every answer of an
    # urgent case filling in (the officer group reads those).
    wants_updates = False
    in_order = True  # a case's URGENT never after its "New tip" (bot.outbox lanes)

    def __init__(
        self,
        rest: Callable[[], TwilioRest],
        composer: AlertComposer,
        numbers: dict[str, str],
        redact: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.rest = rest
        self.composer = composer
        self.numbers = numbers
        self.redact = redact

    async def deliver(self, item: OutboxItem, target: str) -> None:
        number = self.numbers.get(target)
        if number is None:  # the number was removed from the settings since the row was queued
            raise DeliveryError("officer SMS number is no longer configured", permanent=True)
        if item.payload.get("kind") not in ("alert", "notice"):
            raise DeliveryError(f"officer SMS cannot carry {item.payload.get('kind')!r} rows", permanent=True)
        alert = await self.composer.compose(item)
        if alert is None:
            return  # the tip was purged: nothing left to tell
        # A notice is about the service (one short sentence, no tip content): sent as composed.
        text = alert.text if alert.tip is None or alert.event is None else officer_text(self.composer, alert.tip, alert.event)
        rest = self.rest()
        try:
            sid = await rest.send_sms(number, text)
        except Exception as exc:  # noqa: BLE001 - classify decides; unknown errors are permanent
            raise delivery_error(exc) from None
        if self.redact is not None:
            await self.redact(sid)
