"""Delivering an officer's reply to the tipster, on the channel the tip came from.

Outbox rows ``tipster:<channel>`` are written with the reply (only when the tipster accepted
replies). What is sent is a content-free notice in the tipster's language ("New message for you.
Send CHECK and your code"): the reply itself is read with CHECK. The tipster's address is read from
the tip (encrypted at rest) at the moment of sending and is not logged.
"""

from __future__ import annotations

from typing import Protocol

from bot.i18n import Catalogues
from bot.outbox import DeliveryError
from storage.interfaces import Store
from storage.records import OutboxItem, TipStatus


class TipsterSender(Protocol):
    async def send_to_tipster(self, address: str, text: str) -> None:
        """Send ``text`` to ``address`` on this channel; raise DeliveryError on failure."""
        ...


class TipsterSink:
    # Where a reply goes is the tip's own sealed contact, not the row's sink: always allowed.
    addressed_by_payload = True

    def __init__(self, store: Store, catalogues: Catalogues) -> None:
        self.store = store
        self.catalogues = catalogues
        self.senders: dict[str, TipsterSender] = {}

    def register(self, channel: str, sender: TipsterSender) -> None:
        self.senders[channel] = sender

    async def deliver(self, item: OutboxItem, target: str) -> None:
        tip = await self.store.tips.get(item.payload["tip_id"])
        if tip is None or tip.status is TipStatus.CLOSED or not tip.contact_address:
            return  # closed or purged since: the reply is kept on the case, nothing to send
        followup = next((f for f in await self.store.followups.for_tip(tip.id) if f.id == item.payload["followup_id"]), None)
        if followup is None:
            return
        sender = self.senders.get(target)
        if sender is None:
            raise DeliveryError(f"channel {target} is not running", retry_after=300)
        # Content-free: a phone's lock screen (or whoever holds the phone) learns nothing from it;
        # the reply itself is read with CHECK and the code.
        await sender.send_to_tipster(tip.contact_address, self.catalogues.text(tip.language, "tipster.reply_notice"))
