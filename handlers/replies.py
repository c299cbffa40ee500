"""What a reply to a question means, read without changing anything: the language a message is
in, whether it describes something worth keeping, and which option of a question it picks."""

from __future__ import annotations

import re

from handlers.flow import Option, Step
from handlers.language_id import identify
from handlers.state import Report
from handlers.turn import Turn
from handlers.understanding import GREETING
from handlers.words import choice_value, fold

SUPPORTED_LANGUAGES = ("en", "fr")
SUBSTANCE_WORDS, SUBSTANCE_LETTERS = 3, 12  # a message that describes something, not a bare answer
_AGE = re.compile(r"(?<!\d)\d{1,3}(?!\d)")  # decimal digits of any script (int() reads them all)


def hinted_language(hint: str | None) -> str | None:
    if not hint:
        return None
    code = hint.lower().replace("_", "-").split("-")[0]
    return code if code in SUPPORTED_LANGUAGES else None


def pieces(text: str, size: int) -> list[str]:
    """A long message kept whole, as pieces of at most ``size`` characters (never cut silently)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def has_substance(turn: Turn, text: str) -> bool:
    """Does a message describe something (beyond a greeting, a number or a word or two)?"""
    words = turn.vocabulary.without_greeting(text)
    return len(words) >= SUBSTANCE_WORDS and len("".join(words)) >= SUBSTANCE_LETTERS


def worth_keeping(turn: Turn, text: str) -> bool:
    """Could a first message, or one at the language question, mean something to officers? All
    but greetings, thanks, language names and a bare option number ("the motel" does; "hi",
    "english please", "2" do not)."""
    return not turn.vocabulary.only_small_talk(text) and choice_value(text) is None


def language_of_text(turn: Turn, text: str) -> str | None:
    """English or French when the message is clearly in it: a greeting ("allo", "hi") or what the
    language identifier reads; None otherwise."""
    found = turn.vocabulary.is_entry(text, GREETING) or identify(text)
    return found if found in SUPPORTED_LANGUAGES else None


def option_for(turn: Turn, state: Report, step: Step, text: str) -> Option | None:
    """The option a reply picks: its number (a decimal digit of any script), its label in any
    language, or the words people use for it (``Option.words``, from the catalogues)."""
    option = step.option_for(choice_value(text) or "")
    if option is not None:
        return option
    wanted = fold(text)
    if wanted:
        for candidate in step.options:
            if any(fold(turn.text(lang, candidate.label_key)) == wanted for lang in turn.catalogues.languages):
                return candidate
    lists = [o.words for o in step.options if o.words]
    if len(lists) == len(step.options):
        found = turn.vocabulary.answer(text, lists, state.language, numbered=True)
        if found:
            return next((o for o in step.options if o.words == found), None)
    if step.age_below is not None and any(0 < int(n) < step.age_below for n in _AGE.findall(text)):
        return step.options[0]  # "she is 16" at "anyone under 18?"
    return None
