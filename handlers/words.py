"""Text as it is kept and compared: cleaned of what is not text, folded for comparison, and the
option number a reply holds. The words people use live in the catalogues (``words.*`` lists, read
by ``handlers.understanding``); none are here.
"""

from __future__ import annotations

import re
import unicodedata

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
