"""The conversation engine: one inbound message in, replies out, one transaction in between.

* Messages from one sender are handled one at a time (a lock per pseudonym, dropped when idle so
  memory stays flat; and the transaction names the sender, so instances sharing a PostgreSQL
  database take turns too); different senders run concurrently.
* A provider message id seen before returns the replies given the first time, with no side effect
  (a retried webhook never files twice, and still gets its answer).
* The draft, the tip, its outbox rows and the processed id commit together.
* When the storage refuses the write (a full disk, a read-only file system, a lock held elsewhere,
  an I/O error), nothing is half-done: the person is asked, calmly and in their language when it
  can be known, to send the message again in a few minutes; ``storage`` counts it and logs it
  once a minute, and the same message id retried later is handled as new (nothing was kept of it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from bot.i18n import Catalogues
from bot.keyed_locks import KeyedLocks
from bot.logs import exception_outline
from bot.messages import Choice, InboundKind, InboundMessage, OutboundMessage, Purpose
from bot.pictures import PictureReceiver, Received
from bot.rate_limit import RateLimiter, Verdict
from bot.settings import PictureSettings
from bot.refusal import FALLBACK_READ_SECONDS, Refusal
from bot.storage_watch import StorageWatch
from handlers import filing, followup, intake, officer, replies
from handlers.state import Addition, AnswerWindow, ConversationState, Report, Sent, StateError, dump_state, load_state
from handlers.turn import ConversationConfig, Turn
from handlers.understanding import Control, Reading, Vocabulary
from handlers.words import clean
from storage.crypto import Cipher, DecryptionError
from storage.interfaces import Repositories, Store
from storage.records import Draft, Followup, OutboxItem, TipStatus

log = logging.getLogger(__name__)

# What reading a stored draft can raise when it is not a state this release understands.
UNREADABLE = (DecryptionError, StateError, ValueError)


class Engine:
    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        catalogues: Catalogues,
        config: ConversationConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_alerts: Callable[[], None] = lambda: None,
        rate_limiter: RateLimiter | None = None,
        pictures: PictureReceiver | None = None,
    ) -> None:
        self.store = store
        self.catalogues = catalogues
        self.config = config
        self._cipher = cipher
        self._clock = clock
        # The flood limit measures intervals: a wall clock stepped back an hour must not silence
        # every person mid-report (their buckets would look an hour from refilling).
        self._monotonic = monotonic
        self._on_alerts = on_alerts
        self._locks = KeyedLocks()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.failures = 0  # messages whose handling raised and was contained (see handle)
        self.handled = 0  # messages handled (the runtime logs how many, now and then)
        self.storage = StorageWatch(monotonic)  # failed writes, logged once a minute; read by /healthz
        self.vocabulary = Vocabulary.from_catalogues(catalogues)
        self._refusal = Refusal(store, catalogues, self.vocabulary)  # the answer when nothing can be stored
        # Channels add their sources at start; without one, a picture is "could not be received".
        self.pictures = pictures if pictures is not None else PictureReceiver(PictureSettings())

    async def _exempt_from_flood_limit(self, msg: InboundMessage) -> bool:
        """EXIT always works while there is something to erase (a person in danger must be able to
        erase; with nothing stored it is just one more message), and a provider's retry of a message
        already handled gets its first answer again (a read, no write)."""
        if msg.text and self.vocabulary.read(clean(msg.text)).control is Control.EXIT:
            try:
                senders = (msg.sender, msg.earlier_sender) if msg.earlier_sender else (msg.sender,)
                return any([await self.store.drafts.get(s) is not None for s in senders])
            except UNREADABLE:
                return True  # something is stored, even if it cannot be read: it must go
        return bool(msg.provider_id) and await self.store.processed.replies_for(f"{msg.channel}:{msg.provider_id}") is not None

    def _slow_down(self, msg: InboundMessage) -> OutboundMessage:
        language = replies.hinted_language(msg.language_hint) or "en"
        return OutboundMessage(self.catalogues.text(language, "rate.slow_down"), (), Purpose.INFO, "rate.slow_down", language)

    def _receipt_hash(self, digits: str) -> str:
        return self._cipher.lookup_hash("receipt", digits)

    async def handle(self, msg: InboundMessage, *, outbox_rows: tuple[OutboxItem, ...] = ()) -> list[OutboundMessage]:
        """Replies to one message; never raises. A failure while handling it is contained: the
        transaction rolls back, what the person typed is kept, and they get a calm answer.

        ``outbox_rows``: what the channel queues because this message arrived (the deletion of the
        provider's copy), committed in the message's own transaction; not again for a retry of a
        message already handled, which queued them the first time."""
        if msg.earlier_sender:
            self.rate_limiter.rekey(msg.earlier_sender, msg.sender)  # a flood limit survives the boundary
        verdict = Verdict.ALLOW if msg.officer else self.rate_limiter.check(msg.sender, self._monotonic())
        if verdict is not Verdict.ALLOW and not await self._exempt_or_unknown(msg):
            await self._queue_alone(outbox_rows)
            if verdict is Verdict.WARN:
                log.warning("rate limit: %s sender %s is flooding; further messages dropped", msg.channel, msg.sender[:8])
                return [self._slow_down(msg)]
            if verdict is Verdict.DROP:
                return []
        async with self._locks.hold(msg.sender):
            try:
                replies, wrote = await self._handle(msg, outbox_rows)
            except Exception as exc:  # noqa: BLE001 - contained here, for this message only
                self.failures += 1
                if self.storage.report(exc, message=True) is not None:
                    # Nothing can be written: a second try (the rescue) would fail the same way,
                    # after waiting as long again for a lock. Logged once a minute by the watch.
                    return await self._answered_before(msg) or [await self._refusal.answer(msg)]
                log.error("%s message from %s failed (%s); keeping it\n%s", msg.channel, msg.sender[:8], type(exc).__name__, exception_outline(exc))
                return await self._rescue(msg, outbox_rows)
            if wrote:  # a retry answered from the cache wrote nothing: it proves nothing about writes
                self.storage.succeeded()
            return replies

    async def _exempt_or_unknown(self, msg: InboundMessage) -> bool:
        """``_exempt_from_flood_limit``, or True when the storage cannot say (the message then
        meets the failure inside ``handle``, which answers it, instead of escaping as a 500)."""
        try:
            return await self._exempt_from_flood_limit(msg)
        except Exception as exc:  # noqa: BLE001 - see above
            if self.storage.report(exc) is None:
                log.error("flood-limit check of %s failed (%s)", msg.sender[:8], type(exc).__name__)
            return True

    async def _answered_before(self, msg: InboundMessage) -> list[OutboundMessage] | None:
        """A provider's retry of a message stored before the failure: its answer, read from the
        cache (telling the person to send again what is safe would only file it twice)."""
        key = _processed_key(msg)
        if key is None:
            return None
        try:
            async with asyncio.timeout(FALLBACK_READ_SECONDS):
                earlier = await self.store.processed.replies_for(key)
        except Exception:  # noqa: BLE001 - reads fail too: the calm answer it is
            return None
        return [_outbound(r) for r in earlier] if earlier else None

    async def _queue_alone(self, rows: tuple[OutboxItem, ...]) -> None:
        """A message that is not handled (a flood) still has its rows queued."""
        if not rows:
            return
        try:
            async with self.store.transaction() as tx:
                for row in rows:
                    await tx.outbox.add(row)
        except Exception as exc:  # noqa: BLE001 - the answer matters more; logged
            if self.storage.report(exc) is None:
                log.error("outbox rows of a dropped message could not be queued (%s)", type(exc).__name__)
            return
        self._on_alerts()

    async def _handle(self, msg: InboundMessage, outbox_rows: tuple[OutboxItem, ...] = ()) -> tuple[list[OutboundMessage], bool]:
        """The replies, and whether rows were written (False for a retry answered from the cache)."""
        key = _processed_key(msg)
        pictures = await self._receive_pictures(msg, key)
        async with self.store.transaction(lock=_names(msg)) as tx:
            if key is not None:
                earlier = await tx.processed.replies_for(key)
                if earlier is not None:
                    log.info("duplicate %s message ignored (sender %s)", msg.channel, msg.sender[:8])
                    return [_outbound(r) for r in earlier], False
            await self._rekey(msg, tx)
            turn = self._turn(msg, tx, pictures)
            await self._dispatch(turn)
            if any(r.purpose is Purpose.ERASED for r in turn.replies):
                # Every way of erasing (EXIT, Cancel, STOP; a draft that could not be read) takes the
                # draft's pictures along, found by sender even when the draft names none.
                await tx.pictures.delete_owned(msg.sender)
            await self._remember(turn, key)
            await _queue(tx, turn, outbox_rows)
        await self._after(turn)
        return turn.replies, True

    async def _remember(self, turn: Turn, key: str | None) -> None:
        """Cache this turn's replies for a provider's retry. A draft erased or filed takes the
        replies cached for it along (the review summary, the start of the details): only this
        turn's answer (the receipt, or "erased") stays, for the short retry window."""
        if _ends_conversation(turn):
            await turn.tx.processed.forget_replies(turn.msg.sender)
        if key is not None:
            await turn.tx.processed.add(key, [_serialise(r) for r in turn.replies], turn.now, sender=turn.msg.sender)

    async def _after(self, turn: Turn) -> None:
        """Once the turn is committed: wake the outbox; after an erase, cut the write-ahead log so
        no earlier version of the erased draft survives in it."""
        if turn.alerts_queued:
            self._on_alerts()
        if any(r.purpose is Purpose.ERASED for r in turn.replies):
            try:
                await self.store.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the erase is committed: the person is told so
                # A full disk can refuse the checkpoint's writes; the periodic one cuts the WAL later.
                if self.storage.report(exc) is None:
                    log.warning("WAL checkpoint after an erase failed (%s); the periodic one will cut it", type(exc).__name__)

    async def _rekey(self, msg: InboundMessage, tx: Repositories) -> None:
        """First contact in a new epoch: what the tipster had under the previous epoch's pseudonym
        goes by the current one, in this message's transaction (so at most two epochs are live)."""
        if msg.earlier_sender and msg.officer is None:
            moved = await tx.senders.rekey(msg.earlier_sender, msg.sender, self._clock())
            if moved:
                log.info("sender %s: %d rows moved to this epoch's pseudonym", msg.sender[:8], moved)

    def _turn(self, msg: InboundMessage, tx: Repositories, pictures: tuple[Received, ...] = ()) -> Turn:
        return Turn(msg, self._clock(), tx, self.catalogues, self.config, self._receipt_hash, self.vocabulary, pictures)

    async def _receive_pictures(self, msg: InboundMessage, key: str | None) -> tuple[Received, ...]:
        """Fetch and strip the message's pictures before its transaction (network and CPU work
        never hold the database), unless it is a retry already answered."""
        if not msg.media or msg.officer is not None:
            return ()
        if key is not None and await self.store.processed.replies_for(key) is not None:
            return ()
        return await self.pictures.receive(msg.media)

    async def open_conversation(self, msg: InboundMessage) -> list[OutboundMessage]:
        """A channel that starts the talking (the console): resume a draft or show the first prompt."""
        async with self._locks.hold(msg.sender):
            async with self.store.transaction(lock=_names(msg)) as tx:
                await self._rekey(msg, tx)
                turn = self._turn(msg, tx)
                state = await self._current_state(turn)
                if isinstance(state, Report):
                    intake.resume(turn, state)
                elif isinstance(state, Addition):
                    turn.say(state.language, "add.question", purpose=Purpose.PROMPT)
                elif isinstance(state, (AnswerWindow, Sent)):
                    turn.say(state.language, "help.idle")
                else:
                    state = await intake.start(turn, Reading(""))
                await self._save(turn, state)
            if turn.alerts_queued:
                self._on_alerts()
            return turn.replies

    async def _dispatch(self, turn: Turn) -> None:
        msg = turn.msg
        if msg.officer is not None:
            await officer.handle(turn)
            return
        text = clean(msg.text) if msg.kind is not InboundKind.UNSUPPORTED else ""
        plain = self.vocabulary.read(text)
        if plain.is_(Control.EXIT) and not await self._readable(turn):
            # EXIT always works: a draft that cannot be read is deleted without interpreting it.
            language = replies.hinted_language(msg.language_hint) or plain.language or "en"
            await turn.tx.drafts.erase(msg.sender)
            turn.say(language, "erased", purpose=Purpose.ERASED)
            return
        current = await self._current_state(turn)
        if isinstance(current, (AnswerWindow, Sent)) and not await self._case_open(turn, current.tip_id):
            current = None
        reading = self.vocabulary.read(text, current.language if current is not None else None)
        command = self.vocabulary.command(text) if text else None
        state: ConversationState | None
        if command is not None and (current is None or followup.starts_with_code(command[2])):
            # ADD / CHECK with a code work at any step; a report in progress is kept.
            state = await followup.command(turn, command[0], command[1], command[2], current)
        elif current is None:
            state = await self._outside_draft(turn, reading)
        elif isinstance(current, Addition):
            state = await followup.continue_add(turn, current, reading)
        elif isinstance(current, AnswerWindow):
            state = await followup.answer(turn, current, reading)
        elif isinstance(current, Sent):
            state = await followup.after_receipt(turn, current, reading)
        else:
            state = await intake.answer(turn, current, reading)
        await self._save(turn, state)
        self.handled += 1  # counted in the periodic INFO summary (bot.runtime); each one at DEBUG
        log.debug("%s message from %s handled (%d replies)", msg.channel, msg.sender[:8], len(turn.replies))

    async def _outside_draft(self, turn: Turn, reading: Reading) -> ConversationState | None:
        msg = turn.msg
        language = replies.hinted_language(msg.language_hint) or reading.language or "en"
        if msg.kind is InboundKind.UNSUPPORTED:
            turn.say(language, "unsupported")
            return None
        if reading.is_(Control.HELP):
            turn.say(language, "help.idle")
            return None
        if reading.is_(Control.EXIT):
            turn.say(language, "erased", purpose=Purpose.ERASED)
            return None
        return await intake.start(turn, reading)

    @staticmethod
    async def _case_open(turn: Turn, tip_id: str) -> bool:
        tip = await turn.tx.tips.get(tip_id)
        return tip is not None and tip.status not in (TipStatus.CLOSED, TipStatus.WITHDRAWN)

    @staticmethod
    async def _readable(turn: Turn) -> bool:
        """Whether the sender's draft (if any) can be read as a state."""
        try:
            draft = await turn.tx.drafts.get(turn.msg.sender)
            if draft is not None:
                load_state(draft.state)
        except UNREADABLE:
            return False
        return True

    async def _current_state(self, turn: Turn) -> ConversationState | None:
        """The sender's conversation, or None. A draft past its timeout is expired now; one that
        cannot be read is set aside (kept, never interpreted) and the person starts afresh."""
        sender = turn.msg.sender
        try:
            draft = await turn.tx.drafts.get(sender)
            state = load_state(draft.state) if draft is not None else None
        except UNREADABLE as exc:
            log.error("draft of %s cannot be read (%s); set aside", sender[:8], type(exc).__name__)
            await turn.tx.drafts.set_aside(sender, turn.now)
            return None
        if draft is None or state is None:
            return None
        if draft.expires_at <= turn.now:
            turn.alerts_queued += await filing.expire(turn.tx, sender, state, self.config.alert_sinks, turn.now)
            return None
        return state

    async def _save(self, turn: Turn, state: ConversationState | None) -> None:
        if state is None:
            await turn.tx.drafts.delete(turn.msg.sender)
            return
        if isinstance(state, AnswerWindow):
            timeout = self.config.answer_window_seconds
        elif isinstance(state, Sent):
            timeout = self.config.after_receipt_seconds
        else:
            timeout = self.config.draft_timeout_seconds
        await turn.tx.drafts.save(Draft(turn.msg.sender, dump_state(state), turn.now, turn.now + timeout))

    async def _rescue(self, msg: InboundMessage, outbox_rows: tuple[OutboxItem, ...] = ()) -> list[OutboundMessage]:
        """After a failure: keep what the person typed with their conversation (or as the start of a
        new one when the old one is what failed), and answer calmly. Never raises."""
        language = replies.hinted_language(msg.language_hint) or "en"
        try:
            key = _processed_key(msg)
            async with self.store.transaction(lock=_names(msg)) as tx:
                await self._rekey(msg, tx)
                turn = self._turn(msg, tx)
                text = clean(msg.text)
                reading = self.vocabulary.read(text)
                if reading.is_(Control.EXIT):
                    await tx.drafts.erase(msg.sender)
                    turn.say(reading.language or language, "erased", purpose=Purpose.ERASED)
                else:
                    state = await self._keep(turn, text)
                    turn.say(state.speaking if state else language, "error.kept")
                await self._remember(turn, key)
                await _queue(tx, turn, outbox_rows)
            await self._after(turn)
            return turn.replies
        except Exception as exc:  # noqa: BLE001 - the last word must still be an answer
            if self.storage.report(exc, message=True) is None:
                log.error("%s message from %s could not be kept either (%s)", msg.channel, msg.sender[:8], type(exc).__name__)
            return [await self._refusal.answer(msg)]

    async def _keep(self, turn: Turn, text: str) -> ConversationState | None:
        sender, now = turn.msg.sender, turn.now
        kept = replies.pieces(text, self.config.max_text_chars) if text else []
        try:
            draft = await turn.tx.drafts.get(sender)
            state = load_state(draft.state) if draft is not None and draft.expires_at > now else None
        except UNREADABLE:
            draft, state = None, None
            await turn.tx.drafts.set_aside(sender, now)  # kept apart, never interpreted
        if draft is not None and state is None:
            await turn.tx.drafts.set_aside(sender, now)  # past its time and its expiry failed: kept apart
        if isinstance(state, Addition):
            state.lines = [*state.lines, *kept]
        elif isinstance(state, AnswerWindow):
            for line in kept:
                await turn.tx.followups.add(Followup(uuid.uuid4().hex, state.tip_id, "tipster", line, now))
        else:
            if not isinstance(state, Report):
                state = Report(channel=turn.msg.channel, started_at=now, language=replies.hinted_language(turn.msg.language_hint))
            state.answers.add_details(kept)
        await self._save(turn, state)
        return state

    async def expire_due(self, limit: int = 100) -> int:
        """Expire drafts left alone past their timeout (run by a background sweeper). Each draft is
        handled on its own: one that cannot be expired is logged, set aside, and the pass goes on."""
        now = self._clock()
        try:
            async with self.store.transaction() as tx:  # a provider retries within minutes; hours is plenty
                await tx.processed.purge_replies_before(now - self.config.cached_reply_seconds)
        except Exception as exc:
            if self.storage.report(exc) is None:
                raise
            return 0  # nothing can be written: the next pass tries again (the watch logs it)
        # No "recovered" from here: a purge with nothing to purge commits without writing a byte.
        senders = await self.store.drafts.expired(now, limit)
        expired = alerts = 0
        for sender in senders:
            try:
                async with self._locks.hold(sender):
                    # Every instance's sweeper may pick the same draft: the lock and the check
                    # below make the second one find it answered or gone.
                    async with self.store.transaction(lock=(sender,)) as tx:
                        draft = await tx.drafts.get(sender)
                        if draft is None or draft.expires_at > now:
                            continue  # answered meanwhile
                        alerts += await filing.expire(tx, sender, load_state(draft.state), self.config.alert_sinks, now)
                        expired += 1
            except Exception as exc:  # noqa: BLE001 - one draft must not stop the sweeper for everyone
                if self.storage.report(exc) is not None:
                    break  # the storage, not the draft: it stays as it is for the next pass
                log.error("draft of %s could not be expired (%s); set aside\n%s", sender[:8], type(exc).__name__, exception_outline(exc))
                await self._set_aside(sender, now)
        if alerts:
            self._on_alerts()
        if expired:
            log.info("expired %d drafts", expired)
        return expired

    async def _set_aside(self, sender: str, now: float) -> None:
        try:
            async with self._locks.hold(sender):
                async with self.store.transaction(lock=(sender,)) as tx:
                    await tx.drafts.set_aside(sender, now)
        except Exception as exc:  # noqa: BLE001
            log.error("draft of %s could not be set aside (%s)", sender[:8], type(exc).__name__)


def _ends_conversation(turn: Turn) -> bool:
    return any(r.purpose in (Purpose.ERASED, Purpose.RECEIPT) for r in turn.replies)


async def _queue(tx: Repositories, turn: Turn, rows: tuple[OutboxItem, ...]) -> None:
    for row in rows:
        await tx.outbox.add(row)
    if rows:
        turn.alerts_queued += len(rows)  # the worker is woken once the transaction commits


def _names(msg: InboundMessage) -> tuple[str, ...]:
    """The pseudonyms a message's transaction writes under (both, across an epoch boundary)."""
    return (msg.sender, msg.earlier_sender) if msg.earlier_sender else (msg.sender,)


def _processed_key(msg: InboundMessage) -> str | None:
    return f"{msg.channel}:{msg.provider_id}" if msg.provider_id else None


def _serialise(reply: OutboundMessage) -> dict[str, Any]:
    # Field by field (dataclasses.asdict deep-copies recursively and costs more than the rest).
    return {
        "text": reply.text,
        "choices": [{"value": c.value, "label": c.label} for c in reply.choices],
        "purpose": reply.purpose.value,
        "key": reply.key,
        "language": reply.language,
        "pictures": list(reply.pictures),
    }


def _outbound(data: dict[str, Any]) -> OutboundMessage:
    return OutboundMessage(
        text=data["text"],
        choices=tuple(Choice(c["value"], c["label"]) for c in data.get("choices", ())),
        purpose=Purpose(data.get("purpose", "prompt")),
        key=data.get("key", ""),
        language=data.get("language", "en"),
        pictures=tuple(data.get("pictures", ())),
    )
