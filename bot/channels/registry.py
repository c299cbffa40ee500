"""The channels a deployment runs: each factory returns a channel, or None when not configured."""

from __future__ import annotations

from collections.abc import Callable

from bot.channels.telegram import channel as telegram
from bot.channels.twilio import channel as twilio_sms
from bot.channels.base import Channel
from bot.settings import Settings

ChannelFactory = Callable[[Settings], Channel | None]

# One line per channel.
FACTORIES: list[ChannelFactory] = [
    twilio_sms.build,
    telegram.build,
]


def build_channels(settings: Settings) -> list[Channel]:
    return [channel for factory in FACTORIES if (channel := factory(settings)) is not None]
