"""TwiML is always well-formed XML (security review F17): whatever a reply carries, including
U+FFFE/U+FFFF, unpaired surrogates, other noncharacters and C0 controls, ``render_twiml`` drops
what XML 1.0 cannot hold and keeps ordinary text (accents, emoji, right-to-left scripts) as it is."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.channels.twilio.twiml import render_twiml, xml_text
from bot.messages import OutboundMessage
from bot.sms_segments import split_for_twilio

NONCHARACTERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [chr(p + d) for p in range(0, 0x110000, 0x10000) for d in (0xFFFE, 0xFFFF)]
C0_NOT_XML = [chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)]
SURROGATES = [chr(c) for c in (0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xD83D, 0xDE00)]
FORBIDDEN = set(NONCHARACTERS + C0_NOT_XML + SURROGATES) | {chr(c) for c in range(0xD800, 0xE000)}

# Any code point at all (surrogates included), with the troublesome ones drawn often.
ANY_TEXT = st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(NONCHARACTERS + C0_NOT_XML + SURROGATES)), max_size=400)
# Text people write: letters (any script, RTL included), marks, digits, punctuation, symbols and
# emoji, spaces and line breaks; no controls, no unassigned or private-use code points.
ORDINARY = st.text(st.one_of(st.characters(categories=("L", "M", "N", "P", "S", "Zs")), st.sampled_from(["\n", " "])), min_size=1, max_size=400)
SAMPLES = [
    "Hôtel Étoile, près de la gare — ça se passe où ? « vite »",
    "A grey van 🚐 every night 👨‍👩‍👧 🇨🇦 ✋🏽",
    "שלום, המקום ברחוב הראשי",
    "مرحبا، في الفندق قرب المحطة",
    "Ω≈ç√∫ ½ ∞ § ¶ • ‰ — “quotes” ‘single’ … 中文 日本語 한국어",
]


def parsed(replies: list[OutboundMessage]) -> list[str]:
    root = ET.fromstring(render_twiml(replies))
    assert root.tag == "Response" and all(child.tag == "Message" for child in root)
    return [child.text or "" for child in root]


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY_TEXT, max_size=4))
def test_any_text_renders_well_formed_twiml_without_a_forbidden_character(texts: list[str]) -> None:
    messages = parsed([OutboundMessage(t) for t in texts])
    assert not FORBIDDEN & set("".join(messages))
    # Nothing else is lost: the messages are the cleaned text of the turn, as one message per
    # 1,600 characters at most.
    body = "\n\n".join(c for c in (xml_text(t).strip() for t in texts) if c)
    expected = split_for_twilio(body) if body else []
    assert messages == [m.replace("\r\n", "\n").replace("\r", "\n") for m in expected]  # XML reads CR as LF


@settings(max_examples=300, deadline=None)
@given(ORDINARY)
def test_ordinary_text_survives_unchanged(text: str) -> None:
    assert xml_text(text) == text
    assert parsed([OutboundMessage(text)]) == ([text.strip()] if text.strip() else [])


def test_known_troublemakers_are_dropped_and_everything_around_them_kept() -> None:
    text = "a\ufffeb\uffffc\ud800d\udfffe\ufdd0f\U0001fffeg\U0010ffffh\x00i\x08j\x0bk\x1fl\tm"
    (message,) = parsed([OutboundMessage(text)])
    assert message == "abcdefghijkl\tm"
    assert parsed([OutboundMessage("\ufffe\x01\ud800")]) == []  # nothing left: no empty <Message>
    for sample in SAMPLES:
        assert " ".join(parsed([OutboundMessage(sample)])).split() == sample.split()


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(ORDINARY | ANY_TEXT, max_size=3), action=st.sampled_from([None, "https://tips.example.org/sms/twilio/status", "https://x.example/s?a=1&b=<2>\"'"]))
def test_written_twiml_is_what_twilio_s_library_writes(texts: list[str], action: str | None) -> None:
    """The TwiML is written directly for speed; it must be byte for byte what twilio's
    MessagingResponse makes of the same parts."""
    from twilio.twiml.messaging_response import MessagingResponse

    replies = [OutboundMessage(t) for t in texts]
    reference = MessagingResponse()
    body = "\n\n".join(t for t in (xml_text(r.text).strip() for r in replies) if t)
    for part in split_for_twilio(body) if body else []:
        reference.message(part, action=action, method="POST") if action else reference.message(part)
    assert render_twiml(replies, action) == str(reference)
