"""Logging that cannot leak: a filter on every handler masks what looks like a phone number, a
bot token or an e-mail address, and chatty third-party loggers (which print request URLs with
tokens, or request bodies) are held at WARNING. Tipline's own log lines name tips by case number
and senders by an 8-character pseudonym prefix, never by content."""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback

_PATTERNS = (
    (re.compile(r"bot\d{5,}:[A-Za-z0-9_-]{20,}"), "bot****"),  # Telegram token inside a URL
    (re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b"), "****"),  # a bare Telegram token
    (re.compile(r"\b(AC|SM|MM)[0-9a-fA-F]{32}\b"), r"\1****"),  # Twilio account / message sids
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "****@****"),
    (re.compile(r"(?<![\w-])\+?\d[\d ().-]{7,}\d(?![\w-])"), "****"),  # phone-like numbers
)
# Libraries that log URLs (with the bot token) or request bodies (with phone numbers) at INFO/DEBUG.
_QUIET = ("httpx", "httpcore", "telegram", "twilio", "twilio.http_client", "aiosqlite", "uvicorn.access", "hpack")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def exception_outline(exc: BaseException) -> str:
    """An exception as logs may show it: its class and where it happened, frame by frame, for it
    and whatever caused it, but never its message (``invalid literal for int(): '፩'`` quotes what
    somebody typed) nor the source line text."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(f"  {f.filename}:{f.lineno} in {f.name}\n" for f in traceback.extract_tb(current.__traceback__))
        parts.append(f"{type(current).__module__}.{type(current).__qualname__}\n{frames}")
        current = current.__cause__ or current.__context__
    return "caused by ".join(reversed(parts)).rstrip("\n")


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # By construction: a traceback is logged as an outline, whoever logs it (uvicorn too).
            record.exc_text = exception_outline(record.exc_info[1])
            record.exc_info = None
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# Loggers whose lines repeat per connection or per accept (out of file descriptors: "socket.accept()
# out of system resource", once a second per socket; a slow client's connection closed): a flood of
# them fills the disk.
_PER_CONNECTION = ("asyncio", "uvicorn.error", "bot.connections")
REPEAT_EVERY = 60.0


class OncePerMinute(logging.Filter):
    """The same line of a per-connection logger at most once a ``every`` seconds; the next one
    says how many were held back. Tipline's own lines are not touched."""

    def __init__(self, every: float = REPEAT_EVERY, clock=time.monotonic) -> None:
        super().__init__()
        self._every, self._clock = every, clock
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_PER_CONNECTION):
            return True
        key, now = (record.name, record.msg), self._clock()
        last, held = self._last.get(key, (None, 0))
        if last is not None and now - last < self._every:
            self._last[key] = (last, held + 1)
            return False
        self._last[key] = (now, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} ({held} more like it in the last minute not logged)", None
        return True


def setup_logging(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OncePerMinute())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
