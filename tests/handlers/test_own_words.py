"""People answer in their own words: what they add beside an answer is kept, a slip is not an
answer, and everyday words are not mistaken for EXIT."""

from __future__ import annotations

import json

from bot.engine import Engine
from storage.sqlite import SqliteStore
from tests.handlers.transcript import OPEN, Talk, run_transcript


QUESTIONS = ("danger.question", "role.question", "kind.question", "minors.question", "where.question")


def _opening(language: str, *, answered_no: int = 0) -> list[tuple[object, list[str]]]:
    """Open, pick a language ("1" English, "2" French), then answer "2" to the next questions."""
    return [
        (OPEN, ["language.question"]),
        (language, ["safety.notice", QUESTIONS[0]]),
        *(("2", [QUESTIONS[n + 1]]) for n in range(answered_no)),
    ]


async def _draft(store: SqliteStore, talk: Talk) -> dict:
    draft = await store.drafts.get(talk.sender)
    assert draft is not None
    return draft.state


async def test_an_answer_with_more_words_picks_the_option_and_keeps_the_words(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            *_opening("2"),
            ("jsp il a pris mon tel", ["role.question"]),  # "je sais pas" + what happened
            ("je sais pas", ["kind.question"]),  # at Who is writing: prefers not to say
        ],
    )
    state = await _draft(store, talk)
    assert state["answers"]["danger"] == "unsure"
    assert state["answers"]["role"] == "unsaid"
    assert state["answers"]["details"] == ["jsp il a pris mon tel"]  # "je sais pas" alone is not kept


async def test_a_misspelt_exit_then_no_asks_the_question_again_and_stores_nothing(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            *_opening("1", answered_no=1),
            ("exti", ["exit.confirm"]),
            ("no", ["role.question"]),
            ("2", ["kind.question"]),
        ],
    )
    state = await _draft(store, talk)
    assert "exti" not in json.dumps(state)
    assert state["answers"]["role"] == "witness"


async def test_done_before_the_details_skips_a_skippable_question_and_is_never_an_answer(
    engine: Engine, store: SqliteStore
) -> None:
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            *_opening("2", answered_no=2),
            ("c tout", ["reprompt.choice", "kind.question"]),  # What is happening? cannot be skipped
            ("2", ["minors.question"]),
            ("2", ["where.question"]),
            ("motel", ["when.question"]),
            ("c tout", ["details.question"]),  # When may be skipped
        ],
    )
    state = await _draft(store, talk)
    assert state["answers"]["when"] is None and state["answers"]["kind"] == "labour"
    assert "c tout" not in json.dumps(state)


async def test_everyday_words_near_an_exit_word_are_answers(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            *_opening("2", answered_no=4),
            ("motel", ["when.question"]),
            ("hier soir", ["details.question"]),  # "soir" is not "sortir" misspelt
        ],
    )
    assert (await _draft(store, talk))["answers"]["when"] == "week"


async def test_a_person_writing_another_language_is_pointed_to_interpreters_and_kept(
    engine: Engine, store: SqliteStore
) -> None:
    talk = Talk(engine)
    replies = await run_transcript(
        talk,
        [
            ("hola necesito ayuda", ["language.other", "language.question"]),
            ("mi jefe tiene mi pasaporte", ["language.other_again", "language.question"]),
            ("1", ["safety.notice", "danger.question"]),
        ],
    )
    assert "1-833-900-1010" in replies[1][0].text  # the number works in any language
    state = await _draft(store, talk)
    assert state["language_unknown"] is True
    assert state["answers"]["details"] == ["hola necesito ayuda", "mi jefe tiene mi pasaporte"]


async def test_an_age_under_18_at_the_minors_question_is_yes_and_is_kept(engine: Engine, store: SqliteStore) -> None:
    for said, expected in (("she is 16", "yes"), ("elle a ١٥ ans", "yes"), ("16yo", "yes"), ("25", "25"), ("2", "no")):
        talk = Talk(engine, sender=f"age-{said}")
        await run_transcript(talk, [*_opening("1", answered_no=3), (said, ["where.question"])])
        assert (await _draft(store, talk))["answers"]["minors"] == expected, said


async def test_a_yes_or_no_at_a_question_that_is_not_yes_no_is_asked_again_never_kept(
    engine: Engine, store: SqliteStore
) -> None:
    """"y" at What is happening? once gave "What: y" in the review and the alert."""
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            *_opening("1", answered_no=2),
            ("y", ["reprompt.choice", "kind.question"]),
            ("2", ["minors.question"]),
            ("2", ["where.question"]),
            ("motel", ["when.question"]),
            ("ouais", ["reprompt.choice", "when.question"]),
            ("nope", ["details.question"]),  # twice: left unanswered, still not kept
        ],
    )
    state = await _draft(store, talk)
    assert state["answers"]["kind"] == "labour" and state["answers"]["when"] is None
    assert not {"y", "ouais", "nope"} & set(json.dumps(state).replace('"', " ").split())


async def test_a_bare_yes_at_where_is_not_the_place_named_before(engine: Engine, store: SqliteStore) -> None:
    """"im scared hes here", "motel on main st rm 12", then "y" at Where gave "Place: y" in the
    urgent alert, over the motel."""
    talk = Talk(engine)
    await talk.say(OPEN)
    await talk.say("im scared hes here")
    await talk.say("motel on main st rm 12")
    assert [r.key for r in await talk.say("y")] == ["reprompt.text", "where.question"]
    assert "where.question" not in [r.key for r in await talk.say("yes")]  # asked twice: moves on
    state = await _draft(store, talk)
    assert state["answers"]["where"] is None  # never "y"; the motel is with the details, for officers
    assert "motel on main st rm 12" in state["answers"]["details"]
    assert not {"y", "yes"} & set(state["answers"]["details"])  # (danger holds its own "yes")


async def test_a_yes_or_no_with_more_words_is_kept_as_typed(engine: Engine, store: SqliteStore) -> None:
    talk = Talk(engine)
    await run_transcript(talk, [*_opening("1", answered_no=4), ("motel", ["when.question"]), ("no he left", ["details.question"])])
    assert (await _draft(store, talk))["answers"]["when"] == "no he left"


async def test_a_misspelt_exit_at_where_then_no_is_not_the_place(engine: Engine, store: SqliteStore) -> None:
    """"exti", "no" at Where once replaced the place named before with "exti" (and alerted it)."""
    talk = Talk(engine)
    await run_transcript(
        talk,
        [
            *_opening("1", answered_no=4),
            ("exti", ["exit.confirm"]),
            ("no", ["where.question"]),
            ("Motel Lune, room 12", ["when.question"]),
        ],
    )
    state = await _draft(store, talk)
    assert state["answers"]["where"] == "Motel Lune, room 12"
    assert state["answers"]["details"] == ["exti"]  # kept, as every word typed is: "Quito" may be a place
