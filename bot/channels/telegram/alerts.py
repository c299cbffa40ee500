"""Officer alerts in a Telegram group: the outbox sink under the prefix "telegram".

Alerts are sent as HTML so the title can be bold, which means every piece of text is escaped: an
alert can quote what a tipster typed (with ``full_details``), and "<a href=...>" typed into a tip
must reach officers as those characters, never as a link or formatting. Link previews are off so
a URL in a tip is not fetched by Telegram either. Each alert carries Acknowledge / Show buttons
(``officers``), labelled in the officers' language.

Flood limit and digest. Telegram takes about 20 messages a minute in one group. The outbox worker
hands this sink every row due for a group at once (``deliver_batch``, urgent rows first). While
the group's budget has room for all of them plus a small reserve, each alert goes as its own
message. Otherwise the alerts are merged into a digest: the same alert texts in the same order,
separated by a blank line, packed into as few messages as Telegram's 4096 characters allow. The
budget is read from the bot's FloodLimiter, which counts every message to the group (officers'
command answers too); the reserve keeps room for those answers and for the next digest. When even
the digest does not fit in what is left, what fits goes now and the rest is deferred (not failed)
until the window frees, by which time later alerts join the same digest. Nothing is dropped and no
alert is sent twice: rows are confirmed to the worker per message that went out.

A group that cannot be reached (the bot was removed from it, or the configured id names no chat:
``group_unreachable``) does not lose its alerts: the rows wait in the outbox as unreachable, tried
again every few minutes and at once when the group is heard from, and ``/healthz`` says so. An
officer's reply to a tipster who blocked the bot is given up instead (``delivery_error``).
"""

from __future__ import annotations

import html
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from telegram import LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import ExtBot

from bot.alerting import AlertComposer, ComposedAlert
from bot.channels.telegram.limits import FloodLimiter, Retries, retry_seconds
from bot.channels.telegram.messages import split_text
from bot.channels.telegram.officers import officer_keyboard
from bot.outbox import DeliveryError
from storage.records import OutboxItem

log = logging.getLogger(__name__)

SINK_PREFIX = "telegram"
# Telegram's 4096-character limit counts the text after HTML parsing (tags and escapes do not add
# to it), so pieces of 4000 plain characters fit with room to spare.
_PIECE_LIMIT = 4000
_SEPARATOR = "\n\n"  # between alerts of a digest (each alert's bold title starts its block)
# Messages of the group's budget that single alerts leave free: officers' answers to commands and
# the digest that follows a burst go out without waiting for the window.
DIGEST_RESERVE = 3
_MIN_DEFER = 0.1  # seconds; never a busy loop
# Cases whose first alert message is remembered, so later alerts about them reply to it.
_THREADS_KEPT = 2000


def _html_pieces(text: str) -> list[tuple[str, int]]:
    """(HTML, characters Telegram counts) for each piece of the alert: first line bold, all escaped."""
    rendered = []
    for index, piece in enumerate(split_text(text, _PIECE_LIMIT)):
        if index == 0:
            title, _, rest = piece.partition("\n")
            body = f"<b>{html.escape(title)}</b>" + (f"\n{html.escape(rest)}" if rest else "")
        else:
            body = html.escape(piece)
        rendered.append((body, len(piece)))
    return rendered


def alert_html(text: str) -> list[str]:
    """The alert as HTML pieces: first line bold, everything escaped, each piece within Telegram's limit."""
    return [body for body, _ in _html_pieces(text)]


def _reason(exc: TelegramError) -> str:
    # Telegram's descriptions name the problem ("chat not found"), never message content; the
    # reason is stored in the outbox row, so keep it short.
    return f"telegram {type(exc).__name__}: {exc.message}"[:200]


# The outbox row's last_error (shown by ``python main.py outbox``) while an officer group cannot
# be reached: what is wrong and what to do, in words; it names no chat and quotes no content.
GROUP_UNREACHABLE = (
    "telegram officer group unreachable (bot removed from the group or chat not found): "
    "add the bot back or fix TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS"
)


def group_unreachable(exc: TelegramError) -> bool:
    """Telegram says the officer group cannot be reached by this bot until a person acts: the bot
    was removed (kicked, left, the group deleted: 403 Forbidden), or the configured id names no chat
    the bot knows (400 "chat not found"). Other 400s (bad markup...) are this request's fault."""
    if isinstance(exc, Forbidden):
        return True
    return isinstance(exc, BadRequest) and "chat not found" in exc.message.lower()


def delivery_error(exc: TelegramError, delivered: Iterable[str] = (), *, officer_group: bool = False) -> DeliveryError:
    """What the outbox should do about a failed send. ``delivered``: rows of a batch that went out
    before the failure.

    ``officer_group``: the send was an alert to an officers' group. There a Forbidden or "chat not
    found" means the group must be fixed, and an urgent alert must still go out once it is: the rows
    wait as ``unreachable`` (never dead). To a tipster (an officer's reply) the same answer means
    the person blocked the bot or deleted the chat: permanent, as nothing on our side can fix it."""
    if isinstance(exc, RetryAfter):
        # Telegram's 429 says when to come back: waiting is not a failed attempt.
        return DeliveryError(_reason(exc), retry_after=retry_seconds(exc), deferred=True, delivered=delivered)
    if isinstance(exc, ChatMigrated):
        # The group became a supergroup: its id changed, and only the configuration can follow.
        return DeliveryError(
            f"telegram chat moved to {exc.new_chat_id}; update TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS", permanent=True, delivered=delivered
        )
    if officer_group and group_unreachable(exc):
        return DeliveryError(GROUP_UNREACHABLE, unreachable=True, delivered=delivered)
    if isinstance(exc, (BadRequest, Forbidden, InvalidToken)):
        # Blocked by the person, chat not found, a request Telegram will never accept, a token
        # revoked: retrying cannot help. (BadRequest is a NetworkError in PTB, so it is tested first.)
        return DeliveryError(_reason(exc), permanent=True, delivered=delivered)
    # NetworkError (TimedOut, Telegram's 5xx answers) and anything else: try again later.
    return DeliveryError(_reason(exc), delivered=delivered)


@dataclass
class _Message:
    """One Telegram message of a delivery: one alert (or a piece of a long one), or a digest."""

    parts: list[str] = field(default_factory=list)  # HTML blocks, joined by the separator
    size: int = 0  # characters Telegram counts
    completes: list[str] = field(default_factory=list)  # rows whose alert ends in this message
    cases: set[str] = field(default_factory=set)  # cases with text in this message
    open_end: bool = False  # the last alert in it continues in the next message
    pictures: bool = False  # an alert in it is about a case with pictures

    def add(self, body: str, size: int) -> None:
        self.size += size + (len(_SEPARATOR) if self.parts else 0)
        self.parts.append(body)


def plan_messages(alerts: list[tuple[OutboxItem, ComposedAlert]], *, merge: bool) -> list[_Message]:
    """The messages that carry ``alerts`` in order: one per alert piece, or (``merge``) as many
    alerts per message as fit within the limit."""
    messages: list[_Message] = []
    for item, alert in alerts:
        pieces = _html_pieces(alert.text)
        for index, (body, size) in enumerate(pieces):
            current = messages[-1] if messages else None
            # A long alert starts a message of its own, so the alerts before it can go without it.
            starts_long = index == 0 and len(pieces) > 1
            if not merge or current is None or starts_long or current.size + len(_SEPARATOR) + size > _PIECE_LIMIT:
                current = _Message()
                messages.append(current)
            current.add(body, size)
            if alert.tip is not None:  # a notice names no case (and so never gets case buttons)
                current.cases.add(alert.tip.case_number)
                current.pictures = current.pictures or alert.pictures > 0
            current.open_end = index < len(pieces) - 1
            if not current.open_end:
                current.completes.append(item.id)
    return messages


def fitting(plan: list[_Message], room: int) -> list[_Message]:
    """The messages that go now: at most ``room``, ending where an alert ends (so a long alert is
    never half sent and then sent again whole). With some room but too little for the first alert
    (a very long one), that alert goes whole so the queue still moves; the FloodLimiter spaces it."""
    if room <= 0:
        return []
    count = min(room, len(plan))
    while count > 0 and plan[count - 1].open_end:
        count -= 1
    if count == 0 and plan:
        count = 1
        while plan[count - 1].open_end:
            count += 1
    return plan[:count]


class TelegramAlertSink:
    in_order = True  # a case's URGENT never after its "New tip" (bot.outbox lanes)

    def __init__(self, bot: ExtBot, composer: AlertComposer, moved: dict[int, int] | None = None) -> None:
        self.bot = bot
        self.composer = composer
        # Officer groups that became supergroups: configured id -> the id Telegram moved them to.
        # Shared with the officer desk, so commands from the new group are answered too.
        self.moved = moved if moved is not None else {}
        # (chat id, case) -> id of the first message about the case in that chat: an update, a
        # correction, an addition or an answer is sent as a reply to it, so the case reads as one
        # thread in order. Kept in memory: after a restart a case's next alert starts a new thread
        # (its headline still names the case).
        self._threads: OrderedDict[tuple[int, str], int] = OrderedDict()
        limiter = bot.rate_limiter
        self._limiter = limiter if isinstance(limiter, FloodLimiter) else None

    async def deliver(self, item: OutboxItem, target: str) -> None:
        await self.deliver_batch([item], target)

    def _room(self, chat_id: int) -> tuple[int, float]:
        return self._limiter.room(chat_id) if self._limiter is not None else (1 << 30, 0.0)

    async def deliver_batch(self, items: list[OutboxItem], target: str) -> None:
        try:
            chat_id = int(target)
        except ValueError:
            raise DeliveryError("telegram target is not a chat id", permanent=True) from None
        chat_id = self.moved.get(chat_id, chat_id)
        delivered: set[str] = set()
        alerts: list[tuple[OutboxItem, ComposedAlert]] = []
        for item in items:
            alert = await self.composer.compose(item)
            if alert is None:
                delivered.add(item.id)  # the tip was purged: nothing left to say, and nothing to retry
            else:
                alerts.append((item, alert))
        room, _ = self._room(chat_id)
        plan = plan_messages(alerts, merge=False)
        if len(plan) > room - DIGEST_RESERVE:
            plan = plan_messages(alerts, merge=True)
            if len(plan) < len(alerts):
                log.info("telegram: %d alerts for an officer group merged into %d messages (flood limit)", len(alerts), len(plan))
        now = fitting(plan, room)
        try:
            for message in now:
                await self._send(chat_id, message)
                delivered.update(message.completes)
        except TelegramError as exc:
            raise delivery_error(exc, delivered, officer_group=True) from None
        if len(now) < len(plan):
            _, wait = self._room(chat_id)
            raise DeliveryError("telegram group flood budget spent", retry_after=max(wait, _MIN_DEFER), deferred=True, delivered=delivered)

    async def _send(self, chat_id: int, message: _Message) -> None:
        # Buttons only under a message that ends exactly one alert and holds nothing else: a
        # digest's many cases would not fit one keyboard (officers type /show CASE there).
        markup = None
        if len(message.completes) == 1 and len(message.cases) == 1:
            (case,) = message.cases
            markup = officer_keyboard(self.composer.catalogues, self.composer.language, case, photos=message.pictures)
        try:
            await self._send_to(chat_id, message, markup)
        except ChatMigrated as exc:
            # The group became a supergroup: Telegram names its new id. Follow it now (urgent alerts
            # must not wait for a deployer) and say which setting to change so a restart follows too.
            self.moved[chat_id] = exc.new_chat_id
            log.error(
                "telegram officer group %s became a supergroup %s: alerts follow it; "
                "set TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS to the new id",
                chat_id, exc.new_chat_id,
            )  # fmt: skip
            await self._send_to(exc.new_chat_id, message, markup)

    async def _send_to(self, chat_id: int, message: _Message, markup: object) -> None:
        case = next(iter(message.cases)) if len(message.cases) == 1 else None
        first = self._threads.get((chat_id, case)) if case else None
        sent = await self.bot.send_message(
            chat_id,
            _SEPARATOR.join(message.parts),
            parse_mode=ParseMode.HTML,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
            reply_markup=markup,
            # Follow the case's first alert; if officers deleted it, send anyway.
            reply_parameters=ReplyParameters(first, allow_sending_without_reply=True) if first else None,
            # Members cannot forward an alert or save it out of the group.
            protect_content=True,
            # No waiting inside the worker on a 429: the outbox reschedules the row.
            rate_limit_args=Retries(0),
        )
        for named in message.cases:  # a digest starts the thread of every case it is the first to name
            if (chat_id, named) not in self._threads:
                self._threads[(chat_id, named)] = sent.message_id
                if len(self._threads) > _THREADS_KEPT:
                    self._threads.popitem(last=False)
