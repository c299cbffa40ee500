"""The words that work at every step, in every language (DESIGN §2), and how a message is read.

Matching is case- and accent-insensitive and ignores surrounding punctuation, so "Arrêt!",
"arret" and "ARRET" are the same word.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum


class Word(str, Enum):
    EXIT = "exit"
    HELP = "help"
    LANG = "lang"
    BACK = "back"
    SKIP = "skip"
    DONE = "done"
    ADD = "add"
    CHECK = "check"


# word -> the language it suggests (None when it is the same in both).
_WORDS: dict[str, tuple[Word, str | None]] = {
    "exit": (Word.EXIT, "en"),
    "quit": (Word.EXIT, "en"),
    "stop": (Word.EXIT, None),
    "quitter": (Word.EXIT, "fr"),
    "arret": (Word.EXIT, "fr"),
    "help": (Word.HELP, "en"),
    "aide": (Word.HELP, "fr"),
    "info": (Word.HELP, None),
    "lang": (Word.LANG, "en"),
    "language": (Word.LANG, "en"),
    "langue": (Word.LANG, "fr"),
    "back": (Word.BACK, "en"),
    "retour": (Word.BACK, "fr"),
    "skip": (Word.SKIP, "en"),
    "passer": (Word.SKIP, "fr"),
    "0": (Word.SKIP, None),
    "done": (Word.DONE, "en"),
    "fini": (Word.DONE, "fr"),
    "termine": (Word.DONE, "fr"),
}
_RECEIPT_WORDS: dict[str, tuple[Word, str]] = {
    "add": (Word.ADD, "en"),
    "ajout": (Word.ADD, "fr"),
    "ajouter": (Word.ADD, "fr"),
    "check": (Word.CHECK, "en"),
    "suivi": (Word.CHECK, "fr"),
}

_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Characters no text may carry (nor XML): unpaired surrogates and Unicode's noncharacters.
_NOT_TEXT = re.compile("[\ud800-\udfff\ufdd0-\ufdef" + "".join(f"{chr(p + 0xFFFE)}{chr(p + 0xFFFF)}" for p in range(0, 0x110000, 0x10000)) + "]")


def clean(text: str) -> str:
    """Text as it is kept: control, bidirectional-override and non-characters removed, trimmed."""
    return _CONTROL.sub("", unicodedata.normalize("NFC", _NOT_TEXT.sub("", text))).strip()


def fold(text: str) -> str:
    """Lower case, no accents, no surrounding punctuation, single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _PUNCTUATION.sub("", " ".join(bare.split()))


def global_word(text: str) -> tuple[Word, str | None] | None:
    """The global word a whole message is, with the language it suggests; None otherwise."""
    folded = fold(text)
    if folded == "0" or text.strip() == "0":
        return _WORDS["0"]
    return _WORDS.get(folded)


def receipt_command(text: str) -> tuple[Word, str, str] | None:
    """ADD/AJOUT or CHECK/SUIVI followed by a receipt: (word, language, rest of the message)."""
    parts = clean(text).split(maxsplit=1)
    if not parts:
        return None
    found = _RECEIPT_WORDS.get(fold(parts[0]))
    if not found:
        return None
    return found[0], found[1], parts[1] if len(parts) > 1 else ""


def choice_value(text: str) -> str | None:
    """The option number in "2", "2.", " 2 ", "#2", "２" or "٢": a decimal digit of any script.
    Never raises: a character that looks like a digit but has no decimal value is not a number."""
    folded = fold(text)
    if not folded or len(folded) > 2:
        return None
    values = [unicodedata.decimal(char, None) for char in folded]
    if any(value is None for value in values):
        return None
    return str(int("".join(str(value) for value in values)))


_FRENCH_HINTS = {
    "bonjour", "allo", "salut", "je", "j", "il", "elle", "est", "une", "des", "les", "dans", "avec", "pour",
    "qui", "sont", "mon", "ma", "mes", "voisin", "voisine", "travail", "fille", "femme", "homme", "enfant",
    "aide", "svp", "merci", "francais", "pas", "oui", "non", "chez", "au", "aux", "du", "nous", "vous",
}
_ENGLISH_HINTS = {
    "hello", "hi", "hey", "i", "he", "she", "is", "are", "the", "a", "an", "in", "with", "for", "who",
    "my", "neighbour", "neighbor", "work", "girl", "woman", "man", "child", "help", "please", "thanks",
    "english", "not", "yes", "no", "at", "of", "we", "you", "there", "they",
}
_GREETINGS = {"hello", "hi", "hey", "bonjour", "allo", "salut", "bonsoir", "start", "debut", "yo", "coucou"}


def guess_language(text: str) -> str | None:
    """'en' or 'fr' when the words clearly lean one way, else None."""
    words = re.findall(r"[a-z]+", fold(text))
    french = sum(w in _FRENCH_HINTS for w in words)
    english = sum(w in _ENGLISH_HINTS for w in words)
    if french > english:
        return "fr"
    if english > french:
        return "en"
    return None


def has_substance(text: str) -> bool:
    """Does a first message already describe something (beyond a greeting or a number)?"""
    words = [w for w in re.findall(r"\w+", fold(text)) if w not in _GREETINGS]
    return len(words) >= 3 and len("".join(words)) >= 12
