"""What a channel module provides to the web app. A new channel is one module implementing this,
one line in ``registry.py``, and its tests: nothing in ``handlers/`` or ``storage/`` changes."""

from __future__ import annotations

from typing import Protocol

from starlette.routing import BaseRoute

from bot.outbox import Sink
from bot.runtime import Runtime


class Channel(Protocol):
    name: str

    def routes(self) -> list[BaseRoute]:
        """HTTP routes to mount in the app (webhooks)."""
        ...

    def sinks(self) -> dict[str, Sink]:
        """Outbox sinks this channel delivers (officer alerts, replies), by sink prefix.
        Called after ``start``."""
        ...

    def alert_targets(self) -> tuple[str, ...]:
        """Outbox sink names every officer alert goes to (e.g. "telegram:-100123"). Called after
        ``start``; never a phone number in clear (use a pseudonym and map it back in the sink)."""
        ...

    async def start(self, runtime: Runtime) -> None:
        """Begin work with the running system (register a webhook, start polling…)."""
        ...

    async def stop(self) -> None: ...
