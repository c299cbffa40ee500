"""Understanding what people type: answer synonyms, control words and danger phrases (DESIGN §2).

Words belong to the locales. Every word this module knows comes from a ``words.*`` list in the
catalogues (``Catalogues.words``: the ``msgstr`` split on "|"), so translators extend them; the code
holds list keys and rules only. Every locale has every list (``REQUIRED_LISTS``, checked by
``missing_lists``); each locale holds its own language's words, and the matcher consults all of
them, the person's language first.

Everything here is pure (no I/O) and bounded: linear in the length of the message.

How a message is read (``tokens``)
    Case and accents are folded as ``handlers.words.fold`` does (casefold, NFKD, combining marks
    dropped). Apostrophes are removed inside words ("don't" = "dont", "c'est" = "cest"); any other
    punctuation separates words ("aidez-moi" = "aidez moi", "n/a" = "n a"). Each symbol or emoji is
    a word of its own; variation selectors, skin tones and keycaps are dropped and an emoji ZWJ
    sequence counts as its first emoji ("🤷‍♀️" = "🤷", "1️⃣" = "1"). Runs of three or more of the
    same letter shrink to one ("yesss", "nooo", "heeelp"), and a word repeated in a row counts once
    ("no no no", "stop stop"). A message of punctuation only is one word ("???" = "?").
    List entries are read the same way, so an entry matches whatever folds to it.

``Vocabulary.answer(text, list_keys)`` — which offered answer a reply is
    ``list_keys`` are the offered answers *in option order* (so "one"/"1" means the first). Numbers
    count only for answer lists (``ANSWER_LISTS``) unless ``numbered=`` says otherwise; any other
    ``words.*`` list (e.g. one a caller adds for small talk) is read by rules 1 and 3 only.
    1. Exact: the whole reply is an entry of one offered list -> that list. A reply that is exactly an
       entry of some other answer list ("right now" at a yes/no question) -> None.
    2. A number alone (a decimal digit of any script, or a ``words.number.N`` entry) -> the N-th
       offered list, None when out of range.
    3. Only if the reply is short (at most ``SHORT_ANSWER`` words): at its start and at its end, the
       longest entry of any answer list found there. It counts when it belongs to an offered list
       (an entry of another list, e.g. "no idea" at a yes/no-only question, counts for nothing);
       one-letter entries ("y", "n") count only as whole replies; an entry at the end right after a
       ``words.negation`` entry ("not now", "pas maintenant") counts for nothing. Both ends agree on
       one list -> it ("yes he is here", "Oui svp", "me and my sister"); they disagree -> None.
    4. A number at the start or the end confirms the rest: "1 yes", "yes 1", "3 no idea" -> that
       answer; "1 no", "2 girls", "3 hours ago" -> None.
    Exact matches in any language win over tolerant ones; within each pass, the person's language
    goes first and the first language that reads anything decides.

``Vocabulary.control(text)`` — EXIT / DONE / HELP / BACK / SKIP / LANG, and how sure
    1. CERTAIN: the whole message is an entry of a control list ("EXIT.", "i want to stop", "c'est
       tout"), or every word of a short message is a one-word entry of the same control ("quit stop").
    2. UNSURE, for EXIT, DONE and LANG only, when the message is short: besides the matched entry it
       has at most ``CONTROL_EXTRA`` other words ("exit please", "je veux quiter", "near the bus
       stop"). EXIT and DONE also match one misspelt word: Damerau-Levenshtein (optimal string
       alignment, a transposition counts 1) within 1 of an entry of 4-5 letters and within 2 of an
       entry of 6 or more letters, same first letter, letters only ("exti", "quiter", "qiutter",
       "dne", "doen", "fnii", "finsihed"). Entries of 3 letters or fewer ("end", "bye", "fin"),
       digits, words that are themselves an entry of any list, and ``words.near_miss`` entries
       ("quite", "shop", "dont") are never fuzzy.
       When EXIT and DONE both match, the closer one wins, and DONE on a tie ("that's all, bye").
    3. HELP, BACK and SKIP are exact only: missing them costs nothing, while a false match would
       swallow an answer. "help" alone is HELP; "help me" is danger, never HELP.
    LANG comes from ``words.lang`` and every ``words.language.<code>``; with ``language`` given, a
    message that names the person's current language is HELP instead ("english" or "i don't
    understand" in the English conversation, "je comprends pas" in the French one; the same words
    in the other conversation are LANG). ``language_named`` says which language a message named.
    A long message is a control only if it is exactly an entry: "bus stop on main st" is not EXIT.

``Vocabulary.danger(text)`` — a danger phrase anywhere
    A ``words.danger`` entry appears as whole consecutive words anywhere in a message of any length
    ("help me", "he is coming back", "aidez-moi", "sos", "🆘"), or the message is a
    ``words.danger_alone`` entry with at most one other word ("911", "911 please", "vite", "hurry"):
    "911 Bank St, Ottawa" and "il est parti vite" are not danger. "help" alone and "I helped my
    neighbour" are not danger. Negation is not read: "he is coming back tomorrow" is danger (err
    towards URGENT).

Callers should check ``danger`` first ("send help", "je peux pas sortir" also contain a DONE or
EXIT word), act on a control only where it applies (DONE at a multi-message step, SKIP where a step
may be skipped; otherwise fall through to ``answer``: "none" is SKIP and also No), and confirm an
UNSURE one once instead of acting on it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from bot.i18n import DEFAULT_LANGUAGE, Catalogues

Phrase = tuple[str, ...]


class Control(str, Enum):
    """A control word. The values are those of ``handlers.words.Word``."""

    EXIT = "exit"
    DONE = "done"
    HELP = "help"
    BACK = "back"
    SKIP = "skip"
    LANG = "lang"


class Certainty(str, Enum):
    CERTAIN = "certain"  # an exact entry: act on it
    UNSURE = "unsure"  # misspelt, or inside a short phrase with other words: ask once


@dataclass(frozen=True)
class Reading:
    """What one message says, read once: a danger phrase, or else a control word (and how sure,
    and the language of its list when it is exactly an entry)."""

    text: str
    danger: bool = False
    control: Control | None = None
    certainty: Certainty | None = None
    language: str | None = None

    def is_(self, control: Control) -> bool:
        """The message is this control word for certain."""
        return self.control is control and self.certainty is Certainty.CERTAIN

    def maybe(self, control: Control) -> bool:
        """The message may be this control word (misspelt, or inside a short phrase)."""
        return self.control is control and self.certainty is Certainty.UNSURE


# Answers, by question. Each tuple is in option order.
YES, NO, DONT_KNOW = "words.yes", "words.no", "words.dont_know"
ROLE_AFFECTED, ROLE_WITNESS, ROLE_UNSAID = "words.role.affected", "words.role.witness", "words.role.unsaid"
KIND_SEXUAL, KIND_LABOUR, KIND_OTHER = "words.kind.sexual", "words.kind.labour", "words.kind.other"
WHEN_NOW, WHEN_TODAY, WHEN_WEEK, WHEN_EARLIER = "words.when.now", "words.when.today", "words.when.week", "words.when.earlier"
ANSWER_GROUPS: dict[str, tuple[str, ...]] = {
    "yes_no": (YES, NO, DONT_KNOW),
    "role": (ROLE_AFFECTED, ROLE_WITNESS, ROLE_UNSAID),
    "kind": (KIND_SEXUAL, KIND_LABOUR, KIND_OTHER),
    "when": (WHEN_NOW, WHEN_TODAY, WHEN_WEEK, WHEN_EARLIER),
}
ANSWER_LISTS: tuple[str, ...] = tuple(key for group in ANSWER_GROUPS.values() for key in group)
NUMBER_LISTS: tuple[str, ...] = tuple(f"words.number.{n}" for n in range(1, 5))
CONTROL_LISTS: dict[Control, str] = {control: f"words.{control.value}" for control in Control}
DANGER, DANGER_ALONE = "words.danger", "words.danger_alone"
NEGATION, NEAR_MISS = "words.negation", "words.near_miss"
# The first word of ADD / CHECK with a receipt; words that say what a message is.
ADD, CHECK = "words.add", "words.check"
GREETING, THANKS, NEW_REPORT, PLACE = "words.greeting", "words.thanks", "words.new_report", "words.place"
REVIEW_SEND, REVIEW_CHANGE = "words.review.send", "words.review.change"
LIST_PREFIX = "words."  # every word list's key starts with it
LANGUAGE_LIST_PREFIX = "words.language."  # + a language code: words that ask for that language
REQUIRED_LISTS: tuple[str, ...] = (
    *ANSWER_LISTS,
    *NUMBER_LISTS,
    *CONTROL_LISTS.values(),
    DANGER,
    DANGER_ALONE,
    NEGATION,
    NEAR_MISS,
    ADD,
    CHECK,
    GREETING,
    THANKS,
    NEW_REPORT,
    PLACE,
    REVIEW_SEND,
    REVIEW_CHANGE,
)

SHORT_ANSWER = 6  # words: a longer reply is an answer only when it is exactly an entry
CONTROL_EXTRA = 3  # other words allowed beside a control entry for an UNSURE match
DANGER_ALONE_EXTRA = 1  # other words allowed beside a words.danger_alone entry
_PRIORITY = (Control.EXIT, Control.DONE, Control.HELP, Control.BACK, Control.SKIP, Control.LANG)
_PHRASED = (Control.EXIT, Control.DONE, Control.LANG)  # may match inside a short phrase
_FUZZY = (Control.EXIT, Control.DONE)  # may match a misspelling


def required_lists(languages: Iterable[str]) -> tuple[str, ...]:
    """Every list each locale must have: ``REQUIRED_LISTS`` and one ``words.language.<code>`` per
    language (the words that ask for that language)."""
    return (*REQUIRED_LISTS, *(f"{LANGUAGE_LIST_PREFIX}{code}" for code in languages))


def missing_lists(catalogues: Catalogues) -> list[str]:
    """Required lists missing or empty in a locale (as ``Catalogues.problems`` words it)."""
    keys = required_lists(catalogues.languages)
    return [
        f"{language}: {key} is missing or empty"
        for language in catalogues.languages
        for key in keys
        if not any(tokens(entry) for entry in catalogues.words(language, key))
    ]


def max_distance(length: int) -> int:
    """How many edits a misspelling of an entry of ``length`` letters may have."""
    return 0 if length < 4 else 1 if length < 6 else 2


# --- reading a message ---------------------------------------------------------------------------

_APOSTROPHES = dict.fromkeys(map(ord, "'\u2019\u2018\u02bc`\u00b4\u2032"), None)
_ZWJ = re.compile("\u200d(.?)", re.DOTALL)
_INVISIBLE = re.compile(
    "[\ufe00-\ufe0f\u20e3\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\U0001f3fb-\U0001f3ff\U000e0000-\U000e007f]"
)
_PIECES = re.compile(r"[^\W_]+|[^\w\s]")
_LETTER_RUN = re.compile(r"([^\W\d_])\1{2,}")
_ANY_RUN = re.compile(r"(.)\1+", re.DOTALL)


def _zwj(match: re.Match[str]) -> str:
    """A zero-width joiner glues emoji together: keep the first one only. Elsewhere (scripts that use
    it between letters) only the joiner goes."""
    following = match.group(1)
    return "" if following and unicodedata.category(following).startswith("S") else following


def tokens(text: str) -> Phrase:
    """The words of a message, as every matcher here reads them (see the module docstring)."""
    text = _ZWJ.sub(_zwj, text.translate(_APOSTROPHES))
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = _INVISIBLE.sub("", "".join(c for c in decomposed if not unicodedata.combining(c)))
    words: list[str] = []
    punctuation: list[str] = []
    for piece in _PIECES.findall(bare):
        if piece[0].isalnum():
            words.append(_LETTER_RUN.sub(r"\1", piece))
        elif unicodedata.category(piece).startswith("S"):
            words.append(piece)
        elif unicodedata.category(piece).startswith("P"):
            punctuation.append(piece)
    if not words and punctuation:
        words.append(_ANY_RUN.sub(r"\1", "".join(punctuation)))
    return tuple(word for i, word in enumerate(words) if i == 0 or word != words[i - 1])


def _number(word: str) -> int | None:
    """The value of a word made of 1 to 3 decimal digits (of any script), else None."""
    if not 1 <= len(word) <= 3:
        return None
    digits = [unicodedata.decimal(char, None) for char in word]
    if any(d is None for d in digits):
        return None
    return int("".join(str(d) for d in digits))


def distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (Damerau-Levenshtein where an adjacent transposition counts
    1), or ``limit + 1`` as soon as it is known to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        before, previous = previous, current
    return min(previous[-1], limit + 1)


# --- the vocabulary ------------------------------------------------------------------------------

_NOTHING = object()  # a language read nothing in the message; the next language may try


class Vocabulary:
    """The word lists of every locale, read once. Immutable after construction."""

    def __init__(self, lists: dict[str, dict[str, frozenset[Phrase]]]) -> None:
        # language -> list key -> entries (as tokens)
        self.languages: tuple[str, ...] = tuple(sorted(lists, key=lambda code: (code != DEFAULT_LANGUAGE, code)))
        self._lists = lists
        language_keys = tuple(f"{LANGUAGE_LIST_PREFIX}{code}" for code in self.languages)
        self._control_keys: dict[Control, tuple[str, ...]] = {c: (CONTROL_LISTS[c],) for c in Control}
        self._control_keys[Control.LANG] = (CONTROL_LISTS[Control.LANG], *language_keys)
        # language -> entry -> the keys it belongs to
        self._keys_of: dict[str, dict[Phrase, frozenset[str]]] = {}
        for language, by_key in lists.items():
            index: dict[Phrase, set[str]] = {}
            for key, entries in by_key.items():
                for entry in entries:
                    index.setdefault(entry, set()).add(key)
            self._keys_of[language] = {entry: frozenset(keys) for entry, keys in index.items()}
        self._longest = max((len(e) for by_key in lists.values() for es in by_key.values() for e in es), default=1)
        self._all_single_words = frozenset(e[0] for by_key in lists.values() for es in by_key.values() for e in es if len(e) == 1)
        self._near_miss = frozenset(e[0] for by_key in lists.values() for e in by_key.get(NEAR_MISS, ()) if len(e) == 1)
        self._negations = frozenset(e for by_key in lists.values() for e in by_key.get(NEGATION, ()))
        self._fuzzy: tuple[tuple[str, Control], ...] = tuple(
            (entry[0], control)
            for control in _FUZZY
            for by_key in lists.values()
            for entry in by_key.get(CONTROL_LISTS[control], ())
            if len(entry) == 1 and entry[0].isalpha() and max_distance(len(entry[0]))
        )
        self._control_entries: dict[Control, frozenset[Phrase]] = {
            control: frozenset(e for by_key in lists.values() for key in keys for e in by_key.get(key, ()))
            for control, keys in self._control_keys.items()
        }
        self._language_entries: dict[str, frozenset[Phrase]] = {
            code: frozenset(e for by_key in lists.values() for e in by_key.get(key, ()))
            for code, key in zip(self.languages, language_keys, strict=True)
        }
        self._danger_starts: dict[str, tuple[Phrase, ...]] = {}
        for entry in {e for by_key in lists.values() for e in by_key.get(DANGER, ())}:
            self._danger_starts[entry[0]] = (*self._danger_starts.get(entry[0], ()), entry)
        self._danger_alone = frozenset(e for by_key in lists.values() for e in by_key.get(DANGER_ALONE, ()))
        def words_of(*keys: str) -> frozenset[str]:
            return frozenset(word for by_key in lists.values() for key in keys for e in by_key.get(key, ()) for word in e)

        small_talk_keys = (GREETING, THANKS, *language_keys)
        self._small_talk_words = words_of(*small_talk_keys)
        self._answer_words = words_of(*small_talk_keys, *ANSWER_LISTS, *NUMBER_LISTS, NEGATION, NEAR_MISS)

    @classmethod
    def from_catalogues(cls, catalogues: Catalogues) -> Vocabulary:
        """Every required list, and any other ``words.*`` list a catalogue has (``answer`` takes any
        list key)."""
        extra = {key for table in catalogues.messages.values() for key in table if key.startswith(LIST_PREFIX)}
        keys = (*required_lists(catalogues.languages), *sorted(extra - set(required_lists(catalogues.languages))))
        return cls(
            {
                language: {
                    key: frozenset(t for t in map(tokens, catalogues.words(language, key)) if t) for key in keys
                }
                for language in catalogues.languages
            }
        )

    def entries(self, language: str, key: str) -> frozenset[Phrase]:
        """One list of one language, as tokens (for tests and diagnostics)."""
        return self._lists.get(language, {}).get(key, frozenset())

    def _order(self, language: str | None) -> tuple[str, ...]:
        if language in self._lists:
            return (language, *(code for code in self.languages if code != language))
        return self.languages

    # --- answers ---

    def answer(
        self, text: str, list_keys: Sequence[str], language: str | None = None, *, numbered: bool | None = None
    ) -> str | None:
        """Which of ``list_keys`` (the offered answers, in option order) the reply means, or None.
        ``numbered``: do numbers ("2", "two", "1 yes") pick the N-th list? By default only when every
        key is an answer list (``ANSWER_LISTS``), i.e. the lists are a numbered question's options."""
        keys = tuple(list_keys)
        words = tokens(text)
        if not words or not keys:
            return None
        if numbered is None:
            numbered = set(keys) <= set(ANSWER_LISTS)
        if numbered and len(words) == 1 and (alone := _number(words[0])) is not None:
            return keys[alone - 1] if 1 <= alone <= len(keys) else None
        readers = (self._exact_answer, self._tolerant_answer) if numbered else (self._exact_words, self._ends)
        for tolerant, reading in enumerate(readers):
            if tolerant and len(words) > SHORT_ANSWER:
                return None
            for lang in self._order(language):
                found = reading(words, keys, lang)
                if found is not _NOTHING:
                    return found  # type: ignore[return-value]
        return None

    def _exact_answer(self, words: Phrase, keys: tuple[str, ...], lang: str) -> object:
        number = self._number_entry(words, lang)
        if number is not None:
            return keys[number - 1] if 1 <= number <= len(keys) else None
        return self._exact_words(words, keys, lang)

    def _exact_words(self, words: Phrase, keys: tuple[str, ...], lang: str) -> object:
        belongs = self._keys_of[lang].get(words, frozenset())
        offered = [key for key in keys if key in belongs]
        if len(offered) == 1:
            return offered[0]
        if offered or belongs & set(ANSWER_LISTS):
            return None  # in two offered lists, or an answer to another question
        return _NOTHING

    def _number_entry(self, words: Phrase, lang: str) -> int | None:
        if len(words) == 1 and (value := _number(words[0])) is not None:
            return value
        belongs = self._keys_of[lang].get(words, frozenset())
        values = {n for n, key in enumerate(NUMBER_LISTS, start=1) if key in belongs}
        return values.pop() if len(values) == 1 else None

    def _tolerant_answer(self, words: Phrase, keys: tuple[str, ...], lang: str) -> object:
        # A number at either end must agree with what the rest says.
        head = self._number_at(words, lang, start=True)
        tail = self._number_at(words, lang, start=False)
        if head or tail:
            values = {found[0] for found in (head, tail) if found}
            rest = words[head[1] if head else 0 : len(words) - (tail[1] if tail else 0)]
            if len(values) != 1:
                return None
            value = values.pop()
            expected = keys[value - 1] if 1 <= value <= len(keys) else None
            if expected is None:
                return None
            if not rest:
                return expected
            said = self._exact_words(rest, keys, lang)
            if said is _NOTHING:
                said = self._ends(rest, keys, lang)
            if said is _NOTHING:
                return _NOTHING
            return expected if said == expected else None
        return self._ends(words, keys, lang)

    def _number_at(self, words: Phrase, lang: str, *, start: bool) -> tuple[int, int] | None:
        """(value, length) of a number at the start or the end of a reply that has more than it."""
        for length in range(min(self._longest, len(words) - 1), 0, -1):
            part = words[:length] if start else words[-length:]
            value = self._number_entry(part, lang)
            if value is not None:
                return value, length
        return None

    def _ends(self, words: Phrase, keys: tuple[str, ...], lang: str) -> object:
        relevant = set(ANSWER_LISTS) | set(keys)
        found: set[str] = set()
        read = False
        for start in (True, False):
            for length in range(min(self._longest, len(words) - 1), 0, -1):
                part = words[:length] if start else words[-length:]
                if len(part) == 1 and len(part[0]) == 1 and part[0].isalpha():
                    continue  # "y", "n": whole replies only
                belongs = self._keys_of[lang].get(part, frozenset()) & relevant
                if not belongs:
                    continue
                read = True
                if not start and self._negated(words[: len(words) - length]):
                    break
                offered = [key for key in keys if key in belongs]
                if len(offered) > 1:
                    return None
                found.update(offered)
                break
        if len(found) == 1:
            return found.pop()
        return None if read else _NOTHING

    def _negated(self, before: Phrase) -> bool:
        return any(before[-length:] in self._negations for length in range(1, min(len(before), self._longest) + 1))

    # --- control words ---

    def control(self, text: str, language: str | None = None) -> tuple[Control, Certainty] | None:
        """The control word a message is, and how sure; None for anything else."""
        found = self._control(tokens(text))
        if found and found[0] is Control.LANG and language is not None and self.language_named(text) == language:
            return Control.HELP, found[1]
        return found

    def _control(self, words: Phrase) -> tuple[Control, Certainty] | None:
        if not words:
            return None
        for control in _PRIORITY:
            if words in self._control_entries[control]:
                return control, Certainty.CERTAIN
        if len(words) > self._longest + CONTROL_EXTRA:
            return None
        if len(words) <= 1 + CONTROL_EXTRA:
            per_word = [{c for c in _PRIORITY if (w,) in self._control_entries[c]} for w in words]
            if all(len(cs) == 1 for cs in per_word) and len({c for cs in per_word for c in cs}) == 1:
                return per_word[0].pop(), Certainty.CERTAIN
        scores: dict[Control, int] = {}
        for control in _PHRASED:
            score = self._phrased_score(words, control)
            if score is not None:
                scores[control] = score
        if not scores:
            return None
        if Control.EXIT in scores and Control.DONE in scores:
            best = Control.EXIT if scores[Control.EXIT] < scores[Control.DONE] else Control.DONE
        else:
            best = next(c for c in _PRIORITY if c in scores)
        return best, Certainty.UNSURE

    def _phrased_score(self, words: Phrase, control: Control) -> int | None:
        """0 when a short message contains an entry of ``control``, the edit distance when one of its
        words is a misspelt entry, None otherwise."""
        entries = self._control_entries[control]
        for length in range(min(self._longest, len(words)), 0, -1):
            if len(words) - length > CONTROL_EXTRA:
                break
            if any(words[i : i + length] in entries for i in range(len(words) - length + 1)):
                return 0
        if control not in _FUZZY or len(words) - 1 > CONTROL_EXTRA:
            return None
        best: int | None = None
        for word in words:
            if not word.isalpha() or word in self._all_single_words or word in self._near_miss:
                continue
            for entry, owner in self._fuzzy:
                if owner is not control or entry[0] != word[0]:
                    continue
                # A short word is one slip at most from an entry: "soir" is not "sortir" misspelt.
                limit = min(max_distance(len(entry)), max(1, max_distance(len(word))))
                d = distance(word, entry, limit)
                if d <= limit and (best is None or d < best):
                    best = d
        return best

    def language_named(self, text: str) -> str | None:
        """The language a message asks for ("french", "francais svp", "je parle pas anglais"), read
        like an UNSURE LANG (whole, or inside a short phrase). The longest entry found decides ("je
        parle pas anglais" names French although it contains "anglais"); None when none, or a tie."""
        words = tokens(text)
        if not words or len(words) > self._longest + CONTROL_EXTRA:
            return None
        longest: dict[str, int] = {}
        for code, entries in self._language_entries.items():
            for length in range(min(self._longest, len(words)), 0, -1):
                if len(words) - length > CONTROL_EXTRA:
                    break
                if any(words[i : i + length] in entries for i in range(len(words) - length + 1)):
                    longest[code] = length
                    break
        if not longest:
            return None
        best = max(longest.values())
        named = [code for code, length in longest.items() if length == best]
        return named[0] if len(named) == 1 else None

    def read(self, text: str, language: str | None = None) -> Reading:
        """Danger first ("send help" and "je peux pas sortir" also hold a DONE or EXIT word), then
        control words; ``language`` is the conversation's (for LANG naming it, which is HELP)."""
        if self.danger(text):
            return Reading(text, danger=True)
        found = self.control(text, language)
        if found is None:
            return Reading(text)
        control, certainty = found
        return Reading(text, control=control, certainty=certainty, language=self.is_entry(text, CONTROL_LISTS[control]))

    # --- what else a message says ---

    def mentions(self, text: str, key: str) -> bool:
        """Does an entry of the list ``key`` (any language) appear as whole consecutive words?"""
        words = tokens(text)
        entries = {e for by_key in self._lists.values() for e in by_key.get(key, ())}
        return any(words[i : i + len(e)] == e for e in entries for i in range(len(words) - len(e) + 1))

    def is_entry(self, text: str, key: str) -> str | None:
        """The language whose list ``key`` has the whole message as an entry ("quitter" in
        words.exit: "fr"), None when no list has it."""
        words = tokens(text)
        return next((lang for lang in self.languages if words and words in self._lists[lang].get(key, ())), None)

    def command(self, text: str) -> tuple[str, str, str] | None:
        """ADD / CHECK (words.add, words.check) as the first word: (list key, its language, the rest
        of the message as typed)."""
        first, _, rest = text.strip().partition(" ")
        for key in (ADD, CHECK):
            language = self.is_entry(first, key)
            if language is not None:
                return key, language, rest.strip()
        return None

    def without_greeting(self, text: str) -> Phrase:
        """The message's words, greetings left out (to tell "hi" from a first message with substance)."""
        greetings = {e[0] for by_key in self._lists.values() for e in by_key.get(GREETING, ()) if len(e) == 1}
        return tuple(w for w in tokens(text) if w not in greetings)

    def only_small_talk(self, text: str) -> bool:
        """Is every word of the message a word of a greeting, a thanks or a way of naming a
        language ("hi", "ok english please", "bonjour, en français")? Such a message has nothing in
        it for officers; any other word ("hi, the motel") makes it worth keeping."""
        words = tokens(text)
        return all(word in self._small_talk_words for word in words)

    def says_more_than_an_answer(self, text: str) -> bool:
        """Has the reply a word that is not part of any answer, number, greeting or thanks ("I
        don't know, he took my passport": yes; "1 yes please", "i dont know": no)? Such a reply
        picks an option and is kept as well."""
        return any(word not in self._answer_words and _number(word) is None for word in tokens(text))

    # --- danger ---

    def danger(self, text: str) -> bool:
        """Does the message carry a danger phrase (anywhere), or is it a danger word alone?"""
        words = tokens(text)
        if not words:
            return False
        for i, word in enumerate(words):
            for entry in self._danger_starts.get(word, ()):
                if words[i : i + len(entry)] == entry:
                    return True
        for length in range(min(self._longest, len(words)), 0, -1):
            if len(words) - length > DANGER_ALONE_EXTRA:
                break
            if words[:length] in self._danger_alone or words[-length:] in self._danger_alone:
                return True
        return False
