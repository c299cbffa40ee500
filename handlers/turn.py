"""What a handler gets for one inbound message: the message, the time, the open transaction,
the catalogues and the conversation settings; and where it puts its replies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.i18n import Catalogues
from bot.messages import Choice, InboundMessage, OutboundMessage, Purpose
from bot.pictures import Received
from handlers.understanding import Vocabulary
from storage.interfaces import Repositories


@dataclass(frozen=True)
class ConversationConfig:
    draft_timeout_seconds: float = 30 * 60
    support_line: str | None = None  # None: the catalogue's default hotline
    alert_sinks: tuple[str, ...] = ("console",)
    update_sinks: tuple[str, ...] | None = None  # those of alert_sinks that take update alerts (None: all)
    # One answer or one details entry: a channel's own maximum (Telegram and WhatsApp allow 4,096);
    # a longer message is kept as several entries, never cut.
    max_text_chars: int = 4096
    max_details_messages: int = 50
    receipt_failures_allowed: int = 5  # per sender per hour, then a lock-out
    officer_language: str = "en"
    officer_timezone: str = "America/Toronto"  # IANA name; officers read local times
    answer_window_seconds: float = 30 * 60  # after CHECK showed an officer's reply, messages answer it
    after_receipt_seconds: float = 15 * 60  # after a receipt, "thanks" is small talk, not a new report
    urgent_alerts_per_hour: int = 3  # per sender; later urgent cases are filed, flagged, not alerted at once
    receipt_failures_global_per_hour: int = 200  # all senders together, then look-ups pause
    cached_reply_seconds: float = 2 * 3600  # replies kept for a provider's retry, then dropped
    pictures_per_report: int = 10  # 0: pictures are not kept at all
    picture_max_bytes: int = 10 * 1024 * 1024  # said to the person when a picture is refused for its size


@dataclass
class Turn:
    msg: InboundMessage
    now: float
    tx: Repositories
    catalogues: Catalogues
    config: ConversationConfig
    receipt_hash: Callable[[str], str]  # keyed hash of a receipt's digits
    vocabulary: Vocabulary  # the catalogues' word lists, read once
    # What became of the pictures the message carried (fetched and stripped before the transaction).
    pictures: tuple[Received, ...] = ()
    pictures_taken: bool = False  # set once they are kept or refused: a message's pictures go one place
    replies: list[OutboundMessage] = field(default_factory=list)
    alerts_queued: int = 0

    def text(self, language: str, key: str, **values: object) -> str:
        return self.catalogues.text(language, key, **values)

    def say(
        self,
        language: str,
        key: str,
        *,
        purpose: Purpose = Purpose.INFO,
        choices: tuple[Choice, ...] = (),
        **values: object,
    ) -> None:
        self.replies.append(OutboundMessage(self.text(language, key, **values), choices, purpose, key, language))

    def say_text(
        self,
        language: str,
        key: str,
        text: str,
        choices: tuple[Choice, ...] = (),
        purpose: Purpose = Purpose.PROMPT,
        pictures: tuple[str, ...] = (),
    ) -> None:
        self.replies.append(OutboundMessage(text, choices, purpose, key, language, pictures))
