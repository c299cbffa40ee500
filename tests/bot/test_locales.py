"""Every key and placeholder in every locale; every single-step prompt within one SMS segment."""

from __future__ import annotations

import pytest

from bot.i18n import Catalogues, placeholders
from bot.sms_segments import is_gsm7, segments, units
from handlers.flow import STEPS, StepKind, catalogue_keys, validate_flow
from handlers.turn import ConversationConfig
from tests.handlers.transcript import OPEN, Talk

CATALOGUES = Catalogues.load()
LANGUAGES = CATALOGUES.languages

# Messages allowed more than one segment, and why. Everything else must fit one.
MULTI_SEGMENT_BUDGET = {
    "submitted.receipt": (2, "the receipt is written out three times so the person can copy it and its two commands"),
    "review.question": (4, "the review repeats every answer so the person can check them"),
    "details.question": (2, "in French the list of what to describe needs 2 segments"),
    "where.question": (1, "fits"),
    "telegram.delete_offer": (2, "Telegram only; never sent by SMS"),
    "telegram.delete_too_old": (2, "Telegram only; never sent by SMS"),
    "tipster.reply": (4, "carries an officer's reply, as long as the officer wrote it"),
    "unsupported": (2, "in French, with an accent outside GSM-7"),
    "add.closed": (2, "in French, with an accent outside GSM-7"),
}


# The officer side reads Telegram (SMS alerts carry only the case number and flags): no SMS budget.
OFFICER_SIDE = ("officer.", "alert.")


def test_catalogues_are_complete_with_the_same_placeholders() -> None:
    assert set(LANGUAGES) >= {"en", "fr"}
    assert CATALOGUES.problems() == []
    for language in LANGUAGES:
        assert set(CATALOGUES.messages[language]) == CATALOGUES.keys()


def test_problems_names_a_missing_key_and_a_wrong_placeholder() -> None:
    broken = Catalogues({"en": {"a": "x {n}", "b": "y"}, "fr": {"a": "x {m}"}})
    assert broken.problems() == ["fr: a has placeholders ['m']", "fr: b is missing or empty"]


def test_every_key_the_flow_uses_exists_and_the_flow_is_valid() -> None:
    assert catalogue_keys() <= CATALOGUES.keys()
    validate_flow(known_keys=CATALOGUES.keys())


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(CATALOGUES.keys()))
def test_each_message_fits_its_sms_budget(language: str, key: str) -> None:
    text = CATALOGUES.messages[language][key]
    sample = text.format(**{name: "123-456-789-012" for name in placeholders(text)}) if placeholders(text) else text
    if key.startswith(OFFICER_SIDE):
        assert len(sample) <= 200, f"{language} {key} is long for a one-line officer message"
        return
    if key in ("review.question", "role.support", "check.reply", "summary.details_count", "receipt.missing"):
        return  # their size depends on what they carry; rendered prompts are checked below
    allowed, _why = MULTI_SEGMENT_BUDGET.get(key, (1, ""))
    assert segments(sample) <= allowed, f"{language} {key}: {units(sample)} units, GSM-7={is_gsm7(sample)}"


async def _rendered_prompts(engine, language: str) -> dict[str, str]:
    """Walk the flow and collect each step's prompt exactly as it is sent (question + choices)."""
    talk = Talk(engine, language_hint=None)
    seen: dict[str, str] = {}
    script = [OPEN, "1" if language == "en" else "2", "2", "2", "2", "2", "Rue Fictive", "3", "x y z", "DONE", "2", "2"]
    for said in script:
        for reply in await talk.say(said):
            seen.setdefault(reply.key, reply.text)
    return seen


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_every_step_prompt_as_sent_fits_one_segment(engine, language: str) -> None:
    prompts = await _rendered_prompts(engine, language)
    for step in STEPS:
        if step.id in ("review", "submitted"):
            continue  # budgets named in MULTI_SEGMENT_BUDGET
        text = prompts[step.question_key]
        allowed = MULTI_SEGMENT_BUDGET.get(step.question_key, (1, ""))[0]
        assert segments(text) <= allowed, f"{language} {step.id}: {units(text)} units, GSM-7={is_gsm7(text)}: {text!r}"
    review = prompts["review.question"]
    assert segments(review) <= MULTI_SEGMENT_BUDGET["review.question"][0]


def test_choice_steps_have_labels_in_every_language() -> None:
    for step in STEPS:
        if step.kind is StepKind.CHOICE:
            for option in step.options:
                for language in LANGUAGES:
                    assert CATALOGUES.text(language, option.label_key)


def test_default_support_line_is_the_canadian_hotline() -> None:
    assert ConversationConfig().support_line is None
    assert "1-833-900-1010" in CATALOGUES.text("en", "support.default")
    assert "1-833-900-1010" in CATALOGUES.text("fr", "support.default")


def test_a_word_longer_than_a_segment_is_split_not_dropped() -> None:
    from bot.sms_segments import split_for_sms

    url = "https://example.org/" + "a" * 400 + "{x}"
    parts = split_for_sms(f"See {url} now.")
    assert "".join(parts).replace(" ", "") == f"See{url}now."
    assert all(segments(p) == 1 for p in parts)
    french = "é" * 10 + "ê" * 200  # UCS-2
    assert "".join(split_for_sms(french)) == french and all(segments(p) == 1 for p in split_for_sms(french))


def test_long_replies_split_between_lines_and_sentences_not_inside_them() -> None:
    from bot.sms_segments import split_for_sms

    review = "Please check:\nDanger now: Yes\nWhere: Motel Lune, rue Fictive\n" + "\n".join(f"Line {i}: answer" for i in range(12))
    parts = split_for_sms(review)
    assert len(parts) > 1 and "\n".join(parts) == review  # whole lines only, none cut after its colon
    receipt = "Thank you, your report is sent. Your code: 123-456-789-012\nKeep it secret. " + "More words here. " * 8
    assert all(segments(p) == 1 for p in split_for_sms(receipt))
    assert split_for_sms(receipt)[0].startswith("Thank you, your report is sent. Your code: 123-456-789-012")
