"""The local console channel (``python main.py chat``): lines from standard input, replies on
standard output, officer alerts on standard error, clearly marked as the officer side.

One local sender ("console" | "local"), so running ``chat`` again on the same data directory
resumes an unfinished draft.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from bot.alerting import AlertComposer
from bot.engine import Engine
from bot.messages import InboundKind, InboundMessage, OutboundMessage
from storage.crypto import Cipher
from storage.records import OutboxItem

CHANNEL = "console"
LOCAL_ID = "local"
OFFICER_PREFIX = "/"  # in the local console, a line starting with / is an officer command


class ConsoleSink:
    """Officer alerts (and notices, which name no tip) for local use: printed, framed, on standard error."""

    in_order = True  # a case's alerts in the order they were raised (bot.outbox lanes)

    def __init__(self, composer: AlertComposer, stream: TextIO | None = None) -> None:
        self.composer = composer
        self.stream = stream

    async def deliver(self, item: OutboxItem, target: str) -> None:
        alert = await self.composer.compose(item)
        if alert is None:
            return
        stream = self.stream or sys.stderr
        body = "\n".join(f"  | {line}" for line in alert.text.splitlines())
        title = "OFFICER ALERT -" if alert.tip is not None else "OFFICER NOTICE "  # a notice is about the service, not a tip
        stream.write(f"\n  +-- {title}---------------------------\n{body}\n  +---------------------------------------------\n\n")
        stream.flush()


class ConsoleChannel:
    """The tipster and, for lines starting with "/", the officer, in one local terminal."""

    def __init__(self, engine: Engine, cipher: Cipher, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.engine = engine
        self.cipher = cipher
        self.officer = cipher.pseudonym("officer-console", LOCAL_ID)  # an officer: the fixed pepper
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = self.stdin.isatty()

    def _print(self, replies: list[OutboundMessage]) -> None:
        for reply in replies:
            self.stdout.write(reply.text + "\n\n")
            if reply.pictures:  # a terminal shows no picture: where to see them instead
                self.stdout.write(f"({len(reply.pictures)} pictures: python main.py tips export --media DIR writes them out)\n\n")
        self.stdout.flush()

    async def run(self) -> None:
        """Talk until end of input (Ctrl-D, or the end of a pipe)."""
        names = self.cipher.tipster_pseudonyms(CHANNEL, LOCAL_ID)
        start = InboundMessage(CHANNEL, names.current, kind=InboundKind.START, earlier_sender=names.previous)
        self._print(await self.engine.open_conversation(start))
        while True:
            if self.interactive:
                self.stdout.write("> ")
                self.stdout.flush()
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                return
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if not self.interactive:
                self.stdout.write(f"> {line}\n")
            officer = self.officer if line.startswith(OFFICER_PREFIX) else None
            names = self.cipher.tipster_pseudonyms(CHANNEL, LOCAL_ID)  # per line: the epoch may change
            message = InboundMessage(
                CHANNEL, names.current, line, reply_address=LOCAL_ID, officer=officer, earlier_sender=names.previous
            )
            self._print(await self.engine.handle(message))

    async def send_to_tipster(self, address: str, text: str) -> None:
        """An officer's reply to a tip made in this console."""
        self.stdout.write(f"{text}\n\n")
        self.stdout.flush()
