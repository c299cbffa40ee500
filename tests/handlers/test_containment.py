"""A failure stays with its message (review F1, F2, F14): the sweeper goes on past a draft it cannot
expire, a message whose handling fails gets a calm answer and is kept, EXIT works whatever the
stored draft holds, and input that used to crash the engine is read."""

from __future__ import annotations

import dataclasses
import logging
import re
from contextlib import asynccontextmanager

import pytest

from bot.engine import Engine
from bot.messages import InboundKind, InboundMessage, Purpose
from handlers.state import Addition, Report, dump_state, load_state
from storage.records import Draft, TipStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock
from tests.handlers.transcript import Talk

RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
WITNESS_TO_CONTACT = ["hi", "2", "2", "2", "2", "Motel Lune", "3", "A grey van", "DONE"]


def keys(replies) -> list[str]:
    return [r.key for r in replies]


async def file_tip(talk: Talk, contact: str = "1") -> str:
    for text in WITNESS_TO_CONTACT:
        await talk.say(text)
    await talk.say(contact)
    [receipt] = await talk.say("1")
    assert receipt.purpose is Purpose.RECEIPT
    return RECEIPT.search(receipt.text).group(0)


async def officer(engine: Engine, text: str):
    return await engine.handle(InboundMessage("telegram", "officer-chat", text, officer="officer-1"))


async def test_an_expired_answer_window_does_not_stop_the_sweeper_or_lock_the_tipster_out(
    engine: Engine, store: SqliteStore, clock: Clock
) -> None:
    """F1: after an officer's reply the tipster reads it, answers, the window expires, and
    everything goes on."""
    tipster = Talk(engine, sender="tipster", channel="sms", reply_address="+15145550100", language_hint="en")
    receipt = await file_tip(tipster)
    [tip] = await store.tips.list()
    assert keys(await officer(engine, f"/reply {tip.case_number} Which floor?")) == ["officer.reply.sent"]
    assert keys(await tipster.say(f"CHECK {receipt}")) == ["check.status", "check.reply", "check.answer_here"]
    assert keys(await tipster.say("Third floor")) == ["tipster.answer_sent"]

    other = Talk(engine, sender="someone-else", channel="sms", language_hint="en")
    for text in ["hi", "2", "2", "2", "2", "Hotel Étoile, Laval"]:
        await other.say(text)  # then walks away
    clock.advance(engine.config.draft_timeout_seconds + 60)
    assert await engine.expire_due() == 2  # the answer window and the abandoned report

    tips = {t.case_number: t for t in await store.tips.list()}
    [incomplete] = [t for t in tips.values() if not t.complete]
    assert incomplete.answers["where"] == "Hotel Étoile, Laval" and incomplete.status is TipStatus.OPEN
    assert keys(await tipster.say("hello"))[:1] == ["safety.notice"]  # a new conversation, no 500
    assert keys(await tipster.say("EXIT")) == ["erased"]
    assert await store.drafts.get("tipster") is None
    assert engine.failures == 0


async def test_one_draft_that_cannot_be_expired_is_set_aside_and_the_pass_goes_on(
    engine: Engine, store: SqliteStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    past = clock.now - 1
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("a-future-version-draft", {"v": 99, "mode": "report"}, past, past))
        await tx.drafts.save(Draft("tampered-draft", {"v": 2}, past, past))
        await tx.drafts.save(Draft("abandoned-report", dump_state(_report_with_place()), past, past + 0.5))
    await store._writer.execute("UPDATE drafts SET state = ? WHERE sender = ?", (b"\x01garbage", "tampered-draft"))
    with caplog.at_level(logging.INFO):
        assert await engine.expire_due() == 1
    [tip] = await store.tips.list()
    assert tip.answers["where"] == "Secret Lane 99" and not tip.complete
    assert await store.drafts.count() == 0 and await store.drafts.set_aside_count() == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("a-future" in e and "StateError" in e for e in errors)
    assert any("tampered" in e and "DecryptionError" in e for e in errors)
    assert not any("a-future-version-draft" in e or "Secret Lane" in e for e in errors)  # prefix only, no content
    clock.advance(60)
    assert await engine.expire_due() == 0  # nothing left to trip on


async def test_a_message_to_an_unreadable_draft_starts_afresh_and_keeps_the_message(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("sender", {"v": 99}, clock.now, clock.now + 600))
    text = "my boss took my passport, we work at a farm near Leamington"
    replies = await engine.handle(InboundMessage("sms", "sender", text))
    assert replies and keys(replies)[0] == "safety.notice"
    state = load_state((await store.drafts.get("sender")).state)
    assert isinstance(state, Report) and state.answers.details == [text]
    assert await store.drafts.set_aside_count() == 1  # the old draft is kept apart, not lost
    assert engine.failures == 0


@pytest.mark.parametrize("exit_word", ["EXIT", "quitter", "Arrêt!"])
async def test_exit_works_even_when_the_draft_cannot_be_read(engine: Engine, store: SqliteStore, clock: Clock, exit_word: str) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("sender", {"v": 2, "mode": "report", "step": "where"}, clock.now, clock.now + 600))
        await tx.drafts.save(Draft("other", {"v": 2}, clock.now, clock.now + 600))
        await tx.drafts.set_aside("other", clock.now)  # something set aside earlier for someone else
    await store._writer.execute("UPDATE drafts SET state = ? WHERE sender = ?", (b"\x01tampered", "sender"))
    assert keys(await engine.handle(InboundMessage("sms", "sender", exit_word))) == ["erased"]
    assert await store.drafts.get("sender") is None and await store.drafts.set_aside_count() == 1


class _FlakyDrafts:
    """The real draft repository, except that saving fails while ``store.failures_left`` > 0."""

    def __init__(self, inner, store: _FlakyStore) -> None:
        self._inner, self._store = inner, store

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def save(self, draft: Draft) -> None:
        if self._store.failures_left > 0:
            self._store.failures_left -= 1
            raise RuntimeError("disk hiccup")
        await self._inner.save(draft)


class _FlakyStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store, self.failures_left = store, 0

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self, *, lock: tuple[str, ...] = ()):
        async with self._store.transaction(lock=lock) as tx:
            yield dataclasses.replace(tx, drafts=_FlakyDrafts(tx.drafts, self))


async def test_a_failure_while_handling_a_message_gets_a_calm_answer_and_keeps_the_text(
    engine: Engine, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = _FlakyStore(store)
    engine.store = flaky
    talk = Talk(engine, sender="sender", channel="sms", language_hint="en")
    for text in WITNESS_TO_CONTACT[:7]:
        await talk.say(text)
    flaky.failures_left = 1
    secret = "a red door at 99 Secret Lane ፩"
    with caplog.at_level(logging.DEBUG):
        replies = await talk.say(secret)
    assert keys(replies) == ["error.kept"] and engine.failures == 1
    state = load_state((await store.drafts.get("sender")).state)
    assert isinstance(state, Report) and state.answers.details[-1] == secret.replace("፩", "፩")
    assert all(secret not in r.getMessage() and "Secret Lane" not in r.getMessage() for r in caplog.records)
    assert "RuntimeError" in caplog.text
    assert keys(await talk.say("DONE")) == ["contact.question"]  # and the conversation goes on


async def test_a_retry_of_a_rescued_message_gets_the_same_answer_and_keeps_it_once(engine: Engine, store: SqliteStore) -> None:
    flaky = _FlakyStore(store)
    engine.store = flaky
    for text in WITNESS_TO_CONTACT[:7]:
        await engine.handle(InboundMessage("sms", "sender", text, language_hint="en"))
    flaky.failures_left = 1
    msg = InboundMessage("sms", "sender", "plate QX-4417", provider_id="SM" + "0" * 32)
    first = await engine.handle(msg)
    again = await engine.handle(msg)
    assert keys(first) == keys(again) == ["error.kept"]
    assert load_state((await store.drafts.get("sender")).state).answers.details.count("plate QX-4417") == 1


async def test_skipping_details_then_going_back_to_them_takes_text(engine: Engine, store: SqliteStore) -> None:
    """F2, path 1: SKIP at details, then BACK (or review → change → details), then text."""
    talk = Talk(engine, language_hint="en")
    for text in ["hi", "2", "2", "2", "2", "0", "0"]:
        await talk.say(text)
    assert keys(await talk.say("0")) == ["contact.question"]  # details skipped
    assert keys(await talk.say("BACK")) == ["details.question"]
    assert keys(await talk.say("Plate QX-4417")) == ["details.more"]
    assert keys(await talk.say("DONE")) == ["contact.question"]
    assert keys(await talk.say("2")) == ["review.question"]
    assert keys(await talk.say("2")) == ["change.question"]
    assert keys(await talk.say("7")) == ["details.question"]
    assert keys(await talk.say("and a second plate")) == ["details.more"]
    state = load_state((await store.drafts.get(talk.sender)).state)
    assert state.answers.details == ["Plate QX-4417", "and a second plate"]
    assert engine.failures == 0


@pytest.mark.parametrize("digit", ["፩", "𐩀", "᧚", "\u2460"])
async def test_digits_that_int_rejects_are_read_calmly_at_every_choice_step(
    engine: Engine, digit: str, caplog: pytest.LogCaptureFixture
) -> None:
    """F2, path 2: characters that pass str.isdigit() but have no decimal value."""
    talk = Talk(engine, channel="sms")
    with caplog.at_level(logging.DEBUG):
        for text in [digit, "1", digit, "2", digit, "2", digit, "2", digit]:
            replies = await talk.say(text)
            assert replies and all(r.text for r in replies)
    assert engine.failures == 0
    assert digit not in caplog.text


async def test_other_scripts_decimal_digits_answer_like_ascii(engine: Engine) -> None:
    talk = Talk(engine, channel="sms")
    assert keys(await talk.say("٢")) == ["language.question"]
    assert [(r.key, r.language) for r in await talk.say("٢")] == [("safety.notice", "fr"), ("danger.question", "fr")]
    assert keys(await talk.say("२")) == ["role.question"]  # Devanagari two at the danger question: "No"


async def test_a_deep_link_payload_never_answers_the_current_question(engine: Engine, store: SqliteStore) -> None:
    """F14: ``/start 1`` at the danger question must not raise an urgent alert."""
    talk = Talk(engine, channel="telegram", language_hint="en")
    assert keys(await talk.say("hi")) == ["safety.notice", "danger.question"]
    msg = InboundMessage("telegram", talk.sender, "1", kind=InboundKind.START, language_hint="en")
    assert keys(await engine.handle(msg)) == ["danger.question"]
    assert await store.tips.list() == []
    assert load_state((await store.drafts.get(talk.sender)).state).answers.danger is None


async def test_a_deep_link_payload_is_the_first_message_of_a_new_conversation(engine: Engine, store: SqliteStore) -> None:
    payload = "grey van parked behind the motel every night"
    replies = await engine.handle(InboundMessage("telegram", "new", payload, kind=InboundKind.START, language_hint="en"))
    assert keys(replies) == ["safety.notice", "danger.question"]
    assert load_state((await store.drafts.get("new")).state).answers.details == [payload]


async def test_an_add_left_unfinished_is_filed_as_an_addition_when_it_expires(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    talk = Talk(engine, sender="tipster", language_hint="en")
    receipt = await file_tip(talk, contact="2")
    assert keys(await talk.say(f"ADD {receipt}")) == ["add.question"]
    assert keys(await talk.say("the plate is QX-4417")) == ["add.more"]
    assert isinstance(load_state((await store.drafts.get("tipster")).state), Addition)
    clock.advance(engine.config.draft_timeout_seconds + 1)
    assert await engine.expire_due() == 1
    [tip] = await store.tips.list()
    assert [f.text for f in await store.followups.for_tip(tip.id)] == ["the plate is QX-4417"]
    rows = await store.outbox.due(clock.now + 10**6, limit=100)
    assert [r.payload["event"] for r in rows if r.payload.get("tip_id") == tip.id].count("addition") == 1


async def test_a_message_longer_than_the_limit_is_kept_whole(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine, language_hint="en")
    for text in ["hi", "2", "2", "2", "2", "0", "0"]:
        await talk.say(text)
    long = "".join(f"word{i} " for i in range(1500)) + "THE-END-PLATE-ABC123"
    assert len(long) > engine.config.max_text_chars
    assert keys(await talk.say(long)) == ["details.more"]
    details = load_state((await store.drafts.get(talk.sender)).state).answers.details
    assert "".join(details) == long and all(len(d) <= engine.config.max_text_chars for d in details)


def _report_with_place() -> Report:
    report = Report(step="when", language="en", channel="sms", history=["danger", "role", "kind", "minors", "where"])
    report.answers.where = "Secret Lane 99"
    return report
