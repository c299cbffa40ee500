"""The guided conversation of DESIGN §2, as transcripts in English and French."""

from __future__ import annotations

import re

import pytest

from bot.engine import Engine
from bot.messages import Purpose
from handlers.state import Sent, load_state
from storage.records import OutboxStatus, TipStatus
from storage.sqlite import SqliteStore
from tests.conftest import Clock
from tests.handlers.transcript import OPEN, Talk, run_transcript

RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")

ENGLISH_FULL = [
    (OPEN, ["language.question"]),
    ("1", ["safety.notice", "danger.question"]),
    ("2", ["role.question"]),
    ("2", ["kind.question"]),
    ("2", ["minors.question"]),
    ("2", ["where.question"]),
    ("Motel Lune, 12 rue Fictive", ["when.question"]),
    ("3", ["details.question"]),
    ("A grey van parks there at night", ["details.more"]),
    ("Plate QX-4417", ["details.more"]),
    ("DONE", ["contact.question"]),
    ("2", ["review.question"]),
    ("1", ["submitted.receipt"]),
]

FRENCH_FULL = [
    (OPEN, ["language.question"]),
    ("2", ["safety.notice", "danger.question"]),
    ("non", ["role.question"]),  # typed words work like numbers
    ("Témoin", ["kind.question"]),
    ("1", ["minors.question"]),
    ("oui", ["where.question"]),
    ("Hôtel Étoile, boulevard Imaginaire", ["when.question"]),
    ("2", ["details.question"]),
    ("Deux jeunes femmes ne sortent jamais", ["details.more"]),
    ("fini", ["contact.question"]),
    ("1", ["review.question"]),
    ("1", ["submitted.receipt"]),
]


async def test_english_conversation_files_a_tip_with_a_receipt(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine, reply_address="+15145550100")
    replies = await run_transcript(talk, ENGLISH_FULL)
    receipt_text = replies[-1][0].text
    assert replies[-1][0].purpose is Purpose.RECEIPT
    assert RECEIPT.search(receipt_text), receipt_text
    assert "ADD" in receipt_text and "CHECK" in receipt_text
    [tip] = await store.tips.list()
    assert tip.status is TipStatus.OPEN and tip.complete and not tip.urgent and not tip.minor
    assert tip.answers == {
        "danger": "no",
        "role": "witness",
        "kind": "labour",
        "minors": "no",
        "where": "Motel Lune, 12 rue Fictive",
        "when": "week",
        "details": ["A grey van parks there at night", "Plate QX-4417"],
        "contact": "no",
    }
    assert tip.contact_address is None  # no consent, no address
    assert tip.receipt_hash and RECEIPT.search(receipt_text).group() not in tip.receipt_hash
    # What stays is the short after-receipt state: the case id, none of the report.
    after = load_state((await store.drafts.get(talk.sender)).state)
    assert isinstance(after, Sent) and after.tip_id == tip.id
    assert (await store.outbox.counts())[OutboxStatus.PENDING] == 1


async def test_french_conversation_uses_french_and_keeps_contact_with_consent(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine, reply_address="+15145550199")
    replies = await run_transcript(talk, FRENCH_FULL)
    assert all(r.language == "fr" for turn in replies[1:] for r in turn)
    assert "Quelqu'un est-il en danger" in replies[1][1].text
    assert "Votre code" in replies[-1][0].text
    [tip] = await store.tips.list()
    assert tip.language == "fr" and tip.minor and tip.contact_ok
    assert tip.contact_address == "+15145550199"
    assert tip.answers["kind"] == "sexual" and tip.answers["minors"] == "yes" and tip.answers["when"] == "today"


async def test_receipt_adds_and_checks_from_another_channel(engine: Engine, store: SqliteStore) -> None:
    replies = await run_transcript(Talk(engine), ENGLISH_FULL)
    code = RECEIPT.search(replies[-1][0].text).group()
    other = Talk(engine, sender="another-channel-sender", channel="sms")
    await run_transcript(other, [(f"ADD {code}", ["add.question"]), ("The van is back", ["add.more"]), ("done", ["add.sent"])])
    await run_transcript(other, [(f"ajout {code.replace('-', ' ')} encore un détail", ["add.sent"])])
    [tip] = await store.tips.list()
    assert [f.text for f in await store.followups.for_tip(tip.id)] == ["The van is back", "encore un détail"]
    await run_transcript(other, [(f"CHECK {code}", ["check.status", "check.none"])])
    await run_transcript(other, [(f"SUIVI {code}", ["check.status", "check.none"])])
    assert (await other.say(f"SUIVI {code}"))[0].language == "fr"


async def test_wrong_receipts_lock_out_after_five_tries(engine: Engine) -> None:
    talk = Talk(engine)
    await run_transcript(talk, [("CHECK", ["receipt.missing"])])
    for attempt in range(5):
        await run_transcript(talk, [(f"CHECK 000-000-000-00{attempt}", ["receipt.unknown"])])
    await run_transcript(talk, [("CHECK 000-000-000-009", ["receipt.locked"])])


async def test_urgent_answer_alerts_at_once_asks_where_next_and_writes_through(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            (OPEN, ["language.question"]),
            ("1", ["safety.notice", "danger.question"]),
            ("1", ["danger.urgent", "where.question"]),  # officers need the place first
        ],
    )
    [tip] = await store.tips.list()
    assert tip.urgent and tip.status is TipStatus.IN_PROGRESS
    assert [i.payload["event"] for i in await store.outbox.due(1e12)] == ["urgent"]
    await run_transcript(talk, [("Motel 6 room 12, Kanata", ["role.question"])])
    # The case holds the place within one message of it being typed, and officers are told.
    [tip] = await store.tips.list()
    assert tip.answers["where"] == "Motel 6 room 12, Kanata"
    assert [i.payload["event"] for i in await store.outbox.due(1e12)] == ["urgent", "update"]
    await run_transcript(
        talk,
        [
            ("1", ["role.support", "kind.question"]),
            ("3", ["minors.question"]),
            ("0", ["skip.refused", "minors.question"]),
            ("1", ["when.question"]),  # the place was asked already
            ("SKIP", ["details.question"]),
            ("DONE", ["contact.question"]),
            ("2", ["review.question"]),
            ("1", ["submitted.receipt"]),
        ],
    )
    [tip] = await store.tips.list()
    assert tip.status is TipStatus.OPEN and tip.urgent and tip.minor and tip.answers["where"] == "Motel 6 room 12, Kanata"
    events = [i.payload["event"] for i in await store.outbox.due(1e12)]
    assert events[0] == "urgent" and events[-1] == "new" and set(events[1:-1]) == {"update"}
    assert all(i.priority == 2 for i in await store.outbox.due(1e12))


async def test_taking_danger_back_clears_the_flag_and_tells_officers(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine, language_hint="en")
    await run_transcript(
        talk,
        [
            ("hi", ["safety.notice", "danger.question"]),
            ("1", ["danger.urgent", "where.question"]),
            ("BACK", ["danger.question"]),
            ("2", ["role.question"]),  # a mis-tap, corrected
        ],
    )
    [tip] = await store.tips.list()
    assert not tip.urgent and tip.answers["danger"] == "no"
    assert sorted(i.payload["event"] for i in await store.outbox.due(1e12)) == ["cleared", "urgent"]
    await run_transcript(talk, [("BACK", ["danger.question"]), ("1", ["danger.urgent", "where.question"])])
    [tip] = await store.tips.list()
    assert tip.urgent and sorted(i.payload["event"] for i in await store.outbox.due(1e12)) == ["cleared", "urgent", "urgent"]


async def test_a_sender_raising_and_withdrawing_urgent_reports_is_slowed(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine, language_hint="en")
    for _ in range(engine.config.urgent_alerts_per_hour + 2):
        await run_transcript(talk, [("hi", ["safety.notice", "danger.question"]), ("1", ["danger.urgent", "where.question"])])
        await talk.say("EXIT")
    events = [i.payload["event"] for i in await store.outbox.due(1e12, limit=100)]
    assert events.count("urgent") == engine.config.urgent_alerts_per_hour
    tips = await store.tips.list(statuses=None, limit=100)
    assert len(tips) == engine.config.urgent_alerts_per_hour + 2  # every one is still filed
    assert sum(bool(t.answers.get("repeated")) for t in tips) == 2


async def test_support_line_is_configurable(engine: Engine) -> None:
    from dataclasses import replace

    engine.config = replace(engine.config, support_line="Hotline 1-800-000-0000")
    talk = Talk(engine, language_hint="en")
    replies = await run_transcript(
        talk, [("hi", ["safety.notice", "danger.question"]), ("2", ["role.question"]), ("1", ["role.support", "kind.question"])]
    )
    assert "Hotline 1-800-000-0000" in replies[-1][0].text


async def test_first_message_with_substance_is_kept_and_sets_the_language(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    first = "Il y a des filles enfermées dans le salon de massage sur la rue Imaginaire"
    # "enfermées" is a danger phrase: urgent at once, and the place is asked first.
    await run_transcript(talk, [(first, ["danger.urgent", "safety.notice", "where.question"])])
    draft = await store.drafts.get(talk.sender)
    assert draft.state["language"] == "fr" and draft.state["answers"]["details"] == [first]
    replies = await run_transcript(
        talk,
        [("rue Imaginaire", ["role.question"]), ("2", ["kind.question"]), ("1", ["minors.question"]), ("3", ["when.question"]),
         ("0", ["details.question"])],
    )  # fmt: skip
    assert engine.catalogues.text("fr", "details.kept") in replies[-1][0].text


async def test_language_hint_skips_the_language_question(engine: Engine) -> None:
    talk = Talk(engine, language_hint="fr-CA")
    replies = await run_transcript(talk, [("allo", ["safety.notice", "danger.question"])])
    assert replies[0][0].language == "fr"


async def test_unclear_first_message_gets_the_bilingual_prompt_and_reprompt(engine: Engine) -> None:
    talk = Talk(engine)
    await run_transcript(
        talk,
        [("👋", ["language.question"]), ("7", ["reprompt.choice", "language.question"]), ("English", ["safety.notice", "danger.question"])],
    )


@pytest.mark.parametrize("word", ["EXIT", "quit", "Quitter", "STOP", "arrêt", "ARRET"])
async def test_exit_words_erase_the_draft(engine: Engine, store: SqliteStore, word: str) -> None:
    talk = Talk(engine)
    replies = await run_transcript(
        talk, [(OPEN, ["language.question"]), ("1", ["safety.notice", "danger.question"]), ("2", ["role.question"]), (word, ["erased"])]
    )
    assert replies[-1][0].purpose is Purpose.ERASED
    assert await store.drafts.get(talk.sender) is None
    assert await store.tips.list() == []


async def test_exit_after_an_urgent_alert_withdraws_the_case_and_tells_officers(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine, language_hint="en")
    await run_transcript(
        talk, [("hello", ["safety.notice", "danger.question"]), ("1", ["danger.urgent", "where.question"]), ("exit", ["erased"])]
    )
    [tip] = await store.tips.list(None)
    assert tip.status is TipStatus.WITHDRAWN and tip.answers == {"danger": "yes"}
    assert [i.payload["event"] for i in await store.outbox.due(1e12)] == ["urgent", "withdrawn"]


async def test_help_lang_back_and_reprompts_in_both_languages(engine: Engine) -> None:
    talk = Talk(engine)
    replies = await run_transcript(
        talk,
        [
            (OPEN, ["language.question"]),
            ("1", ["safety.notice", "danger.question"]),
            ("BACK", ["back.first", "danger.question"]),
            ("maybe?", ["role.question"]),  # the person's own words for "don't know"
            ("help", ["help.flow", "role.question"]),
            ("LANGUE", ["language.question"]),
            ("2", ["language.changed", "role.question"]),
            ("aide", ["help.flow", "role.question"]),
            ("retour", ["danger.question"]),
            ("2", ["role.question"]),
            ("3", ["kind.question"]),
            ("3", ["minors.question"]),
            ("3", ["where.question"]),
            ("", ["reprompt.text", "where.question"]),
        ],
    )
    assert replies[-1][0].language == "fr" and replies[-1][0].text.startswith(engine.catalogues.text("fr", "reprompt.text"))
    assert replies[4][0].text.startswith("Reply with a number")


async def test_review_change_returns_to_review_and_cancel_erases(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    await run_transcript(talk, ENGLISH_FULL[:-1])
    replies = await run_transcript(
        talk,
        [
            ("2", ["change.question"]),
            ("BACK", ["review.question"]),
            ("2", ["change.question"]),
            ("5", ["where.question"]),
            ("Another place entirely", ["review.question"]),
            ("2", ["change.question"]),
            ("7", ["details.question"]),
            ("One more detail", ["details.more"]),
            ("DONE", ["review.question"]),
        ],
    )
    assert "Where: Another place entirely" in replies[4][0].text
    assert "3 msg" in replies[-1][0].text
    await run_transcript(talk, [("3", ["erased"])])
    assert await store.tips.list(None) == [] and await store.drafts.get(talk.sender) is None


async def test_expiry_files_substance_as_incomplete_and_erases_the_rest(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    with_substance, empty = Talk(engine, sender="sender-with-substance"), Talk(engine, sender="sender-without")
    await run_transcript(
        with_substance,
        [(OPEN, ["language.question"]), ("2", ["safety.notice", "danger.question"]), ("2", ["role.question"]),
         ("2", ["kind.question"]), ("2", ["minors.question"]), ("2", ["where.question"]), ("Rue Fictive", ["when.question"])],
    )  # fmt: skip
    await run_transcript(empty, [(OPEN, ["language.question"]), ("1", ["safety.notice", "danger.question"])])
    clock.advance(29 * 60)
    assert await engine.expire_due() == 0
    clock.advance(2 * 60)
    assert await engine.expire_due() == 2
    [tip] = await store.tips.list()
    assert not tip.complete and tip.answers["where"] == "Rue Fictive" and tip.language == "fr"
    assert await store.drafts.count() == 0
    assert [i.payload["event"] for i in await store.outbox.due(1e12)] == ["incomplete"]
    # Coming back later starts a new conversation; the bot never wrote first.
    await run_transcript(with_substance, [("allo", ["safety.notice", "danger.question"])])


async def test_expired_draft_is_expired_when_the_person_writes_again(engine: Engine, store: SqliteStore, clock: Clock) -> None:
    talk = Talk(engine, language_hint="en")
    await run_transcript(talk, [("hi", ["safety.notice", "danger.question"]), ("1", ["danger.urgent", "where.question"])])
    clock.advance(31 * 60)
    await run_transcript(talk, [("2", ["safety.notice", "danger.question"])])
    [tip] = await store.tips.list()
    assert tip.urgent and not tip.complete and tip.status is TipStatus.OPEN


async def test_duplicate_provider_id_returns_the_same_replies_without_side_effects(engine: Engine, store: SqliteStore) -> None:
    from bot.messages import InboundMessage

    talk = Talk(engine, language_hint="en")
    await run_transcript(talk, [("hi", ["safety.notice", "danger.question"])])
    message = InboundMessage("sms", talk.sender, "1", provider_id="SM1")
    first = await engine.handle(message)
    again = await engine.handle(message)
    assert [r.key for r in first] == ["danger.urgent", "where.question"] and again == first
    assert len(await store.outbox.due(1e12)) == 1
    assert (await store.drafts.get(talk.sender)).state["step"] == "where"


async def test_unsupported_and_media_get_calm_answers(engine: Engine, store: SqliteStore) -> None:
    from bot.messages import InboundKind, InboundMessage

    sticker = InboundMessage("telegram", "s-1", kind=InboundKind.UNSUPPORTED)
    assert [r.key for r in await engine.handle(sticker)] == ["unsupported"]
    assert await store.drafts.get("s-1") is None  # nothing stored
    talk = Talk(engine, sender="s-2", language_hint="en")
    await run_transcript(talk, [("hi", ["safety.notice", "danger.question"])])
    photo = InboundMessage("sms", "s-2", "2", has_media=True)
    assert [r.key for r in await engine.handle(photo)] == ["media.note", "role.question"]
    assert [r.key for r in await engine.handle(sticker.__class__("telegram", "s-2", kind=InboundKind.UNSUPPORTED))] == [
        "unsupported",
        "role.question",
    ]


async def test_help_and_exit_outside_a_report(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    replies = await run_transcript(talk, [("AIDE", ["help.idle"]), ("help", ["help.idle"]), ("STOP", ["erased"])])
    assert replies[0][0].language == "fr" and replies[1][0].language == "en"
    assert await store.drafts.count() == 0


async def test_senders_are_independent_and_concurrent(engine: Engine, store: SqliteStore) -> None:
    import asyncio

    talks = [Talk(engine, sender=f"concurrent-{i}") for i in range(20)]
    await asyncio.gather(*(run_transcript(t, ENGLISH_FULL) for t in talks))
    assert len(await store.tips.list(limit=100)) == 20
    assert len({t.case_number for t in await store.tips.list(limit=100)}) == 20


async def test_long_details_are_kept_whole_and_the_cap_is_said_aloud(engine: Engine, store: SqliteStore) -> None:
    from dataclasses import replace

    from handlers.state import load_state

    engine.config = replace(engine.config, max_details_messages=4, max_text_chars=10)
    talk = Talk(engine, language_hint="en")
    await run_transcript(
        talk,
        [("hi", ["safety.notice", "danger.question"]), *[(a, [k]) for a, k in
         [("2", "role.question"), ("2", "kind.question"), ("2", "minors.question"), ("2", "where.question"),
          ("0", "when.question"), ("0", "details.question")]],
         ("first detail, longer than ten", ["details.more"]), ("second", ["details.more"]), ("third", ["details.full"])],
    )  # fmt: skip
    details = load_state((await store.drafts.get(talk.sender)).state).answers.details
    # The long message is kept as several entries, none of it cut; beyond the cap it is said aloud.
    assert details == ["first deta", "il, longer", " than ten", "second"]
