"""A flood from one sender gets one calm "slow down", then silence, and does not grow the database."""

from __future__ import annotations

from pathlib import Path

from bot.engine import Engine
from bot.messages import InboundMessage
from bot.rate_limit import RateLimiter, Verdict
from storage.sqlite import SqliteStore
from tests.conftest import Clock


def test_bucket_allows_a_burst_then_warns_once_then_drops_then_refills() -> None:
    limiter = RateLimiter(burst=3, rate=1.0)
    assert [limiter.check("a", 0.0) for _ in range(6)] == [Verdict.ALLOW] * 3 + [Verdict.WARN, Verdict.DROP, Verdict.DROP]
    assert limiter.check("b", 0.0) is Verdict.ALLOW  # other senders are not affected
    assert limiter.check("a", 1.0) is Verdict.ALLOW  # a refilled token lets one through
    assert limiter.check("a", 1.0) is Verdict.DROP  # still the same flood: no second warning
    assert [limiter.check("a", 4.0) for _ in range(4)] == [Verdict.ALLOW] * 3 + [Verdict.WARN]  # calm, then a new flood


def test_idle_senders_are_forgotten_so_memory_stays_flat() -> None:
    limiter = RateLimiter(burst=2, rate=1.0, max_senders=1000)
    for i in range(5000):
        limiter.check(f"s{i}", float(i))  # one message per second each: all idle soon after
    assert len(limiter) <= 3
    crowded = RateLimiter(burst=2, rate=0.001, max_senders=100)
    for i in range(500):
        crowded.check(f"s{i}", 0.0)
    assert len(crowded) == 100


async def test_a_flood_does_not_grow_the_database(engine: Engine, store: SqliteStore, clock: Clock, tmp_path: Path) -> None:
    engine.rate_limiter = RateLimiter(burst=5, rate=0.1)
    replies = [await engine.handle(InboundMessage("sms", "flooder", f"spam {i}", provider_id=f"SM{i}")) for i in range(5)]
    await store.checkpoint()
    size = sum(p.stat().st_size for p in (tmp_path / "data").iterdir())
    processed_before = len(replies)
    flood = [await engine.handle(InboundMessage("sms", "flooder", "x" * 1500, provider_id=f"SMF{i}")) for i in range(500)]
    assert [r.key for r in flood[0]] == ["rate.slow_down"]
    assert all(r == [] for r in flood[1:])
    await store.checkpoint()
    assert sum(p.stat().st_size for p in (tmp_path / "data").iterdir()) == size
    assert await store.processed.replies_for("sms:SMF3") is None and processed_before == 5
    clock.advance(60)
    # After a pause the conversation simply goes on where it was (the language question).
    assert [r.key for r in await engine.handle(InboundMessage("sms", "flooder", "1"))] == ["safety.notice", "danger.question"]


async def test_officers_are_not_rate_limited(engine: Engine) -> None:
    engine.rate_limiter = RateLimiter(burst=1, rate=0.001)
    for _ in range(5):
        replies = await engine.handle(InboundMessage("telegram", "group", "/list", officer="officer-1"))
        assert [r.key for r in replies] == ["officer.list.empty"]


async def test_exit_and_provider_retries_pass_the_flood_limit(engine: Engine, store: SqliteStore) -> None:
    engine.rate_limiter = RateLimiter(burst=2, rate=0.001)
    first = await engine.handle(InboundMessage("sms", "flooder", "hello there", provider_id="SM1"))
    await engine.handle(InboundMessage("sms", "flooder", "1", provider_id="SM2"))
    assert [r.key for r in await engine.handle(InboundMessage("sms", "flooder", "2", provider_id="SM3"))] == ["rate.slow_down"]
    # Twilio retrying a message already handled gets the same answer, not a slow-down.
    assert await engine.handle(InboundMessage("sms", "flooder", "hello there", provider_id="SM1")) == first
    # A person in danger can always erase, however fast they typed.
    assert [r.key for r in await engine.handle(InboundMessage("sms", "flooder", "STOP", provider_id="SM4"))] == ["erased"]
    assert await store.drafts.get("flooder") is None


async def test_exit_with_nothing_to_erase_is_not_a_free_pass_around_the_flood_limit(engine: Engine, store: SqliteStore) -> None:
    """Review F12: 80 × EXIT used to get 80 answers and 80 database rows."""
    engine.rate_limiter = RateLimiter(burst=5, rate=0.001)
    answered = [await engine.handle(InboundMessage("sms", "flooder", "EXIT", provider_id=f"SMX{i}")) for i in range(80)]
    assert sum(bool(r) for r in answered) == 6  # the burst, then one "slow down", then silence
    assert await store.drafts.get("flooder") is None


async def test_a_wall_clock_stepped_back_an_hour_silences_nobody(store: SqliteStore, cipher, catalogues) -> None:
    """Issue 16, fault 7: the flood limit measured intervals on the wall clock, so an NTP step back
    of an hour made every bucket look an hour from refilling: every person mid-report went silent."""
    from handlers.turn import ConversationConfig

    wall, steady = Clock(), Clock()
    engine = Engine(store, cipher, catalogues, ConversationConfig(), clock=wall, monotonic=steady, rate_limiter=RateLimiter(burst=3, rate=0.5))
    conversation = ["Hello", "2", "2", "2", "2", "Motel Lune", "3"]
    for step, text in enumerate(conversation):
        if step == 3:
            wall.advance(-3600)  # the host's clock is corrected, an hour back
        wall.advance(3)
        steady.advance(3)  # a person types every few seconds: well inside the flood limit
        replies = await engine.handle(InboundMessage("sms", "person", text, provider_id=f"SM{step}"))
        assert replies and all(r.key != "rate.slow_down" for r in replies), (step, [r.key for r in replies])
