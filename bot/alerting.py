"""Turning an alert (or notice) row of the outbox into the text officers read, at delivery time."""

from __future__ import annotations

from dataclasses import dataclass

from bot.i18n import Catalogues
from handlers.alerts import AlertEvent, Notice, render_alert, render_notice
from storage.interfaces import Store
from storage.records import OutboxItem, Tip


@dataclass(frozen=True)
class ComposedAlert:
    """What a sink sends. A notice (about the service, not a tip) has no ``tip`` and no ``event``:
    sinks send its ``text`` as it is, with no case buttons."""

    tip: Tip | None
    event: AlertEvent | None
    text: str
    notice: Notice | None = None
    pictures: int = 0  # the case's (an addition's: those it brought); a Photos button when any


class AlertComposer:
    def __init__(self, store: Store, catalogues: Catalogues, language: str = "en", full_details: bool = False) -> None:
        self.store = store
        self.catalogues = catalogues
        self.language = language
        self.full_details = full_details

    async def compose(self, item: OutboxItem) -> ComposedAlert | None:
        """None when the tip no longer exists (purged): there is nothing left to say."""
        if item.payload.get("kind") == "notice":
            notice = Notice(item.payload["notice"])  # an unknown notice is a bug: the worker retries and logs it
            return ComposedAlert(None, None, render_notice(self.catalogues, self.language, notice), notice)
        tip = await self.store.tips.get(item.payload["tip_id"])
        if tip is None:
            return None
        event = AlertEvent(item.payload["event"])
        additions: tuple[str, ...] = ()
        wanted = set(item.payload.get("followup_ids", ()))
        if wanted:  # the texts are counted always, and quoted only with full_details
            additions = tuple(f.text for f in await self.store.followups.for_tip(tip.id) if f.id in wanted)
        if event in (AlertEvent.ADDITION, AlertEvent.ANSWER):
            pictures = int(item.payload.get("pictures", 0))
        else:
            pictures = await self.store.pictures.count_for_tip(tip.id)
        text = render_alert(
            self.catalogues, self.language, tip, event, full_details=self.full_details, additions=additions, pictures=pictures
        )
        return ComposedAlert(tip, event, text, pictures=pictures)
