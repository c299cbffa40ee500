"""Inputs and small helpers for ``tests/handlers/test_conversation_model.py``: what people type
(valid answers, global words with their spellings varied, odd Unicode, very long messages), how
provider ids look, and how a contained crash is turned into an assertion Hypothesis can tell apart
from the others."""

from __future__ import annotations

import logging
import re
import unicodedata

from hypothesis import strategies as st

from bot.i18n import Catalogues
from handlers.flow import BY_ID, StepKind

CATALOGUES = Catalogues.load()
RECEIPT = re.compile(r"\b(\d{3})-(\d{3})-(\d{3})-(\d{3})\b")


# --- who types ----------------------------------------------------------------------------------


def marker(index: int) -> str:
    """Typed by tipster ``index`` in front of free text; must never reach another tipster."""
    return f"qzm{index}q"


def is_clean_of_markers(text: str) -> bool:
    return "qzm" not in text.casefold()


# --- the words that work at every step (DESIGN §2), spellings varied ------------------------------

GLOBAL_WORDS: dict[str, tuple[str, ...]] = {
    "exit": ("exit", "quit", "quitter", "stop", "arret", "arrêt"),
    "help": ("help", "aide"),
    "lang": ("lang", "langue"),
    "back": ("back", "retour"),
    "skip": ("skip", "passer", "0"),
    "done": ("done", "fini"),
}
_ACCENTED = {"a": "à", "e": "é", "i": "î", "o": "ô", "u": "ù", "c": "ç"}
_WRAPS = (("", ""), ("", "!"), ("", "."), (" ", " "), ("\t", "\n"), ("« ", " »"), ("", "?!"), ("*", "*"))


def spell(word: str, case: int, accent: int, wrap: int) -> str:
    """``word`` as a person might type it: case changed, one letter accented, punctuation around.
    Every result still means the word (matching is case-, accent- and punctuation-insensitive)."""
    vowels = [i for i, c in enumerate(word) if c in _ACCENTED]
    if accent and vowels:
        i = vowels[(accent - 1) % len(vowels)]
        word = word[:i] + _ACCENTED[word[i]] + word[i + 1 :]
    word = (word.lower(), word.upper(), word.title(), "".join(c.upper() if i % 2 else c for i, c in enumerate(word)))[case % 4]
    before, after = _WRAPS[wrap % len(_WRAPS)]
    return f"{before}{word}{after}"


def spelled(kind: str) -> st.SearchStrategy[str]:
    return st.builds(spell, st.sampled_from(GLOBAL_WORDS[kind]), st.integers(0, 3), st.integers(0, 3), st.integers(0, len(_WRAPS) - 1))


def global_word() -> st.SearchStrategy[tuple[str, str]]:
    """(which word, as typed)."""
    return st.sampled_from(sorted(GLOBAL_WORDS)).flatmap(lambda kind: st.tuples(st.just(kind), spelled(kind)))


def spelled_from(kind: str, pick: int) -> str:
    """A deterministic spelling of a global word from one integer (for rules that draw integers)."""
    words = GLOBAL_WORDS[kind]
    return spell(words[pick % len(words)], pick // 7, pick // 29, pick // 113)


# --- odd input ------------------------------------------------------------------------------------

ODD_TEXTS: tuple[str, ...] = (
    "",
    "   ",
    "፩",  # ETHIOPIC DIGIT ONE: isdigit() but no decimal value
    "𐩀",  # KHAROSHTHI DIGIT ONE
    "①",
    "²",
    "١",  # ARABIC-INDIC DIGIT ONE (a real decimal digit)
    "२",  # DEVANAGARI DIGIT TWO
    "๓",  # THAI DIGIT THREE
    "１",
    "1️⃣",
    "🙂",
    "👍🏽",
    "🇨🇦🚨",
    "مرحبا، هناك فتاة في الفندق",
    "שלום",
    "\u202eevil\u202c",
    "\u200f1",
    "\x00\x07\x1b[31m",
    "\r\n",
    "\u2028\u2029",
    "\ufeff2",
    "\ufffe",
    "\uffff",
    "e\u0301",  # é decomposed
    "ﬁni",  # ligature
    "ＥＸＩＴ",  # full-width EXIT
    "/start",
    "/start 1",
    "/list",
    "ADD",
    "CHECK 123",
    "SUIVI 123-456-789-012",
    "null",
    "%s %(x)s {0} {receipt}",
    "<b>bold</b> &amp;",
    "quiter",  # a misspelling
    "-1",
    "99",
    "1 2",
)
_LONG_UNITS = ("a", "é", "🙂", "word ", "ة", "\u0301", "9")
_LONG_LENGTHS = (4000, 4096, 4097, 8200)


def long_text() -> st.SearchStrategy[str]:
    return st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(_LONG_UNITS), st.sampled_from(_LONG_LENGTHS))


PHRASES: tuple[str, ...] = (
    "hi",
    "Bonjour",
    "There is a girl locked in the motel on Main St every night",
    "Il y a des filles qui travaillent sans salaire au restaurant",
    "help me",
    "aidez-moi vite",
    "he is coming back",
    "A grey van, plate ABC 123, comes every night at 2",
    "I don't know",
    "je sais pas",
    "yes",
    "no",
    "oui",
    "non",
    "idk",
    "Motel on Main St",
    "Hôtel Le Riche, rue Sainte-Catherine, Montréal",
)

any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
free_text = st.one_of(
    st.sampled_from(PHRASES),
    st.sampled_from(ODD_TEXTS),
    any_text,
    long_text(),
).filter(is_clean_of_markers)


# --- valid answers for a step ---------------------------------------------------------------------

_FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}
_ARABIC_INDIC = {str(d): chr(0x0660 + d) for d in range(10)}
WHERE_TEXTS = ("Motel on Main St", "Hôtel Le Riche, rue Sainte-Catherine, Montréal", "Gare centrale", "near the school")
DETAILS_TEXTS = ("A grey van every night, plate ABC 123", "Deux filles, un homme armé", "Website: example.com/ads", "555-0134")


def step_answers(step_id: str) -> list[str]:
    """Everything that is a valid answer at a choice step: digits (several ways), labels in every
    language, yes/no words, and the skip words when the step may be skipped."""
    step = BY_ID[step_id]
    found: list[str] = []
    for option in step.options:
        v = option.value
        found += [v, f" {v} ", f"{v}.", f"#{v}", "".join(_FULL_WIDTH[c] for c in v), "".join(_ARABIC_INDIC[c] for c in v)]
        found += [CATALOGUES.text(language, option.label_key) for language in CATALOGUES.languages]
        if option.words:  # what people type for it, in every language's catalogue
            found += [entry for language in CATALOGUES.languages for entry in CATALOGUES.words(language, option.words)]
    if step.skippable:
        found += ["0", "skip", "SKIP", "passer", "Passer"]
    return list(dict.fromkeys(found))


def is_choice(step_id: str) -> bool:
    return BY_ID[step_id].kind is StepKind.CHOICE


def digits_of(receipt: str) -> str:
    return re.sub(r"\D", "", receipt)


def other_script(receipt: str) -> str:
    return "".join(_FULL_WIDTH.get(c, c) for c in receipt)


def receipts_in(text: str) -> list[str]:
    return ["-".join(m.groups()) for m in RECEIPT.finditer(text)]


# --- provider ids ---------------------------------------------------------------------------------


def provider_id(channel: str, n: int) -> str:
    """A Twilio MessageSid ("SM" + 32 hex) or a Telegram update id, unique per message."""
    if channel == "sms":
        return f"SM{(n * 0x9E3779B97F4A7C15 + 0x1234) % 16**32:032x}"
    return str(700_000_000 + n)


# --- contained crashes ----------------------------------------------------------------------------


class EngineLog(logging.Handler):
    """Collects ERROR records of the engine (a contained crash logs one, with its frames)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


_CRASH_CLASSES: dict[str, type[AssertionError]] = {}
_TYPE = re.compile(r"\((\w+)\)")
_FRAME = re.compile(r"(\S+?\.py):(\d+) in (\S+)")


def _relative(path: str) -> str:
    found = re.search(r"(?:^|/)((?:handlers|bot|storage|tests)/[^/].*)$", path)
    return found.group(1) if found else path


def contained_crash(messages: list[str]) -> type[AssertionError]:
    """An AssertionError subclass named after where the contained exception happened, so that
    Hypothesis reports each distinct crash separately (it tells failures apart by type and line)."""
    text = "\n".join(messages)
    kind = _TYPE.search(text)
    frames = [(_relative(path), line, name) for path, line, name in _FRAME.findall(text)]
    own = [f for f in frames if f[0].startswith(("handlers/", "bot/", "storage/"))]
    where = own[-1] if own else (frames[-1] if frames else ("?", "?", "?"))
    signature = f"{kind.group(1) if kind else 'failure'} at {where[0]}:{where[1]} in {where[2]}"
    if signature not in _CRASH_CLASSES:
        _CRASH_CLASSES[signature] = type(f"ContainedCrash[{signature}]", (AssertionError,), {})
    return _CRASH_CLASSES[signature]


def preview(text: str, size: int = 60) -> str:
    shown = text if len(text) <= size else f"{text[:size]}…(+{len(text) - size} chars)"
    return repr(unicodedata.normalize("NFC", shown))


# --- the catalogue's own words (issue 10): danger phrases, misspelt exits -------------------------


def _catalogue_words(key: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(entry for language in CATALOGUES.languages for entry in CATALOGUES.words(language, key)))


DANGER_PHRASES: tuple[str, ...] = _catalogue_words("words.danger") + _catalogue_words("words.danger_alone")
_DANGER_WRAPS = ("{}", "{}!!", "{} please", "PLEASE {}", "{} 🙏")


def danger_text(pick: int) -> str:
    """A danger phrase of any locale, as typed in a hurry (case, punctuation, a word around it)."""
    phrase = DANGER_PHRASES[pick % len(DANGER_PHRASES)]
    phrase = (phrase, phrase.upper(), phrase.capitalize())[(pick // 101) % 3]
    return _DANGER_WRAPS[(pick // 307) % len(_DANGER_WRAPS)].format(phrase)


def _every_entry() -> set[str]:
    keys = {key for language in CATALOGUES.languages for key in CATALOGUES.messages[language] if key.startswith("words.")}
    return {fold_word(entry) for key in keys for entry in _catalogue_words(key)}


def fold_word(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _typos(word: str) -> list[str]:
    """One edit away, first letter kept: two neighbours swapped, or one letter dropped (a word of
    4-5 letters, or longer)."""
    found = [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, len(word) - 1) if word[i] != word[i + 1]]
    found += [word[:i] + word[i + 1 :] for i in range(1, len(word))] if len(word) >= 5 else []
    return found


def _exit_typos() -> tuple[str, ...]:
    known = _every_entry()
    words = [entry for entry in _catalogue_words("words.exit") if entry.isalpha() and len(entry) >= 4]
    typos = {typo for word in words for typo in _typos(fold_word(word))}
    return tuple(sorted(typo for typo in typos if typo not in known))


EXIT_TYPOS: tuple[str, ...] = _exit_typos()
