"""``python main.py outbox``: what waits to be sent, and re-queuing what was given up.

The listing never shows content: rows are read without their payload (``OutboxRepository.listing``
does not even select it), so no alert text, reply or tipster address can reach the terminal. A row
is named by the first 8 characters of its id and by where it goes: an officer group's chat id is
shown (it is configuration), anything else only by its kind ("sms-officer", "tipster:sms").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bot.line import load_keyring
from bot.settings import Settings
from storage.crypto import Cipher
from storage.records import OutboxEntry, OutboxStatus
from storage.backends import open_store
from storage.interfaces import Store

SHOWN = (OutboxStatus.PENDING, OutboxStatus.DEAD)
ID_SHOWN = 8  # characters of a row id in the listing; ``outbox retry ID`` takes any prefix


def add_outbox_commands(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser("outbox", help="list pending and dead outbox rows (no content); retry dead ones")
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="pending and dead rows, urgent first (the default)")
    retry = actions.add_parser("retry", help="re-queue dead rows (all, or the one whose id starts with ID)")
    retry.add_argument("id", nargs="?", help="id of one dead row, as listed (any prefix that names one row)")


def sink_label(sink: str) -> str:
    """Where a row goes, as the listing names it: officer groups by chat id, the rest by kind."""
    prefix, _, target = sink.partition(":")
    if prefix == "telegram":
        return sink  # the officer group's chat id, from TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS
    if prefix == "sms":
        return "sms-officer"  # the target is a pseudonym of the officer's number
    if prefix == "tipster":
        return f"tipster:{target}"  # the target is the channel's name; the address is in the tip
    return prefix


def priority_label(priority: int) -> str:
    # handlers.alerts: urgent tips 2, tips about minors (and service notices) 1, the rest 0.
    return "urgent" if priority >= 2 else "minor" if priority == 1 else "normal"


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``: short enough for a column, exact enough to act on."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def next_try(entry: OutboxEntry, now: float) -> str:
    if entry.status is OutboxStatus.DEAD:
        return "never (dead)"
    if entry.next_at <= now:
        return "due now"
    return f"in {duration(entry.next_at - now)}"


def listing_lines(entries: list[OutboxEntry], now: float) -> list[str]:
    if not entries:
        return ["outbox: empty (nothing pending, nothing dead)"]
    rows = [("ID", "TO", "STATUS", "PRIORITY", "ATTEMPTS", "AGE", "NEXT TRY", "LAST ERROR")]
    for e in entries:
        status = "unreachable" if e.unreachable else e.status.value
        rows.append(
            (
                e.id[:ID_SHOWN], sink_label(e.sink), status, priority_label(e.priority), str(e.attempts),
                duration(now - e.created_at), next_try(e, now), e.last_error or "",
            )
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    pending = [e for e in entries if e.status is OutboxStatus.PENDING]
    waiting = sum(e.unreachable for e in pending)
    dead = len(entries) - len(pending)
    summary = f"{len(pending)} pending ({waiting} waiting on an unreachable target), {dead} dead"
    if dead:
        summary += "; re-queue the dead with: python main.py outbox retry"
    return [line.rstrip() for line in lines] + [summary]


async def run_outbox_command(settings: Settings, args: argparse.Namespace) -> int:
    cipher = Cipher(load_keyring(settings))
    store = await open_store(Path(settings.data_dir), cipher, settings.database)
    try:
        now = time.time()
        if args.action == "retry":
            return await _retry(store, args.id, now)
        for line in listing_lines(await store.outbox.listing(SHOWN), now):
            print(line)
        return 0
    finally:
        await store.close()


async def _retry(store: Store, id_prefix: str | None, now: float) -> int:
    """Dead rows become pending again: attempts back to 0, due now. Their last_error is kept (the
    listing still says why they died) until the next try replaces or clears it."""
    if id_prefix is not None:
        id_prefix = id_prefix.strip().lower()
        matches = [e for e in await store.outbox.listing((OutboxStatus.DEAD,)) if e.id.startswith(id_prefix)]
        if not id_prefix or not matches:
            print(f"tipline: no dead outbox row with id {id_prefix or '(empty)'} (see: python main.py outbox)", file=sys.stderr)
            return 1
        if len(matches) > 1:
            print(f"tipline: {len(matches)} dead rows start with {id_prefix}; give more of the id", file=sys.stderr)
            return 1
        id_prefix = matches[0].id
    async with store.transaction() as tx:
        count = await tx.outbox.requeue_dead(now, id_prefix)
    rows = "row" if count == 1 else "rows"
    print(f"outbox: {count} dead {rows} re-queued" + (" (a running server sends them within 30 seconds)" if count else ""))
    return 0
