"""Typed conversation state: every mode round-trips, and drafts stored by the first release (the
untyped v1 dicts) are read and upgraded, including the shapes that used to crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.engine import Engine
from bot.messages import InboundMessage
from handlers.flow import REPORT_STEPS
from handlers.state import STATE_VERSION, Addition, Answers, AnswerWindow, Report, StateError, dump_state, load_state
from storage.records import Draft, TipStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock

# Documents exactly as the first release wrote them (handlers/intake.py, followup.py, officer.py at a7b9350).
V1_REPORT_MIDWAY = {
    "v": 1, "step": "where", "language": "fr",
    "answers": {"danger": "yes", "role": "witness", "kind": "labour", "minors": "unknown"},
    "history": ["danger", "role", "kind", "minors"], "channel": "sms", "started_at": 1_800_000_000.5,
    "tip_id": "5f0c6c3e0b7a4c3f9f1e2d3c4b5a6978",
}  # fmt: skip
V1_SKIPPED_DETAILS = {
    "v": 1, "step": "review", "language": "en",
    "answers": {"danger": "no", "role": "unsaid", "kind": "other", "minors": "no", "where": None, "when": None,
                "details": None, "contact": "no"},
    "history": ["danger", "role", "kind", "minors", "where", "when", "details", "contact"], "channel": "telegram",
    "started_at": 1_800_000_000.0, "returning": True,
}  # fmt: skip
V1_LANG_INTERRUPTED = {
    "v": 1, "step": "language", "language": "en", "answers": {"details": ["A grey van, every night"]},
    "history": [], "channel": "console", "started_at": 1_800_000_000.0, "resume_step": "kind",
}  # fmt: skip
V1_ADD = {"v": 1, "mode": "add", "tip_id": "a" * 32, "lines": ["the plate is QX-4417"], "language": "fr", "channel": "whatsapp"}
V1_ANSWER = {"v": 1, "mode": "answer", "tip_id": "b" * 32, "language": "en", "channel": "sms"}


def test_a_v1_report_is_upgraded_with_every_answer_kept() -> None:
    state = load_state(V1_REPORT_MIDWAY)
    assert isinstance(state, Report) and state.v == STATE_VERSION
    assert (state.step, state.language, state.channel, state.tip_id) == ("where", "fr", "sms", V1_REPORT_MIDWAY["tip_id"])
    assert state.answers.danger == "yes" and state.answers.minors == "unknown" and state.answers.details == []
    assert state.history == ["danger", "role", "kind", "minors"]


def test_a_v1_skipped_details_step_becomes_an_empty_list_not_none() -> None:
    state = load_state(V1_SKIPPED_DETAILS)
    assert isinstance(state, Report) and state.answers.details == [] and state.returning
    # Skipped steps stay visible as answered (officers see they were asked).
    assert state.answered()["where"] is None and state.answered()["details"] == []


def test_a_v1_report_interrupted_by_lang_keeps_where_to_resume() -> None:
    state = load_state(V1_LANG_INTERRUPTED)
    assert isinstance(state, Report) and state.resume_step == "kind"
    assert state.answers.details == ["A grey van, every night"]


def test_v1_add_and_answer_drafts_are_upgraded() -> None:
    add = load_state(V1_ADD)
    assert isinstance(add, Addition) and add.lines == ["the plate is QX-4417"] and add.language == "fr"
    window = load_state(V1_ANSWER)
    assert isinstance(window, AnswerWindow) and window.tip_id == "b" * 32


@pytest.mark.parametrize(
    "state",
    [
        Report(step="details", language="fr", channel="sms", answers=Answers(where="Motel Lune", details=["a", "b"]), history=["where"]),
        Addition(tip_id="c" * 32, lines=["x"], language="en", channel="telegram"),
        AnswerWindow(tip_id="d" * 32, language="fr", channel="sms"),
    ],
)
def test_every_mode_round_trips_through_its_stored_document(state) -> None:
    document = dump_state(state)
    assert document["v"] == STATE_VERSION and document["mode"] == state.mode
    assert load_state(document) == state


@pytest.mark.parametrize(
    "document",
    [
        [],  # not an object
        {"v": 99, "mode": "report"},  # a version this release does not know
        {"v": 2, "mode": "telepathy"},
        {"v": 2, "mode": "report", "step": "nowhere"},
        {"v": 2, "mode": "report", "step": "safety"},  # a notice is never a resting step
        {"v": 2, "mode": "add"},  # no case
        {"v": 2, "mode": "report", "answers": {"details": "SECRET-TEXT"}},
    ],
)
def test_an_unreadable_document_raises_state_error_naming_no_value(document) -> None:
    with pytest.raises(StateError) as raised:
        load_state(document)
    assert "SECRET-TEXT" not in str(raised.value)


def test_answers_cover_every_report_step_of_the_flow() -> None:
    assert [s.id for s in REPORT_STEPS] == [f for f in Answers.model_fields]


@given(st.dictionaries(st.sampled_from(["v", "mode", "step", "answers", "history", "tip_id", "lines", "language"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3),
                                 st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.text(max_size=3)), max_size=3))))  # fmt: skip
def test_any_document_loads_or_raises_state_error(document: dict) -> None:
    try:
        load_state(document)
    except StateError:
        pass


async def test_the_engine_continues_a_stored_v1_draft(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    """A draft written before the upgrade goes on where it was: the next answer is the place."""
    async with store.transaction() as tx:
        await tx.tips.save(_urgent_tip(V1_REPORT_MIDWAY["tip_id"], clock.now))
        await tx.drafts.save(Draft("sender-v1", V1_REPORT_MIDWAY, clock.now, clock.now + 600))
    replies = await engine.handle(InboundMessage("sms", "sender-v1", "Motel Lune, Laval"))
    assert [r.key for r in replies] == ["when.question"] and replies[0].language == "fr"
    state = load_state((await store.drafts.get("sender-v1")).state)
    assert isinstance(state, Report) and state.answers.where == "Motel Lune, Laval" and state.v == STATE_VERSION


async def test_the_engine_continues_a_v1_draft_with_skipped_details(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    """The shape that used to crash (details None, then back to details, then text)."""
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("sender-v1", V1_SKIPPED_DETAILS, clock.now, clock.now + 600))
    assert [r.key for r in await engine.handle(InboundMessage("telegram", "sender-v1", "2"))] == ["change.question"]
    assert [r.key for r in await engine.handle(InboundMessage("telegram", "sender-v1", "7"))] == ["details.question"]
    assert [r.key for r in await engine.handle(InboundMessage("telegram", "sender-v1", "plate QX-4417"))] == ["details.more"]
    assert engine.failures == 0


def _urgent_tip(tip_id: str, now: float):
    from storage.records import Tip

    return Tip(tip_id, "26-0001", TipStatus.IN_PROGRESS, "sender-v1", "sms", "fr", now, now, answers={"danger": "yes"}, urgent=True)
