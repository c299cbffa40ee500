"""Which language a short message is in: English, French, another language, or no evidence.

``identify(text)`` returns


- ``"en"`` or ``"fr"``: the message reads as English or French;
- ``"other"``: it is clearly another language (Spanish, Tagalog, Chinese, Punjabi, Arabic, …);
- ``None``: there is not enough evidence ("ok", "?", "911", "SOS", "🆘", a number, a lone
  function word such as "no", "a" or "at", a name, an address like "123 Main St").

``guess(text)`` returns the same answer as a ``LanguageGuess`` with the detail: the language the
package ranked first (``detected``, e.g. "es" or "tl"), its margin and the reason.

The decision comes from py3langid (a maintained fork of langid.py, a naive-Bayes model over
byte n-grams trained on 97 languages). Its model ships inside the wheel; nothing is downloaded,
ever. The model is loaded once, on first use (``preload()`` does it ahead of time), and is
read-only afterwards, so calls are safe from any thread. A call takes well under a millisecond.

Around the model sit a few rules that a statistical model cannot learn from 1-word texts:

1. Evidence: tokens that mix Latin letters and digits (``16h``, ``K2P``, ``#12``), words with
   no vowel (``hmm``, ``St``, ``XYZ``) and words of every language (``NEUTRAL``: "ok", "SOS",
   "motel") say nothing about a language. Fewer than 4 letters of
   evidence ("no", "at", "ok", "SOS") give ``None``.
2. Script: English and French are written in Latin letters. A message mostly in another script
   (Han, Gurmukhi, Arabic, Cyrillic, Ethiopic, Devanagari, …) is ``"other"``; the package still
   names the language in ``detected``.
3. Greetings and texting shorthand (``GREETINGS``, ``SHORTHAND``, a dozen entries each): "Hi",
   "Bonjour", "allo", "Hola" decide alone; "svp", "jsp", "chu", "pls", "idk" are spelled out
   before the model reads the message, since no training corpus spells them.
4. Names: a message whose words are all Capitalised ("John Smith", "Motel", "Laval") looks like
   a name or a place. Two or more such words give ``None``; a single one needs a large margin.

Among Latin-script languages the model compares English, French and ``OTHER_LANGUAGES`` only: the
languages people in Canada are likely to write in. Leaving out languages nobody texts a tip line
in (Latin, Esperanto, Walloon, Occitan, …) keeps them from stealing short French or English
messages. A language outside the list still comes out as its nearest listed neighbour, which for
Spanish, Portuguese, Tagalog or Haitian Creole speakers means ``"other"`` or ``None``, never a
confident English.

``candidates`` restricts the answers, not the comparison: with ``{"en", "fr"}`` (for instance
once a person has chosen one of the two) a message in Spanish is None, never "en". A hint such as
Telegram's ``language_code`` is the caller's business: this function never sees it.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

Language = Literal["en", "fr", "other"]
ALL_CANDIDATES: frozenset[str] = frozenset({"en", "fr", "other"})

# Latin-script languages compared with English and French (py3langid codes). Non-Latin scripts
# need no list: the script alone says "not English or French".
OTHER_LANGUAGES: tuple[str, ...] = (
    "es", "pt", "tl", "it", "de", "nl", "ro", "pl", "vi", "id", "ms", "sw", "tr", "sq", "hr",
    "cs", "hu", "ht",
)

# A whole message made only of these words decides on its own (models do not know greetings).
GREETINGS: dict[str, Language] = {
    "hi": "en", "hello": "en", "hey": "en", "thanks": "en",
    "bonjour": "fr", "bonsoir": "fr", "allo": "fr", "salut": "fr", "merci": "fr",
    "hola": "other", "ola": "other", "kumusta": "other",
}
# Texting shorthand, spelled out before the model reads the message.
SHORTHAND: dict[str, str] = {
    "svp": "s'il vous plaît", "stp": "s'il te plaît", "jsp": "je sais pas", "chu": "je suis",
    "chus": "je suis", "jpeux": "je peux", "pls": "please", "plz": "please", "idk": "i don't know",
    "thx": "thanks", "u": "you", "im": "i am",
}

# Words that every language uses: no evidence of any.
NEUTRAL: frozenset[str] = frozenset({"ok", "okay", "sos", "lol", "taxi", "hotel", "motel"})

COMPARED: tuple[str, ...] = ("en", "fr", *OTHER_LANGUAGES)
MAX_CHARS = 1000  # the start of a long message says enough
MIN_LETTERS = 4  # less than this many letters of evidence: no evidence
# Margin of the winner over the runner-up (1 - p2/p1) needed to decide.
MARGIN_EN_FR = 0.2
MARGIN_OTHER = 0.3
MARGIN_ONE_WORD = 0.5  # a single word is weak evidence
MARGIN_ONE_NAME = 0.8  # a single Capitalised word is most likely a name or a place

_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_VOWELS = frozenset("aeiouy")


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    """What ``identify`` concluded.

    ``language``: "en", "fr", "other" or None (no evidence / not sure).
    ``detected``: the language code the package ranked first (e.g. "es", "tl", "zh"), or None.
    ``confidence``: the winner's margin over the runner-up, 0..1 (1 for greetings and scripts).
    ``reason``: "model", "script", "greeting", "no evidence", "name" or "unsure".
    """

    language: Language | None
    detected: str | None = None
    confidence: float = 0.0
    reason: str = "no evidence"


_NO_EVIDENCE = LanguageGuess(None)

_lock = threading.Lock()
_identifier: Any = None


def _model() -> Any:
    """The py3langid identifier, loaded once from the model inside the installed wheel."""
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)
    return _identifier


def preload() -> None:
    """Load the model now (about a second) rather than on the first message."""
    _model()


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _is_latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


def _title_case(word: str) -> bool:
    return word[0].isupper() and any(c.islower() for c in word[1:])


def _words(text: str) -> list[str]:
    """The words that can be evidence of a language, shorthand spelled out."""
    kept: list[str] = []
    for token in unicodedata.normalize("NFC", text).split():
        if any(c.isdigit() for c in token):
            if all(_is_latin(c) for c in token if c.isalpha()):
                continue  # 16h, K2P, #12, 1st: a code or a number, not words
            token = "".join(c for c in token if not c.isdigit())  # 士巴丹拿道123号
        kept.append(token)
    words: list[str] = []
    for word in _WORD.findall(" ".join(kept)):
        if not all(_is_latin(c) for c in word if c.isalpha()):
            words.append(word)
            continue
        folded = _fold(word)
        if folded in SHORTHAND:
            words.append(SHORTHAND[folded])
        elif _VOWELS.intersection(folded) and folded not in NEUTRAL:
            words.append(word)
    return words


def _ranking(text: str, codes: tuple[str, ...] | None) -> list[tuple[str, float]]:
    """The package's probabilities, restricted to ``codes`` (all languages when None)."""
    raw = _model().rank(text)  # (code, log score), one per language
    if codes is not None:
        raw = [(code, score) for code, score in raw if code in codes]
    # py3langid's own calibration: a softmax at temperature sqrt(bytes), here over the subset.
    temperature = math.sqrt(len(text.encode("utf-8")) or 1)
    top = max(score for _, score in raw)
    weights = [(code, math.exp((score - top) / temperature)) for code, score in raw]
    total = sum(weight for _, weight in weights)
    return sorted(((code, weight / total) for code, weight in weights), key=lambda cw: -cw[1])


def identify(text: str, candidates: Collection[str] | None = None) -> Language | None:
    """"en", "fr", "other" or None (no evidence, or not sure); see the module docstring.

    ``candidates``: the answers allowed, a subset of {"en", "fr", "other"} (default: all three).
    """
    return guess(text, candidates).language


def guess(text: str, candidates: Collection[str] | None = None) -> LanguageGuess:
    """``identify`` with the detail (the package's language code, margin and reason)."""
    allowed = ALL_CANDIDATES if candidates is None else frozenset(candidates)
    if not allowed or not allowed <= ALL_CANDIDATES:
        raise ValueError(f"candidates must be a non-empty subset of {sorted(ALL_CANDIDATES)}")
    return _guess(text, allowed)


@lru_cache(maxsize=512)  # the intake asks about the same message more than once
def _guess(text: str, allowed: frozenset[str]) -> LanguageGuess:
    words = _words(text)
    letters = [c for word in words for c in word if c.isalpha()]
    if not letters:
        return _NO_EVIDENCE

    latin = sum(map(_is_latin, letters))
    if latin * 2 < len(letters):  # mostly another script than English and French use
        if "other" not in allowed:
            return LanguageGuess(None, reason="script")
        ranking = _ranking(" ".join(words), None)
        return LanguageGuess("other", ranking[0][0], 1.0, "script")

    folded = [_fold(word) for word in words]
    said = {GREETINGS.get(word) for word in folded}
    if len(said) == 1 and None not in said:
        (greeting,) = said
        if greeting in allowed:
            return LanguageGuess(greeting, None, 1.0, "greeting")
        return LanguageGuess(None, reason="greeting")

    if len(letters) < MIN_LETTERS:
        return _NO_EVIDENCE
    if len(words) >= 2 and all(_title_case(word) for word in words):
        return LanguageGuess(None, reason="name")  # John Smith, Jose Garcia, Motel Lune

    # Lower case and padded: the model's byte n-grams include word edges, and "Hola" at the start
    # of a message would otherwise match nothing.
    sample = " " + " ".join(words).lower()[:MAX_CHARS] + " "
    ranking = _ranking(sample, COMPARED)
    (best, p1), (_, p2) = ranking[0], ranking[1]
    margin = 1.0 - p2 / p1 if p1 > 0 else 0.0
    label: Language = best if best in ("en", "fr") else "other"  # type: ignore[assignment]
    if len(words) == 1:
        needed = MARGIN_ONE_NAME if _title_case(words[0]) else MARGIN_ONE_WORD
    else:
        needed = MARGIN_EN_FR if label != "other" else MARGIN_OTHER
    if margin < needed or label not in allowed:
        return LanguageGuess(None, best, margin, "unsure")
    return LanguageGuess(label, best, margin, "model")
