"""What a handler gets for one inbound message: the message, the time, the open transaction,
the catalogues and the conversation settings; and where it puts its replies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.i18n import Catalogues
from bot.messages import Choice, InboundMessage, OutboundMessage, Purpose
from storage.interfaces import Repositories


@dataclass(frozen=True)
class ConversationConfig:
    draft_timeout_seconds: float = 30 * 60
    support_line: str | None = None  # None: the catalogue's default hotline
    alert_sinks: tuple[str, ...] = ("console",)
    max_text_chars: int = 2000  # one answer or one details message
    max_details_messages: int = 50
    receipt_failures_allowed: int = 5  # per sender per hour, then a lock-out
    officer_language: str = "en"


@dataclass
class Turn:
    msg: InboundMessage
    now: float
    tx: Repositories
    catalogues: Catalogues
    config: ConversationConfig
    receipt_hash: Callable[[str], str]  # keyed hash of a receipt's digits
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

    def say_text(self, language: str, key: str, text: str, choices: tuple[Choice, ...] = (), purpose: Purpose = Purpose.PROMPT) -> None:
        self.replies.append(OutboundMessage(text, choices, purpose, key, language))
