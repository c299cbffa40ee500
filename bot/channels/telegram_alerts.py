"""Officer alerts in a Telegram group: the outbox sink under the prefix "telegram".

Alerts are sent as HTML so the title can be bold, which means every piece of text is escaped: an
alert can quote what a tipster typed (with ``full_details``), and "<a href=...>" typed into a tip
must reach officers as those characters, never as a link or formatting. Link previews are off so
a URL in a tip is not fetched by Telegram either.
"""

from __future__ import annotations

import html

from telegram import LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import ExtBot

from bot.alerting import AlertComposer
from bot.channels.telegram_limits import Retries, retry_seconds
from bot.channels.telegram_messages import split_text
from bot.outbox import DeliveryError
from storage.records import OutboxItem

SINK_PREFIX = "telegram"
# Telegram's 4096-character limit counts the text after HTML parsing (tags and escapes do not add
# to it), so pieces of 4000 plain characters fit with room to spare.
_PIECE_LIMIT = 4000


def alert_html(text: str) -> list[str]:
    """The alert as HTML pieces: first line bold, everything escaped, each piece within Telegram's limit."""
    pieces = split_text(text, _PIECE_LIMIT)
    rendered = []
    for index, piece in enumerate(pieces):
        if index == 0:
            title, _, rest = piece.partition("\n")
            body = f"<b>{html.escape(title)}</b>" + (f"\n{html.escape(rest)}" if rest else "")
        else:
            body = html.escape(piece)
        rendered.append(body)
    return rendered


def _reason(exc: TelegramError) -> str:
    # Telegram's descriptions name the problem ("chat not found"), never message content; the
    # reason is stored in the outbox row, so keep it short.
    return f"telegram {type(exc).__name__}: {exc.message}"[:200]


def delivery_error(exc: TelegramError) -> DeliveryError:
    """What the outbox should do about a failed send (alerts here, officers' replies to tipsters)."""
    if isinstance(exc, RetryAfter):
        return DeliveryError(_reason(exc), retry_after=retry_seconds(exc))
    if isinstance(exc, ChatMigrated):
        # The group became a supergroup: its id changed, and only the configuration can follow.
        return DeliveryError(
            f"telegram chat moved to {exc.new_chat_id}; update TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS", permanent=True
        )
    if isinstance(exc, (BadRequest, Forbidden, InvalidToken)):
        # Removed from the group, chat not found, blocked by the person, a token revoked: retrying
        # cannot help. (BadRequest is a NetworkError in PTB, so it is tested first.)
        return DeliveryError(_reason(exc), permanent=True)
    # NetworkError (TimedOut, Telegram's 5xx answers) and anything else: try again later.
    return DeliveryError(_reason(exc))


class TelegramAlertSink:
    def __init__(self, bot: ExtBot, composer: AlertComposer) -> None:
        self.bot = bot
        self.composer = composer

    async def deliver(self, item: OutboxItem, target: str) -> None:
        alert = await self.composer.compose(item)
        if alert is None:
            return  # the tip was purged: nothing left to say, and nothing to retry
        try:
            chat_id = int(target)
        except ValueError:
            raise DeliveryError("telegram target is not a chat id", permanent=True) from None
        try:
            for piece in alert_html(alert.text):
                await self.bot.send_message(
                    chat_id,
                    piece,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                    # No waiting inside the worker on a 429: the outbox reschedules the row.
                    rate_limit_args=Retries(0),
                )
        except TelegramError as exc:
            raise delivery_error(exc) from None
