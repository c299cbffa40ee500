"""A model-based test of the whole conversation (DESIGN §2): Hypothesis drives the real
:class:`bot.engine.Engine` on a fresh SQLite store with a hand-moved clock, through
``Engine.handle`` and ``Engine.expire_due``, with two or three tipsters (SMS and Telegram) and an
officer, and checks after every step what must always hold:

* nothing escapes ``handle`` / ``expire_due``, and the engine contains no crash either
  (``Engine.failures`` stays 0, no draft is set aside: this test never writes an unreadable one);
* every message gets at least one reply with text (officer talk that is not a command: none);
* after an exit word alone, the sender has no draft;
* a receipt is shown only for a committed tip (its keyed hash names a stored tip);
* every urgent tip has an alert row in the outbox;
* a sweep after a clock jump leaves no draft past its time;
* no reply to one tipster carries text another tipster typed (a marker each one types);
* a provider's retry (same message id) gets the very replies of the first time, and changes nothing;
* the right receipt is never "not found", a wrong one never finds a report;
* a Telegram ``/start <payload>`` in the middle of a report does not answer the current question;
* a tipster's "/close …" is conversation text, never an officer action (no audit row).

The rules mix valid answers for the step the sender is at (digits of several scripts, labels in both
languages, yes/no words), free text, odd Unicode, empty and 4,000+ character messages, every global
word in both languages with case, accents and punctuation varied, the review's change menu, LANG,
ADD/CHECK with right and wrong receipts (and "ADD <code> text" in one message), officer commands and
an officer's /reply followed by the tipster's answers, provider retries, Telegram /start payloads,
and clock jumps past every timeout (31 min, 2 h, 49 h) with or without a sweep.

A contained crash fails with an ``AssertionError`` subclass named after the exception and where it
happened (``ContainedCrash[KeyError at handlers/filing.py:62 in expire]``), so Hypothesis reports each
distinct crash on its own.

CI runs 300 sequences of 40 steps. A longer soak (5,000 sequences of 80 steps)::

    TIPLINE_SOAK=1 PTB_TIMEDELTA=1 .venv/bin/python -m pytest -q tests/handlers/test_conversation_model.py

(``TIPLINE_SOAK`` is read when this module is imported; the autouse fixture that clears
``TIPLINE_*`` variables runs later and does not affect it.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bot.engine import Engine
from bot.messages import InboundKind, InboundMessage, MediaRef, OutboundMessage, Purpose
from bot.rate_limit import RateLimiter
from handlers.officer_view import REPEATED_FLAG
from handlers.flow import BY_ID, StepKind
from handlers.turn import ConversationConfig
from storage.crypto import Cipher, KeyRing
from storage.sqlite import SqliteStore
from tests.conftest import Clock
from tests.fakes.images import phone_photo
from tests.handlers.model_vocabulary import VocabularyRules
from tests.handlers.model_support import (
    CATALOGUES,
    DETAILS_TEXTS,
    GLOBAL_WORDS,
    WHERE_TEXTS,
    EngineLog,
    contained_crash,
    digits_of,
    free_text,
    global_word,
    is_choice,
    marker,
    other_script,
    preview,
    provider_id,
    receipts_in,
    spelled_from,
    step_answers,
)

SOAK = os.environ.get("TIPLINE_SOAK", "") not in ("", "0")
CIPHER = Cipher(KeyRing.generate())
CONFIG = ConversationConfig()
DRAFT_TIMEOUT = CONFIG.draft_timeout_seconds  # 30 min
ANSWER_WINDOW = getattr(CONFIG, "answer_window_seconds", 48 * 3600)  # up to 48 h today
JUMPS = (7.0, DRAFT_TIMEOUT - 60, DRAFT_TIMEOUT + 60, 2 * 3600.0, ANSWER_WINDOW + 60, 49 * 3600.0)
SECONDS_BETWEEN_MESSAGES = 5.0
TMP_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
OFFICER_CHAT = "officer-1"
OFFICER = "officer-pseudonym"
FOUND_KEYS = {"add.question", "add.sent", "add.closed", "check.status", "check.reply", "check.none"}
PAYLOADS = ("", "1", "2", "3", "yes", "oui", "poster_mtl", "qr-bus-42", "ref_2026_abc")
RECEIPT_VERBS = ("ADD", "add", "Ajout", "AJOUT", "CHECK", "check", "Suivi", "SUIVI")
RECEIPT_TAILS = ("", "the van came back", "il est revenu ce soir", "🙂", "plate XYZ 987", "-- 4th floor")
OUTSIDE_REPORT = ("idle", "sent")  # no draft, or the short "just sent" state some engines keep after a receipt
LONG_RUN = 30  # messages a "file a report" rule may take


@dataclass(frozen=True)
class Tipster:
    index: int
    channel: str
    sender: str
    language_hint: str | None
    reply_address: str


@dataclass(frozen=True)
class Where:
    """Where a sender stands, read from the store: idle, or a live draft's mode and step."""

    mode: str  # "idle", "report", "add", "answer"
    step: str | None = None
    state: Any = None


def describe(msg: InboundMessage) -> str:
    who = f"officer {msg.sender}" if msg.officer else f"{msg.channel} {msg.sender[:12]}"
    kind = "" if msg.kind is InboundKind.TEXT else f" kind={msg.kind.value}"
    return f"{who}{kind} said {preview(msg.text)}"


def keys(replies: list[OutboundMessage]) -> list[str]:
    return [r.key for r in replies]


@dataclass
class Delivered:
    msg: InboundMessage
    replies: list[OutboundMessage]
    at: float
    cached: bool = True


class ConversationMachine(VocabularyRules, RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.mkdtemp(prefix="tipline-model-", dir=TMP_ROOT)
        self.clock = Clock()
        self.store = self.run(SqliteStore.open(Path(self.directory), CIPHER))
        self.engine = Engine(self.store, CIPHER, CATALOGUES, CONFIG, clock=self.clock, rate_limiter=RateLimiter(burst=10**6))
        self.engine.pictures.add_source("model", ModelPictures())
        # The engine's ERROR records (a contained crash) go into the failure message of the example
        # they belong to, not into pytest's log capture of all 300 examples.
        self.engine_log = EngineLog()
        self.engine_logger = logging.getLogger("bot.engine")
        self.engine_logger.addHandler(self.engine_log)
        self.engine_logger_propagates, self.engine_logger.propagate = self.engine_logger.propagate, False
        self.tipsters: list[Tipster] = []
        # For provider retries: each message, its replies, when, and whether its replies are still
        # cached (an erase or a filing of the sender's report drops them; so do the hours passing).
        self.sent: list[Delivered] = []
        self.receipts: dict[str, int] = {}  # receipt shown → index of the tipster it was shown to
        self.tips: list[tuple[str, str, str, bool, str, bool]] = []  # case, id, sender, contact_ok, status, urgent
        self.alerted: set[str] = set()  # tip ids with an alert row
        self.outbox_seq = 0
        self.messages = 0

    def teardown(self) -> None:
        self.engine_logger.removeHandler(self.engine_log)
        self.engine_logger.propagate = self.engine_logger_propagates
        try:
            self.run(self.store.close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- plumbing -----------------------------------------------------------------------------

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _select(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        async with self.store._reader.execute(sql, params) as cursor:  # the store's read-only connection
            return list(await cursor.fetchall())

    def select(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self.run(self._select(sql, params))

    def count(self, table: str) -> int:
        return int(self.select(f"SELECT count(*) FROM {table}")[0][0])

    def check_contained(self, what: str) -> None:
        """A crash the engine rescued is still a crash."""
        failures = getattr(self.engine, "failures", 0)
        if failures or self.engine_log.records:
            logged = self.engine_log.messages()
            raise contained_crash(logged)(f"the engine contained a failure ({failures} counted) after {what}:\n" + "\n".join(logged))

    def tipster(self, who: int) -> Tipster:
        return self.tipsters[who % len(self.tipsters)]

    def telegram_tipster(self, who: int) -> Tipster:
        on_telegram = [t for t in self.tipsters if t.channel == "telegram"]
        return on_telegram[who % len(on_telegram)]

    def where(self, t: Tipster) -> Where:
        draft = self.run(self.store.drafts.get(t.sender))
        if draft is None or draft.expires_at <= self.clock.now:
            return Where("idle")
        state = draft.state
        mode = state.get("mode") or "report"
        return Where(mode, state.get("step") if mode == "report" else None, state)

    def message(
        self, t: Tipster, text: str, kind: InboundKind = InboundKind.TEXT, has_media: bool = False, media: tuple[MediaRef, ...] = ()
    ) -> InboundMessage:
        self.messages += 1
        return InboundMessage(
            t.channel,
            t.sender,
            text,
            kind=kind,
            provider_id=provider_id(t.channel, self.messages),
            language_hint=t.language_hint if t.channel == "telegram" else None,
            reply_address=t.reply_address,
            has_media=has_media,
            media=media,
            message_ref=str(self.messages) if t.channel == "telegram" else None,
        )

    def deliver(self, msg: InboundMessage, tipster: Tipster | None, *, silent: bool = False) -> list[OutboundMessage]:
        """One message through the engine, with the checks that hold for every message."""
        audit_before = self.count("audit") if tipster is not None and msg.text.lstrip().startswith("/") else None
        replies = self.run(self.engine.handle(msg))  # an exception escaping handle fails right here
        self.check_contained(describe(msg))
        if silent:
            assert replies == [], f"officer talk that is not a command was answered: {describe(msg)} → {keys(replies)}"
        else:
            assert replies, f"no reply to {describe(msg)}"
            assert all(r.text.strip() for r in replies), f"an empty reply to {describe(msg)}: {keys(replies)}"
        if tipster is not None:
            shown = "\n".join(r.text for r in replies)
            for other in self.tipsters:
                if other.index != tipster.index:
                    assert marker(other.index) not in shown, (
                        f"tipster {tipster.index} was shown what tipster {other.index} typed, after {describe(msg)}: {keys(replies)}"
                    )
        if audit_before is not None:
            assert self.count("audit") == audit_before, f"a tipster's {describe(msg)} acted as an officer command"
        for reply in replies:
            if reply.purpose is Purpose.RECEIPT and tipster is not None:
                for receipt in receipts_in(reply.text):
                    self.receipts[receipt] = tipster.index
        if any(r.purpose in (Purpose.ERASED, Purpose.RECEIPT) for r in replies):
            for earlier in self.sent:
                if earlier.msg.sender == msg.sender:
                    earlier.cached = False
        if msg.provider_id:
            self.sent.append(Delivered(msg, replies, self.clock.now))
            del self.sent[:-60]
        self.clock.advance(SECONDS_BETWEEN_MESSAGES)
        return replies

    def say(self, t: Tipster, text: str, **kwargs: Any) -> list[OutboundMessage]:
        return self.deliver(self.message(t, text, **kwargs), t)

    def officer_says(self, text: str) -> list[OutboundMessage]:
        self.messages += 1
        msg = InboundMessage("telegram", OFFICER_CHAT, text, provider_id=provider_id("telegram", self.messages), officer=OFFICER)
        is_command = text.strip().startswith("/") and len(text.strip()) > 1
        return self.deliver(msg, None, silent=not is_command)

    def exit_and_check(self, t: Tipster, text: str) -> list[OutboundMessage]:
        replies = self.say(t, text)
        draft = self.run(self.store.drafts.get(t.sender))
        assert draft is None, f"tipster {t.index} still has a draft after {preview(text)} (replies {keys(replies)})"
        if any(r.purpose is Purpose.ERASED for r in replies):
            left = self.select("SELECT count(*) FROM pictures WHERE owner = ?", (t.sender,))[0][0]
            assert left == 0, f"tipster {t.index} erased, {left} pictures left"
        return replies

    # --- answers --------------------------------------------------------------------------------

    def typed(self, t: Tipster, text: str) -> str:
        return f"{marker(t.index)} {text}"

    def any_answer(self, t: Tipster, at: Where, pick: int) -> str:
        """Something valid to send where the sender is: an answer to the step, or a global word."""
        if pick % 9 == 0:
            return spelled_from(("skip", "back", "lang", "help", "done")[(pick // 9) % 5], pick // 45)
        if at.mode in OUTSIDE_REPORT:
            starts = ("hi", "Bonjour", self.typed(t, "There is a girl locked in the motel on Main St"), "1", "help me", "thanks", "ok")
            return starts[pick % len(starts)]
        if at.mode == "add":
            return spelled_from("done", pick) if pick % 3 == 0 else self.typed(t, DETAILS_TEXTS[pick % len(DETAILS_TEXTS)])
        if at.mode == "answer":
            return self.typed(t, ("Third floor", "Au 3e étage", "I can't talk now", "2")[pick % 4])
        step = BY_ID.get(at.step or "")
        if step is None:
            return "1"
        if is_choice(step.id):
            answers = step_answers(step.id)
            return answers[pick % len(answers)]
        if step.kind is StepKind.MULTI_TEXT and pick % 4 == 1:
            return spelled_from("done", pick)
        return self.typed(t, (WHERE_TEXTS if step.kind is StepKind.TEXT else DETAILS_TEXTS)[pick % 4])

    def forward_answer(self, t: Tipster, at: Where, pick: int) -> str:
        """An answer that moves towards the receipt."""
        if at.mode in OUTSIDE_REPORT:
            return ("hi", "Bonjour", self.typed(t, "A grey van comes to the motel every night"))[pick % 3]
        if at.mode == "add":
            return spelled_from("done", pick)
        if at.mode == "answer":
            return spelled_from("exit", pick)
        step_id = at.step or ""
        answers = at.state.get("answers") or {} if isinstance(at.state, dict) else {}
        if step_id == "language":
            return ("1", "2", "English", "Français")[pick % 4]
        if step_id == "review":
            return ("1", "Send", CATALOGUES.text("fr", "review.send"), "１")[pick % 4]
        if step_id == "contact":
            return ("1", "yes", "oui", "2")[pick % 4]
        if step_id == "where":
            return self.typed(t, WHERE_TEXTS[pick % 4]) if pick % 5 else spelled_from("skip", pick)
        if step_id == "details":
            if answers.get("details"):
                return spelled_from("done", pick)
            return self.typed(t, DETAILS_TEXTS[pick % 4]) if pick % 5 else spelled_from("skip", pick)
        step = BY_ID.get(step_id)
        if step is None or not step.options:
            return "1"
        return step.options[pick % len(step.options)].value

    def walk(self, t: Tipster, picks: list[int], *, stop_at: str | None = None) -> bool:
        """Answer forward until a receipt (True), or ``stop_at`` is reached (True), or give up."""
        for n in range(LONG_RUN):
            at = self.where(t)
            if stop_at is not None and at.mode == "report" and at.step == stop_at:
                return True
            text = self.forward_answer(t, at, picks[n % len(picks)] + n)
            if at.mode == "answer":
                self.exit_and_check(t, text)
                continue
            replies = self.say(t, text)
            if stop_at is None and any(r.purpose is Purpose.RECEIPT for r in replies):
                return True
        return False

    # --- rules: tipsters ------------------------------------------------------------------------

    @initialize(
        count=st.integers(2, 3),
        third=st.sampled_from(("sms", "telegram")),
        hints=st.tuples(*[st.sampled_from((None, "en", "fr", "fr-CA", "de"))] * 3),
    )
    def senders(self, count: int, third: str, hints: tuple[str | None, ...]) -> None:
        for index, channel in enumerate(("sms", "telegram", third)[:count]):
            sender = f"{index}{channel[0]}" + f"{index * 7919 + 104729:x}" * 8
            address = f"+1514555{index:04d}" if channel == "sms" else str(9_100_000 + index)
            self.tipsters.append(Tipster(index, channel, sender[:64], hints[index], address))

    @rule(who=st.integers(0, 2), picks=st.lists(st.integers(0, 2**16), min_size=1, max_size=10))
    def answer_steps(self, who: int, picks: list[int]) -> None:
        """Valid answers (any of them: change, cancel, SKIP, BACK, LANG…) for wherever the sender is."""
        t = self.tipster(who)
        for pick in picks:
            self.say(t, self.any_answer(t, self.where(t), pick))

    @rule(who=st.integers(0, 2), picks=st.lists(st.integers(0, 2**16), min_size=1, max_size=6))
    def file_a_report(self, who: int, picks: list[int]) -> None:
        """Answer forward to the receipt."""
        self.walk(self.tipster(who), picks)

    @rule(who=st.integers(0, 2), picks=st.lists(st.integers(0, 2**16), min_size=1, max_size=4), item=st.integers(1, 8),
          how=st.integers(0, 3), then=st.integers(0, 2**16))  # fmt: skip
    def change_from_review(self, who: int, picks: list[int], item: int, how: int, then: int) -> None:
        """At the review: "2" (change), then which answer, then a new answer."""
        t = self.tipster(who)
        if not self.walk(t, picks, stop_at="review"):
            return
        self.say(t, ("2", "2.", "Change something", "２")[how])
        self.say(t, (str(item), f"#{item}", chr(0x0660 + item), f" {item} ")[how])
        self.say(t, self.any_answer(t, self.where(t), then))

    @rule(who=st.integers(0, 2), text=free_text, marked=st.booleans())
    def type_free_text(self, who: int, text: str, marked: bool) -> None:
        t = self.tipster(who)
        self.say(t, self.typed(t, text) if marked else text)

    @rule(who=st.integers(0, 2), word=global_word())
    def type_global_word(self, who: int, word: tuple[str, str]) -> None:
        kind, text = word
        t = self.tipster(who)
        if kind == "exit":
            self.exit_and_check(t, text)
        else:
            self.say(t, text)

    @rule(who=st.integers(0, 2), pick=st.integers(0, 2**16), then=st.integers(0, 2**16))
    def skip_back_answer(self, who: int, pick: int, then: int) -> None:
        """SKIP (refused where a step may not be skipped), BACK to the step, then answer it."""
        t = self.tipster(who)
        self.say(t, spelled_from("skip", pick))
        self.say(t, spelled_from("back", pick // 3))
        self.say(t, self.any_answer(t, self.where(t), then * 9 + 1))

    @rule(who=st.integers(0, 2), pick=st.integers(0, 2**16), language=st.sampled_from(("1", "2", "English", "Français", "٢")))
    def switch_language(self, who: int, pick: int, language: str) -> None:
        t = self.tipster(who)
        self.say(t, spelled_from("lang", pick))
        self.say(t, language)

    @rule(who=st.integers(0, 2), kind=st.sampled_from(("sticker", "video", "picture", "picture with caption", "two pictures")))
    def send_no_text(self, who: int, kind: str) -> None:
        t = self.tipster(who)
        if kind == "sticker":
            self.say(t, "", kind=InboundKind.UNSUPPORTED)
            return
        caption = self.typed(t, "this is the van") if kind == "picture with caption" else ""
        media = () if kind == "video" else (PICTURE_REF,) * (2 if kind == "two pictures" else 1)
        self.say(t, caption, has_media=True, media=media)
        # However it came, no case and no draft ever holds more pictures than a report may.
        most = self.select("SELECT max(n) FROM (SELECT count(*) AS n FROM pictures GROUP BY coalesce(tip_id, owner))")[0][0]
        assert (most or 0) <= CONFIG.pictures_per_report, f"{most} pictures held together"

    @rule(who=st.integers(0, 2), payload=st.sampled_from(PAYLOADS))
    def telegram_start(self, who: int, payload: str) -> None:
        """Telegram /start <payload>: opens a conversation; in the middle of one it answers nothing."""
        t = self.telegram_tipster(who)
        before = self.where(t)
        replies = self.deliver(self.message(t, payload, kind=InboundKind.START), t)
        if before.mode != "report":
            return
        after = self.where(t)
        assert after.mode == "report" and after.step == before.step, (
            f"/start {payload!r} moved a report from {before.step!r} to {after.mode}/{after.step!r} (replies {keys(replies)})"
        )
        assert after.state.get("answers") == before.state.get("answers"), (
            f"/start {payload!r} at {before.step!r} changed the answers (replies {keys(replies)})"
        )

    # --- rules: receipts ------------------------------------------------------------------------

    @precondition(lambda self: self.receipts)
    @rule(who=st.integers(0, 2), pick=st.integers(0, 10**6), verb=st.sampled_from(RECEIPT_VERBS),
          form=st.integers(0, 3), tail=st.sampled_from(RECEIPT_TAILS), leave_first=st.booleans())  # fmt: skip
    def use_right_receipt(self, who: int, pick: int, verb: str, form: int, tail: str, leave_first: bool) -> None:
        """ADD/CHECK with a receipt that was shown (from any channel; "ADD <code> text" in one go),
        outside a draft (EXIT first) or inside whatever the sender is doing."""
        t = self.tipster(who)
        if leave_first:
            self.exit_and_check(t, spelled_from("exit", pick))
        receipt = list(self.receipts)[pick % len(self.receipts)]
        digits = digits_of(receipt)
        code = (receipt, digits, " ".join(receipt.split("-")), ".".join(receipt.split("-")))[form]
        before = self.where(t)
        text = f"{verb} {code}" + (f" {self.typed(t, tail)}" if tail else "")
        replies = self.say(t, text)
        if before.mode in OUTSIDE_REPORT:
            assert "receipt.unknown" not in keys(replies), f"the right receipt was not found: {preview(text)} → {keys(replies)}"
        if self.where(t).mode == "add":
            self.say(t, self.typed(t, "one more line"))
            self.say(t, spelled_from("done", pick))

    @rule(who=st.integers(0, 2), verb=st.sampled_from(RECEIPT_VERBS), wrong=st.integers(0, 10**12 - 1),
          how=st.integers(0, 5), tail=st.sampled_from(RECEIPT_TAILS), leave_first=st.booleans())  # fmt: skip
    def use_wrong_receipt(self, who: int, verb: str, wrong: int, how: int, tail: str, leave_first: bool) -> None:
        t = self.tipster(who)
        if leave_first:
            self.exit_and_check(t, spelled_from("exit", wrong))
        digits = f"{wrong:012d}"
        if how == 1 and self.receipts:  # a shown receipt with one digit changed
            real = digits_of(list(self.receipts)[wrong % len(self.receipts)])
            i = wrong % 12
            digits = real[:i] + str((int(real[i]) + 1 + wrong % 9) % 10) + real[i + 1 :]
        if any(digits_of(r) == digits for r in self.receipts):
            return
        code = {
            0: "-".join(digits[i : i + 3] for i in range(0, 12, 3)),
            1: "-".join(digits[i : i + 3] for i in range(0, 12, 3)),
            2: digits[:11],  # too short
            3: "123-456-789-012",  # the example in the help text
            4: other_script(digits),  # another script's digits: not a shown receipt either
            5: "",  # the word alone
        }[how]
        if how == 3 and any(digits_of(r) == "123456789012" for r in self.receipts):
            return
        before = self.where(t)
        text = f"{verb} {code}".strip() + (f" {self.typed(t, tail)}" if tail else "")
        replies = self.say(t, text)
        if before.mode in OUTSIDE_REPORT and how != 4:
            found = FOUND_KEYS & set(keys(replies))
            assert not found, f"a wrong receipt found a report: {preview(text)} → {keys(replies)}"

    # --- rules: officers ------------------------------------------------------------------------

    def case_for(self, pick: int) -> str:
        if not self.tips or pick % 11 == 0:
            return ("27-9999", "26-0001", "nonsense", "")[pick % 4]
        case = self.tips[pick % len(self.tips)][0]
        return case.lower() if pick % 5 == 0 else case

    @rule(command=st.sampled_from(("list", "stats", "show", "ack", "reply", "close", "nonsense", "talk", "list@tipline_bot")),
          pick=st.integers(0, 10**6), text=st.sampled_from(("Which floor?", "", "Merci, on y va", "x" * 5000)))  # fmt: skip
    def officer_command(self, command: str, pick: int, text: str) -> None:
        if command == "talk":  # ordinary talk in the officers' group: no answer
            self.officer_says(("on it", "", "ok thanks /", text)[pick % 4])
            return
        case = self.case_for(pick)
        if command in ("list", "stats", "list@tipline_bot"):
            self.officer_says(f"/{command}")
        elif command in ("reply", "close"):
            self.officer_says(f"/{command} {case} {text}".rstrip())
        else:
            self.officer_says(f"/{command} {case}".rstrip())

    @precondition(lambda self: any(tip[4] in ("open", "acknowledged", "in_progress") for tip in self.tips))
    @rule(pick=st.integers(0, 10**6), answers=st.lists(free_text, max_size=3), marked=st.booleans())
    def officer_reply_then_answers(self, pick: int, answers: list[str], marked: bool) -> None:
        """An officer's /reply to a filed case, then the tipster's messages inside the answer window."""
        open_tips = [tip for tip in self.tips if tip[4] in ("open", "acknowledged", "in_progress")]
        with_contact = [tip for tip in open_tips if tip[3]] or open_tips
        case, _, sender, _, _, _ = with_contact[pick % len(with_contact)]
        self.officer_says(f"/reply {case} Which floor? Any name?")
        owner = next((t for t in self.tipsters if t.sender == sender), None)
        if owner is None:
            return
        for text in answers:
            self.say(owner, self.typed(owner, text) if marked else text)

    # --- rules: the provider, the clock ---------------------------------------------------------

    def snapshot(self, sender: str) -> tuple[Any, ...]:
        draft = self.run(self.store.drafts.get(sender))
        rows = self.select(
            "SELECT (SELECT count(*) FROM tips), (SELECT count(*) FROM outbox), (SELECT count(*) FROM followups), "
            "(SELECT count(*) FROM processed), (SELECT count(*) FROM audit), (SELECT count(*) FROM receipt_failures), "
            "(SELECT group_concat(status) FROM (SELECT status FROM tips ORDER BY id))"
        )
        return (None if draft is None else (draft.state, draft.updated_at, draft.expires_at), tuple(rows[0]))

    @precondition(lambda self: self.sent)
    @rule(index=st.integers(0, 10**6))
    def provider_retry(self, index: int) -> None:
        """Twilio or Telegram sends an earlier message again (same provider id)."""
        earlier = self.sent[-1 - index % len(self.sent)]
        msg, first = earlier.msg, earlier.replies
        before = self.snapshot(msg.sender)
        again = self.run(self.engine.handle(msg))
        self.check_contained(f"a retry of {describe(msg)}")
        # The same answer while it is cached; once dropped, nothing (never handled a second time).
        expected = first if earlier.cached else []
        assert again == expected, f"a retry of {describe(msg)} got {keys(again)}, expected {keys(expected)}"
        assert self.snapshot(msg.sender) == before, f"a retry of {describe(msg)} changed something"
        self.clock.advance(SECONDS_BETWEEN_MESSAGES)

    def sweep(self) -> None:
        self.run(self.engine.expire_due())  # an exception escaping the sweeper fails right here
        for earlier in self.sent:  # the sweeper drops replies cached past the retry window
            if earlier.at < self.clock.now - self.engine.config.cached_reply_seconds:
                earlier.cached = False
        self.check_contained("a sweep")
        left = self.run(self.store.drafts.expired(self.clock.now))
        assert not left, f"{len(left)} drafts past their time remain after a sweep"

    @rule(seconds=st.sampled_from(JUMPS), then_sweep=st.booleans())
    def clock_jump(self, seconds: float, then_sweep: bool) -> None:
        """Time passes (past the draft timeout, the answer window…), then the sweeper runs, or not:
        the next message meets the expired draft instead."""
        self.clock.advance(seconds)
        if then_sweep:
            self.sweep()

    @rule()
    def sweeper_pass(self) -> None:
        self.sweep()

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def store_is_consistent(self) -> None:
        self.check_contained("the last step")
        aside = getattr(self.store.drafts, "set_aside_count", None)
        if aside is not None:
            count = self.run(aside())
            if count:
                raise contained_crash(self.engine_log.messages())(f"{count} drafts were set aside (this test writes none unreadable)")
        self.tips = [
            (r[0], r[1], r[2], bool(r[3]), r[4], bool(r[5]))
            for r in self.select("SELECT case_number, id, sender, contact_ok, status, urgent FROM tips ORDER BY case_number")
        ]
        for receipt, shown_to in self.receipts.items():
            tip = self.run(self.store.tips.by_receipt_hash(CIPHER.lookup_hash("receipt", digits_of(receipt))))
            assert tip is not None, f"receipt shown to tipster {shown_to} names no stored tip"
        for item_id, seq in self.select("SELECT id, seq FROM outbox WHERE seq > ? ORDER BY seq", (self.outbox_seq,)):
            item = self.run(self.store.outbox.get(item_id))
            if item is not None and item.payload.get("kind") == "alert":
                self.alerted.add(item.payload.get("tip_id"))
            self.outbox_seq = seq
        for case, tip_id, _, _, status, urgent in self.tips:
            if not urgent or tip_id in self.alerted:
                continue
            # Past the hourly cap a sender's urgent case is filed flagged as repeated and reaches
            # officers with the report (Send or expiry), not at once; any other urgent case is
            # alerted the moment it is marked.
            tip = self.run(self.store.tips.get(tip_id))
            assert tip is not None and tip.answers.get(REPEATED_FLAG) and status == "in_progress", (
                f"urgent tip {case} ({status}) has no alert in the outbox"
            )


COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
settings.register_profile("tipline-model-ci", settings(max_examples=300, stateful_step_count=40, **COMMON))
settings.register_profile("tipline-model-soak", settings(max_examples=5000, stateful_step_count=80, **COMMON))

TestConversationModel = ConversationMachine.TestCase
TestConversationModel.settings = settings.get_profile("tipline-model-soak" if SOAK else "tipline-model-ci")


PICTURE_REF = MediaRef("model", "a-phone-photo", "image/jpeg")


class ModelPictures:
    """The model's channel for pictures: every reference is the same phone photo."""

    photo = phone_photo()

    async def fetch(self, ref: MediaRef, max_bytes: int) -> bytes:
        return self.photo
