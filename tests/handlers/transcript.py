"""Conversation transcripts: "person says X → bot answers with keys K" scripts run through the engine."""

from __future__ import annotations

from dataclasses import dataclass

from bot.engine import Engine
from bot.messages import InboundKind, InboundMessage, OutboundMessage

OPEN = object()  # the console's "open the conversation" (no text)


@dataclass
class Talk:
    engine: Engine
    sender: str = "sender-under-test-0001"
    channel: str = "console"
    language_hint: str | None = None
    reply_address: str | None = None

    async def say(self, text: object) -> list[OutboundMessage]:
        if text is OPEN:
            msg = InboundMessage(self.channel, self.sender, kind=InboundKind.START, language_hint=self.language_hint)
            return await self.engine.open_conversation(msg)
        msg = InboundMessage(
            self.channel, self.sender, str(text), language_hint=self.language_hint, reply_address=self.reply_address
        )
        return await self.engine.handle(msg)


async def run_transcript(talk: Talk, script: list[tuple[object, list[str]]]) -> list[list[OutboundMessage]]:
    """Each line: what the person says, and the catalogue keys of the bot's replies, in order."""
    answers = []
    for said, expected in script:
        replies = await talk.say(said)
        assert [r.key for r in replies] == expected, f"after {said!r}: got {[r.key for r in replies]}"
        answers.append(replies)
    return answers
