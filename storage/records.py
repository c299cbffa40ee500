"""Plain records that cross the storage interface (decrypted, in memory only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class TipStatus(str, Enum):
    IN_PROGRESS = "in_progress"  # urgent alert sent while the person is still answering
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"  # the person erased it after an urgent alert had gone out


OPEN_STATUSES = (TipStatus.IN_PROGRESS, TipStatus.OPEN, TipStatus.ACKNOWLEDGED)


class OutboxStatus(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # gave up after the configured number of attempts


@dataclass
class Draft:
    sender: str
    state: dict[str, Any]
    updated_at: float
    expires_at: float


@dataclass
class Tip:
    id: str
    case_number: str
    status: TipStatus
    sender: str
    channel: str
    language: str
    created_at: float
    updated_at: float
    answers: dict[str, Any] = field(default_factory=dict)
    urgent: bool = False
    minor: bool = False
    complete: bool = True
    contact_ok: bool = False
    receipt_hash: str | None = None
    # The address to reply to (phone number, chat id): only with consent; never logged.
    contact_address: str | None = field(default=None, repr=False)
    closed_at: float | None = None
    close_reason: str | None = None
    # Read back with plain columns (case, flags, receipt hash, state…) that no longer match the
    # row's keyed seal: someone edited the database file. Shown flagged; never found by a receipt.
    altered: bool = False


@dataclass
class Followup:
    id: str
    tip_id: str
    author: str  # "tipster" or "officer"
    text: str = field(repr=False)
    created_at: float
    read_at: float | None = None  # officer replies: when the tipster read them (CHECK or delivery)


@dataclass
class OutboxItem:
    id: str
    sink: str  # "console", "telegram:<chat id>", "sms:<pseudonym>", "tipster", "twilio-redact"
    payload: dict[str, Any] | None  # None: the row did not open (its sink or payload was edited)
    status: OutboxStatus
    attempts: int
    next_at: float
    created_at: float
    priority: int = 0  # higher goes first (urgent alerts)
    delivered_at: float | None = None
    last_error: str | None = None


@dataclass
class OutboxEntry:
    """An outbox row as the operator sees it (``python main.py outbox``, ``/healthz``): everything
    but the payload, which is never read (nor decrypted) to build it."""

    id: str
    sink: str
    status: OutboxStatus
    priority: int
    attempts: int
    next_at: float
    created_at: float
    last_error: str | None = None
    # Pending because its target cannot be reached until someone fixes it (the bot was removed
    # from the officer group): retried on a slow schedule, never given up.
    unreachable: bool = False


@dataclass
class AuditEntry:
    seq: int
    at: float
    officer: str
    tip_id: str
    action: str
    prev_hash: str
    hash: str

    def record(self) -> str:
        return f"{self.seq}|{self.at!r}|{self.officer}|{self.tip_id}|{self.action}"
