"""The conversation engine: one inbound message in, replies out, one transaction in between.

* Messages from one sender are handled one at a time (a lock per pseudonym, dropped when idle so
  memory stays flat); different senders run concurrently.
* A provider message id seen before returns the replies given the first time, with no side effect
  (a retried webhook never files twice, and still gets its answer).
* The draft, the tip, its outbox rows and the processed id commit together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bot.i18n import Catalogues
from bot.keyed_locks import KeyedLocks
from bot.messages import Choice, InboundKind, InboundMessage, OutboundMessage, Purpose
from bot.rate_limit import RateLimiter, Verdict
from handlers import filing, followup, intake, officer
from handlers.turn import ConversationConfig, Turn
from handlers.words import Word, clean, global_word, receipt_command
from storage.crypto import Cipher
from storage.interfaces import Store
from storage.records import Draft, TipStatus

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        catalogues: Catalogues,
        config: ConversationConfig,
        *,
        clock: Callable[[], float] = time.time,
        on_alerts: Callable[[], None] = lambda: None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.catalogues = catalogues
        self.config = config
        self._cipher = cipher
        self._clock = clock
        self._on_alerts = on_alerts
        self._locks = KeyedLocks()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()

    async def _exempt_from_flood_limit(self, msg: InboundMessage) -> bool:
        """EXIT always works (a person in danger must be able to erase), and a provider's retry of
        a message already handled gets its first answer again (a read, no write)."""
        word = global_word(clean(msg.text)) if msg.text else None
        if word and word[0] is Word.EXIT:
            return True
        return bool(msg.provider_id) and await self.store.processed.replies_for(f"{msg.channel}:{msg.provider_id}") is not None

    def _slow_down(self, msg: InboundMessage) -> OutboundMessage:
        language = intake.hinted_language(msg.language_hint) or "en"
        return OutboundMessage(self.catalogues.text(language, "rate.slow_down"), (), Purpose.INFO, "rate.slow_down", language)

    def _receipt_hash(self, digits: str) -> str:
        return self._cipher.lookup_hash("receipt", digits)

    async def handle(self, msg: InboundMessage) -> list[OutboundMessage]:
        verdict = Verdict.ALLOW if msg.officer else self.rate_limiter.check(msg.sender, self._clock())
        if verdict is not Verdict.ALLOW and not await self._exempt_from_flood_limit(msg):
            if verdict is Verdict.WARN:
                log.warning("rate limit: %s sender %s is flooding; further messages dropped", msg.channel, msg.sender[:8])
                return [self._slow_down(msg)]
            if verdict is Verdict.DROP:
                return []
        async with self._locks.hold(msg.sender):
            key = f"{msg.channel}:{msg.provider_id}" if msg.provider_id else None
            async with self.store.transaction() as tx:
                if key is not None:
                    earlier = await tx.processed.replies_for(key)
                    if earlier is not None:
                        log.info("duplicate %s message ignored (sender %s)", msg.channel, msg.sender[:8])
                        return [_outbound(r) for r in earlier]
                turn = Turn(msg, self._clock(), tx, self.catalogues, self.config, self._receipt_hash)
                await self._dispatch(turn)
                if key is not None:
                    await tx.processed.add(key, [_serialise(r) for r in turn.replies], turn.now)
            if turn.alerts_queued:
                self._on_alerts()
            return turn.replies

    async def open_conversation(self, msg: InboundMessage) -> list[OutboundMessage]:
        """A channel that starts the talking (the console): resume a draft or show the first prompt."""
        async with self._locks.hold(msg.sender):
            async with self.store.transaction() as tx:
                turn = Turn(msg, self._clock(), tx, self.catalogues, self.config, self._receipt_hash)
                draft = await self._live_draft(turn)
                if draft is not None:
                    intake.resume(turn, draft.state)
                    state = draft.state
                else:
                    state = await intake.start(turn, None)
                await self._save(turn, state)
            if turn.alerts_queued:
                self._on_alerts()
            return turn.replies

    async def _dispatch(self, turn: Turn) -> None:
        msg = turn.msg
        if msg.officer is not None:
            await officer.handle(turn)
            return
        draft = await self._live_draft(turn)
        if draft is not None and draft.state.get("mode") == "answer" and not await self._case_open(turn, draft):
            await turn.tx.drafts.delete(msg.sender)
            draft = None
        text = clean(msg.text)
        word = global_word(text) if msg.kind is not InboundKind.UNSUPPORTED else None
        if draft is None:
            state = await self._outside_draft(turn, text, word)
        elif draft.state.get("mode") == "add":
            state = await followup.continue_add(turn, draft.state, word[0] if word else None)
        elif draft.state.get("mode") == "answer":
            state = await officer.tipster_answer(turn, draft.state)
        else:
            state = await intake.answer(turn, draft, word)
        await self._save(turn, state)
        log.info("%s message from %s handled (%d replies)", msg.channel, msg.sender[:8], len(turn.replies))

    async def _outside_draft(self, turn: Turn, text: str, word: tuple[Word, str | None] | None) -> dict | None:
        msg = turn.msg
        language = intake.hinted_language(msg.language_hint) or (word[1] if word else None) or "en"
        if msg.kind is InboundKind.UNSUPPORTED:
            turn.say(language, "unsupported")
            return None
        command = receipt_command(text)
        if command is not None:
            return await followup.command(turn, command[0], command[1], command[2])
        if word and word[0] is Word.HELP:
            turn.say(language, "help.idle")
            return None
        if word and word[0] is Word.EXIT:
            turn.say(language, "erased", purpose=Purpose.ERASED)
            return None
        return await intake.start(turn, word)

    @staticmethod
    async def _case_open(turn: Turn, draft: Draft) -> bool:
        tip = await turn.tx.tips.get(draft.state["tip_id"])
        return tip is not None and tip.status not in (TipStatus.CLOSED, TipStatus.WITHDRAWN)

    async def _live_draft(self, turn: Turn) -> Draft | None:
        """The sender's draft, unless it has expired, in which case it is expired now."""
        draft = await turn.tx.drafts.get(turn.msg.sender)
        if draft is not None and draft.expires_at <= turn.now:
            turn.alerts_queued += await filing.expire(turn.tx, draft.sender, draft.state, self.config.alert_sinks, turn.now)
            return None
        return draft

    async def _save(self, turn: Turn, state: dict | None) -> None:
        if state is None:
            await turn.tx.drafts.delete(turn.msg.sender)
            return
        expires = turn.now + self.config.draft_timeout_seconds
        await turn.tx.drafts.save(Draft(turn.msg.sender, state, turn.now, expires))

    async def expire_due(self, limit: int = 100) -> int:
        """Expire drafts left alone past their timeout (run by a background sweeper)."""
        now = self._clock()
        senders = await self.store.drafts.expired(now, limit)
        expired = alerts = 0
        for sender in senders:
            async with self._locks.hold(sender):
                async with self.store.transaction() as tx:
                    draft = await tx.drafts.get(sender)
                    if draft is None or draft.expires_at > now:
                        continue  # answered meanwhile
                    alerts += await filing.expire(tx, sender, draft.state, self.config.alert_sinks, now)
                    expired += 1
        if alerts:
            self._on_alerts()
        if expired:
            log.info("expired %d drafts", expired)
        return expired


def _serialise(reply: OutboundMessage) -> dict[str, Any]:
    data = asdict(reply)
    data["purpose"] = reply.purpose.value
    return data


def _outbound(data: dict[str, Any]) -> OutboundMessage:
    return OutboundMessage(
        text=data["text"],
        choices=tuple(Choice(c["value"], c["label"]) for c in data.get("choices", ())),
        purpose=Purpose(data.get("purpose", "prompt")),
        key=data.get("key", ""),
        language=data.get("language", "en"),
    )
