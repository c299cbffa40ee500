"""SMS segment arithmetic: GSM-7 (160 characters, 153 per part when split) unless any character
is outside GSM-7, then UCS-2 (70, 67 per part). Extension characters (€ [ ] { } ~ ^ | \\) count
twice in GSM-7. Used to keep prompts within one segment and to split long replies."""

from __future__ import annotations

import re
from collections.abc import Callable

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def units(text: str) -> int:
    """Length in encoding units: GSM-7 septets, or UTF-16 code units for UCS-2."""
    if is_gsm7(text):
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


def single_limit(text: str) -> int:
    return 160 if is_gsm7(text) else 70


def segments(text: str) -> int:
    size = units(text)
    if size <= single_limit(text):
        return 1
    per_part = 153 if is_gsm7(text) else 67
    return -(-size // per_part)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[tuple[str, str]]:
    """(separator before it, sentence): lines keep their line breaks, sentences their spaces."""
    pieces = []
    for line_number, line in enumerate(text.split("\n")):
        for index, sentence in enumerate(s for s in _SENTENCE_END.split(line) if s.strip()):
            pieces.append(("\n" if index == 0 and line_number > 0 else " ", sentence))
    return pieces


TWILIO_MAX_CHARS = 1600  # what Twilio accepts in one message; the phone joins the segments


def split_for_sms(text: str) -> list[str]:
    """Split a long reply into messages that each fit one segment, at line or sentence
    boundaries where possible, at spaces otherwise. Short text comes back whole."""
    return split_to_fit(text, lambda part: segments(part) == 1, single_limit)


def split_for_twilio(text: str) -> list[str]:
    """One message, which the phone shows as one text however many segments it takes, unless it
    is longer than Twilio accepts: then as few messages as fit, cut at lines or sentences."""
    return split_to_fit(text, lambda part: len(part) <= TWILIO_MAX_CHARS, lambda word: TWILIO_MAX_CHARS)


def split_to_fit(text: str, fits: Callable[[str], bool], word_limit: Callable[[str], int]) -> list[str]:
    """Split ``text`` into parts that each ``fits``, at line or sentence boundaries where possible,
    at spaces otherwise; a single word too long for a part is cut (``word_limit`` characters)."""
    if fits(text):
        return [text]
    parts: list[str] = []
    current = ""
    for separator, sentence in _sentences(text):
        candidate = f"{current}{separator}{sentence}" if current else sentence
        if fits(candidate):
            current = candidate
            continue
        if current:
            parts.append(current)
        current = ""
        for word in sentence.split(" "):
            candidate = f"{current} {word}" if current else word
            if fits(candidate):
                current = candidate
                continue
            if current:
                parts.append(current)
            # A single word longer than a part (a long URL) is cut into pieces, never dropped.
            while not fits(word):
                cut = word_limit(word)
                while cut > 1 and not fits(word[:cut]):
                    cut -= 1  # GSM-7 extension characters count twice
                parts.append(word[:cut])
                word = word[cut:]
            current = word
    if current:
        parts.append(current)
    return parts
