"""The Starlette app served by ``python main.py serve``: channel webhooks and ``/healthz``.

One lifespan owns every resource: the runtime (keys, database, engine, outbox worker, expiry
sweeper) and the channels, started in that order and stopped in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.channels.registry import build_channels
from bot.runtime import Runtime
from bot.settings import Settings
from storage.records import OutboxStatus

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # Twilio and Telegram payloads are a few KB


class BodyLimit:
    """Answer 413 to a request body over the limit, whether it declares its length or streams."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(settings: Settings) -> Starlette:
    channels = build_channels(settings)
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings)
        started = []
        try:
            for channel in channels:
                await channel.start(runtime)
                started.append(channel)
            sinks = {k: v for channel in channels for k, v in channel.sinks().items()}
            targets = tuple(t for channel in channels for t in channel.alert_targets())
            if not targets:
                log.warning("no officer channel is configured: alerts are printed on this console")
            runtime.route_alerts(sinks, targets)
            runtime.start_background(retention=True)
            state["runtime"] = runtime
            app.state.runtime = runtime
            log.info("serving channels: %s", ", ".join(c.name for c in channels) or "none")
            yield
        finally:
            # Reverse order: the worker stops sending before the channels it sends through close.
            await runtime.stop_background()
            for channel in reversed(started):
                await channel.stop()
            await runtime.close()

    async def healthz(request: Request) -> JSONResponse:
        runtime = state.get("runtime")
        if runtime is None or not await runtime.store.healthy():
            return JSONResponse({"status": "unavailable", "database": False}, status_code=503)
        counts = await runtime.store.outbox.counts()
        dead = counts[OutboxStatus.DEAD]
        return JSONResponse(
            {
                "status": "degraded" if dead else "ok",
                "database": True,
                "schema": await runtime.store.schema_version(),
                "channels": [c.name for c in channels],
                "outbox": {"pending": counts[OutboxStatus.PENDING], "dead": dead},
            }
        )

    routes = [Route("/healthz", healthz, methods=["GET"])]
    for channel in channels:
        routes.extend(channel.routes())
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimit)
    return app
