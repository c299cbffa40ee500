"""Officer commands through the engine: list, show, ack, reply (relayed anonymously), close, stats;
the audit log records each and detects tampering; non-officers get the tipster flow."""

from __future__ import annotations

import re
import sqlite3

from bot.engine import Engine
from bot.i18n import Catalogues
from bot.messages import InboundMessage, Purpose
from storage.records import TipStatus
from storage.sqlite import SqliteStore
from tests.handlers.test_transcripts import ENGLISH_FULL, FRENCH_FULL
from tests.handlers.transcript import Talk, run_transcript

OFFICER = "officer-pseudonym-0001"
TEXT = Catalogues.load().text


async def officer(engine: Engine, text: str) -> list[str]:
    replies = await engine.handle(InboundMessage("telegram", "officer-group-sender", text, officer=OFFICER))
    assert all(r.purpose is Purpose.OFFICER for r in replies)
    return [r.text for r in replies]


async def _file(engine: Engine, script, sender: str, address: str | None = None) -> str:
    talk = Talk(engine, sender=sender, reply_address=address, channel="sms")
    replies = await run_transcript(talk, script)
    return re.search(r"\d{3}-\d{3}-\d{3}-\d{3}", replies[-1][0].text).group()


async def test_list_show_ack_reply_close_and_stats(engine: Engine, store: SqliteStore) -> None:
    await _file(engine, ENGLISH_FULL, "tipster-a")
    code = await _file(engine, FRENCH_FULL, "tipster-b", address="+15145550111")  # minor involved, replies OK
    [listing] = await officer(engine, "/list")
    assert listing.startswith("Open tips: 2")
    first_line = listing.splitlines()[1]
    assert "MINOR INVOLVED" in first_line  # minor first
    case = first_line.split()[0]
    [shown] = await officer(engine, f"/show@tipline_bot {case}")
    assert "Hôtel Étoile" in shown and "Deux jeunes femmes" in shown and "+1514" not in shown
    assert (await officer(engine, f"/ack {case}")) == [f"Case {case} acknowledged."]
    assert (await store.tips.by_case(case)).status is TipStatus.ACKNOWLEDGED
    [sent] = await officer(engine, f"/reply {case} Which floor is it?")
    assert "on its way" in sent
    [item] = [i for i in await store.outbox.due(1e12) if i.sink == "tipster:sms"]
    assert item.payload["kind"] == "reply"
    # The phone gets a content-free notice; the reply is read with the code, and what the tipster
    # writes next answers the case instead of starting a new report.
    tipster = Talk(engine, sender="tipster-b", channel="sms")
    await run_transcript(
        tipster,
        [(f"SUIVI {code}", ["check.status", "check.reply", "check.answer_here"]), ("Troisième étage", ["tipster.answer_sent"])],
    )
    [shown] = await officer(engine, f"/show {case}")
    assert "Officers" in shown and "Which floor is it?" in shown and "Troisième étage" in shown
    [closed] = await officer(engine, f"/close {case} arrest made")
    assert "closed" in closed
    tip = await store.tips.by_case(case)
    assert tip.status is TipStatus.CLOSED and tip.contact_address is None and tip.close_reason == "arrest made"
    # After close, the tipster's messages start a new conversation again.
    await run_transcript(tipster, [("bonjour", ["safety.notice", "danger.question"])])
    [stats] = await officer(engine, "/stats")
    assert stats.startswith("Open: 1 (urgent 0, minor 0)") and "Closed: 1" in stats
    entries = await store.audit.entries()
    assert [e.action for e in entries] == ["list", "view", "acknowledge", "reply", "view", "close", "stats"]
    assert [bool(e.tip_id) for e in entries] == [False, True, True, True, True, True, False]  # reads of many cases name none
    assert [f.author for f in await store.followups.for_tip(tip.id)] == ["officer", "tipster"]
    assert all(e.officer == OFFICER for e in await store.audit.entries())
    assert await store.audit.verify() == []


async def test_reply_without_consent_waits_for_check(engine: Engine, store: SqliteStore) -> None:
    code = await _file(engine, ENGLISH_FULL, "tipster-c")
    case = (await store.tips.list())[0].case_number
    [waiting] = await officer(engine, f"/reply {case} Can you call us?")
    assert "waits until they check" in waiting
    assert not [i for i in await store.outbox.due(1e12) if i.sink.startswith("tipster")]
    other_phone = Talk(engine, sender="a-different-phone", channel="telegram")
    replies = await run_transcript(other_phone, [(f"CHECK {code}", ["check.status", "check.reply", "check.answer_here"])])
    assert "Can you call us?" in replies[0][1].text and code in replies[0][2].text
    # Every CHECK shows the replies so far, not only unread ones: a deleted text can be read again.
    again = await run_transcript(other_phone, [(f"CHECK {code}", ["check.status", "check.reply", "check.answer_here"])])
    assert "Can you call us?" in again[0][1].text


async def test_unknown_case_usage_and_plain_talk(engine: Engine) -> None:
    assert (await officer(engine, "/show 99-9999")) == ["No open case 99-9999."]
    assert (await officer(engine, "/frobnicate")) == [await _usage(engine)]
    assert (await officer(engine, "good morning team")) == []  # officers chatting: silence
    assert (await officer(engine, "/list")) == ["No open tips."]


async def _usage(engine: Engine) -> str:
    return engine.catalogues.text("en", "officer.usage")


async def test_commands_from_a_non_officer_get_the_tipster_flow(engine: Engine, store: SqliteStore) -> None:
    await _file(engine, ENGLISH_FULL, "tipster-d")
    stranger = Talk(engine, sender="stranger")
    replies = await run_transcript(stranger, [("/list", ["language.question"])])
    assert "Open tips" not in replies[0][0].text
    assert await store.audit.entries() == []


async def test_tampered_or_deleted_audit_rows_are_detected(engine: Engine, store: SqliteStore) -> None:
    await _file(engine, ENGLISH_FULL, "tipster-e")
    case = (await store.tips.list())[0].case_number
    for command in ("/show", "/ack", "/show"):
        await officer(engine, f"{command} {case}")
    assert await store.audit.verify() == []
    await store.checkpoint()
    with sqlite3.connect(store.path) as raw:
        raw.execute("UPDATE audit SET action = 'acknowledge' WHERE seq = 1")
    assert await store.audit.verify() == ["audit row 1 was altered"]
    with sqlite3.connect(store.path) as raw:
        raw.execute("UPDATE audit SET action = 'view' WHERE seq = 1")
        raw.execute("DELETE FROM audit WHERE seq = 2")
    problems = await store.audit.verify()
    assert "audit row 2 is missing (next is 3)" in problems and "audit row 3 does not follow the row before it" in problems
    with sqlite3.connect(store.path) as raw:
        raw.execute("DELETE FROM audit WHERE seq = 3")
    assert any("newest audit rows are missing" in p for p in await store.audit.verify())


async def test_a_case_is_found_however_a_phone_keyboard_types_it(engine: Engine, store: SqliteStore) -> None:
    await _file(engine, ENGLISH_FULL, "tipster-a")
    (tip,) = await store.tips.list(None)
    year, number = tip.case_number.split("-")
    short = str(int(number))
    for typed in (f"/show {short}", f"/show {number}", f"/show {year}-{short}", f"/show{tip.case_number}", f"/show #{short}", f"/SHOW {tip.case_number}"):
        [shown] = await officer(engine, typed)
        assert shown.split("\n")[0].endswith(tip.case_number), typed
    [missing] = await officer(engine, "/show 999")
    assert missing == TEXT("en", "officer.unknown_case", case=f"{year}-0999")


async def test_helpful_one_line_errors_and_help(engine: Engine, store: SqliteStore) -> None:
    await _file(engine, ENGLISH_FULL, "tipster-a")
    (tip,) = await store.tips.list(None)
    assert await officer(engine, "/show") == [TEXT("en", "officer.no_case", command="show")]
    assert await officer(engine, f"/reply {tip.case_number}") == [TEXT("en", "officer.reply.no_text", case=tip.case_number)]
    [help_text] = await officer(engine, "/help")
    assert help_text == TEXT("en", "officer.usage") and "/reply" in help_text and "\n" not in help_text
    await officer(engine, f"/close {tip.case_number} resolved")
    assert await officer(engine, f"/close {tip.case_number} again") == [TEXT("en", "officer.already_closed", case=tip.case_number)]
    assert await officer(engine, f"/ack {tip.case_number}") == [TEXT("en", "officer.already_closed", case=tip.case_number)]
    assert await officer(engine, f"/reply {tip.case_number} hello") == [TEXT("en", "officer.reply.closed", case=tip.case_number)]
    actions = [e.action for e in await store.audit.entries()]
    assert actions == ["close"]  # the refusals changed nothing and audited nothing


def test_an_alert_headline_reads_at_a_glance() -> None:
    from handlers.alerts import AlertEvent, render_alert
    from storage.records import Tip

    place = "Motel Lune, Laval, behind the gas station on the highway"
    tip = Tip("t1", "26-0001", TipStatus.OPEN, "s", "sms", "fr", 0.0, 0.0, answers={"where": place, "when": "now"}, urgent=True, minor=True)
    first, second = render_alert(Catalogues.load(), "en", tip, AlertEvent.URGENT, full_details=False).split("\n")[:2]
    assert first == "URGENT · NOW · MINOR INVOLVED · Motel Lune, Laval, behind the gas stati… — 26-0001"
    assert second == TEXT("en", "alert.urgent", case="26-0001")
    quiet = Tip("t2", "26-0002", TipStatus.OPEN, "s", "sms", "en", 0.0, 0.0, answers={"when": "week"})
    assert render_alert(Catalogues.load(), "fr", quiet, AlertEvent.NEW, full_details=False).split("\n")[0] == "26-0002"


# --- officer vocabulary, language and clock ---------------------------------------------------------


async def test_show_reads_in_officer_vocabulary_and_local_time(engine: Engine, store: SqliteStore, clock) -> None:
    await _file(engine, ENGLISH_FULL, "tipster-a")  # a witness, forced work, no replies
    (tip,) = await store.tips.list(None)
    clock.advance(12 * 60)
    [shown] = await officer(engine, f"/show {tip.case_number}")
    lines = shown.splitlines()
    assert lines[0] == f"Motel Lune, 12 rue Fictive — {tip.case_number}"
    # 1_800_000_000 is 08:00 UTC on 15 January 2027: 03:00 in Toronto (EST, UTC-5).
    assert lines[1] == "new · 2027-01-15 03:00 (12 min ago)"
    assert "Reporter: witness" in lines and "Type: labour exploitation" in lines and "Contact: do not contact" in lines
    assert "Channel: SMS · Language: English" in lines
    assert not any(line.startswith(("You are", "May we text you")) for line in lines)  # the tipster's own labels


async def test_french_officers_read_every_label_and_state_in_french(store: SqliteStore, cipher, catalogues, clock) -> None:
    from bot.rate_limit import RateLimiter
    from handlers.turn import ConversationConfig

    french = Engine(
        store, cipher, catalogues, ConversationConfig(officer_language="fr", officer_timezone="America/Vancouver"),
        clock=clock, rate_limiter=RateLimiter(burst=10_000),
    )  # fmt: skip
    await _file(french, ENGLISH_FULL, "tipster-a")
    clock.advance(3 * 3600)
    [listing] = await officer(french, "/list")
    case = (await store.tips.list(None))[0].case_number
    assert listing.splitlines()[1] == f"{case} · nouveau · 2027-01-15 00:00 (il y a 3 h) · exploitation par le travail"
    [shown] = await officer(french, f"/show {case}")
    for line in ("Signalé par : témoin", "Contact : ne pas recontacter", "Canal : SMS · Langue : anglais"):
        assert line.replace(" :", ":") in shown.replace(" :", ":"), line
    english_words = {"Reporter", "witness", "Contact: do not", "English", "new", "ago"}
    assert not any(word in shown + listing for word in english_words)


def test_every_choice_answer_and_state_has_officer_words_in_every_language(catalogues: Catalogues) -> None:
    from handlers.flow import REPORT_STEPS, StepKind

    for language, table in catalogues.messages.items():
        for step in REPORT_STEPS:
            assert f"officer.field.{step.id}" in table, (language, step.id)
            if step.kind is StepKind.CHOICE:
                for option in step.options:
                    assert f"officer.value.{step.id}.{option.answer}" in table, (language, step.id, option.answer)
        for status in TipStatus:
            assert f"officer.status.{status.value}" in table, (language, status)


def test_ages_read_as_officers_say_them(catalogues: Catalogues) -> None:
    from handlers.officer_view import age

    said = [age(catalogues, "en", s) for s in (-5, 30, 60, 59 * 60, 60 * 60, 47 * 3600, 48 * 3600, 10 * 86400)]
    assert said == ["just now", "just now", "1 min ago", "59 min ago", "1 h ago", "47 h ago", "2 days ago", "10 days ago"]
    assert age(catalogues, "fr", 12 * 60) == "il y a 12 min"


def test_an_unknown_time_zone_stops_start_up_naming_the_setting() -> None:
    import pytest

    from bot.settings import SettingsError, load_settings

    assert load_settings(_env_file=None).timezone == "America/Toronto"
    assert load_settings(_env_file=None, timezone="Europe/Paris").zone.key == "Europe/Paris"
    with pytest.raises(SettingsError, match="^setting TIPLINE_TIMEZONE: unknown time zone 'Mars/Olympus'"):
        load_settings(_env_file=None, timezone="Mars/Olympus")
