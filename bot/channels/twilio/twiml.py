"""TwiML answers: a bot turn as one ``<Message>`` (split only past Twilio's limit), with the
characters XML cannot carry removed, and an optional status ``action`` so the reply can be deleted."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

from starlette.responses import Response

from bot.messages import OutboundMessage
from bot.sms_segments import split_for_twilio

# What XML 1.0 cannot carry at all (C0 controls other than tab, LF and CR; unpaired surrogates;
# U+FFFE and U+FFFF), plus Unicode's other noncharacters (U+FDD0-U+FDEF and the last two code
# points of every plane), which XML allows but no phone should be sent.
_NOT_XML = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane + 0xFFFE)}{chr(plane + 0xFFFF)}" for plane in range(0, 0x110000, 0x10000))
    + "]"
)


def xml_text(text: str) -> str:
    """``text`` without the characters that would make TwiML non-well-formed (or that are not
    text at all); everything else, accents, emoji and right-to-left scripts included, unchanged."""
    return _NOT_XML.sub("", text)


_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_EMPTY = _DECLARATION + "<Response />"


def render_twiml(replies: list[OutboundMessage], action: str | None = None) -> str:
    """A bot turn is ONE ``<Message>``: the phone buzzes and previews once, and shows the parts in
    order (separate SMS can arrive out of order); only a turn longer than Twilio accepts in one
    message is split, at lines or sentences. No reply gives an empty ``<Response />``.

    Written directly (what twilio's MessagingResponse writes, without building an element tree):
    every reply is passed through :func:`xml_text` and escaped, so the TwiML is always
    well-formed whatever a reply quotes (a tipster's text, an officer's reply)."""
    body = "\n\n".join(text for text in (xml_text(reply.text).strip() for reply in replies) if text)
    if not body:
        return _EMPTY
    # ``action``: Twilio posts this message's status there, so its copy can be deleted.
    opening = f"<Message action={quoteattr(xml_text(action))} method=\"POST\">" if action else "<Message>"
    messages = "".join(f"{opening}{escape(part)}</Message>" for part in split_for_twilio(body))
    return f"{_DECLARATION}<Response>{messages}</Response>"


def twiml_response(replies: list[OutboundMessage], action: str | None = None) -> Response:
    return Response(render_twiml(replies, action), media_type="application/xml")
