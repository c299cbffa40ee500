"""The Starlette app served by ``python main.py serve``: channel webhooks and ``/healthz``, and
the uvicorn configuration it is served with.

One lifespan owns every resource: the runtime (keys, database, engine, outbox worker, expiry
sweeper) and the channels, started in that order and stopped in reverse.

Slow and idle clients (security review F15): a body must arrive within
``TIPLINE_SERVER__BODY_TIMEOUT_SECONDS`` once the app reads it (:class:`BodyTimeout`, 408), bodies
over 64 KB get 413 (:class:`BodyLimit`); the header, keep-alive and connection limits are the
connection protocol's (``bot.connections``), configured by :func:`server_config`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.channels.registry import build_channels
from bot.connections import ACCEPT_BATCH, concurrency_below_open_files, connections_log, timed_protocol
from bot.channels.telegram.channel import TelegramSetupError
from bot.health import WriteProbe, report
from bot.runtime import Runtime
from bot.settings import Settings
from handlers.flow import FlowError
from storage.crypto import KeyRingError
from storage.data_dir import DataDirBusy
from storage.opening import StorageError

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


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class BodyTimeout:
    """Answer 408 (and close) when a request body does not arrive within ``timeout`` seconds of
    the app starting to read it, whether it stalls or trickles in. The app then sees the client as
    gone (``http.disconnect``) and whatever it answers instead is dropped. Once the body is
    complete, later reads (waiting for a disconnect) are not limited."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        body_done = False
        timed_out = False
        started = False

        async def timed_receive() -> Message:
            nonlocal deadline, body_done, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.timeout
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                timed_out = True
                connections_log.info("request body not received within %.1fs: answered 408", self.timeout)
                if not started:
                    response = PlainTextResponse("request body timed out", status_code=408, headers={"connection": "close"})
                    await response(scope, _no_body, send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # the 408 went instead of this answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
            # The handler failed on the missing body (e.g. a ClientDisconnect): already answered.
            log.debug("handler raised after its request body timed out", exc_info=True)


def server_config(settings: Settings, app: ASGIApp | None = None, **overrides: Any) -> uvicorn.Config:
    """How ``serve`` runs uvicorn (with ``bot.connections.Server``): the app (``create_app(settings)`` unless
    given) with the server limits of ``TIPLINE_SERVER__*``. ``overrides`` go to ``uvicorn.Config``
    (tests)."""
    limits = settings.server
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # keep our handlers (with the redaction filter)
        "access_log": False,  # request lines add nothing an officer needs and could expose timing
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
        "http": timed_protocol(limits.header_timeout_seconds, limits.body_timeout_seconds),
        "ws": "none",  # no WebSocket endpoint: an upgrade request is an ordinary request
        "timeout_keep_alive": limits.keep_alive_timeout_seconds,
        "limit_concurrency": concurrency_below_open_files(limits.concurrency_limit),
        "backlog": ACCEPT_BATCH,  # the kernel's queue is LISTEN_BACKLOG (bot.connections.Server)
    }
    options.update(overrides)
    return uvicorn.Config(app if app is not None else create_app(settings), **options)


# Start-up refusals whose message says what to do: logged as one line, without the traceback
# uvicorn would print for a failed lifespan.
STARTUP_REFUSALS = (TelegramSetupError, StorageError, KeyRingError, DataDirBusy, FlowError)


class _QuietRefusals(logging.Filter):
    """Drops uvicorn's traceback of a start-up refusal (the refusal was logged in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Traceback") and any(f"{t.__module__}.{t.__name__}: " in text for t in STARTUP_REFUSALS))


def create_app(settings: Settings) -> Starlette:
    channels = build_channels(settings)
    state: dict[str, Runtime] = {}
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietRefusals) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(_QuietRefusals())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with _serving(app) as running:
                yield running
        except STARTUP_REFUSALS as exc:
            if "runtime" not in state:
                log.error("tipline cannot start: %s", exc)
            raise

    @asynccontextmanager
    async def _serving(app: Starlette) -> AsyncIterator[None]:
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

    probe = WriteProbe()

    async def health() -> tuple[dict[str, object], int]:
        """bot.health: "degraded" with the storage's reason (503) when the database does not take
        a write or tipsters' messages failed to store lately."""
        runtime = state.get("runtime")
        if runtime is None:
            return {"status": "unavailable", "database": False}, 503
        return await report(runtime.store, runtime.engine.storage, probe, [c.name for c in channels])

    async def healthz(request: Request) -> JSONResponse:
        """Public: only whether the service is well. How many alerts wait, which channels run, or
        why the storage fails tells an outsider how busy (or how stuck) the line is; that is on
        /healthz/detail. The status code says whether tips are taken (503 when not)."""
        found, status = await health()
        return JSONResponse({"status": found["status"]}, status_code=status)

    async def healthz_detail(request: Request) -> JSONResponse:
        token = settings.server.health_token
        if token is None:
            return JSONResponse({"error": "not enabled: set TIPLINE_SERVER__HEALTH_TOKEN"}, status_code=404)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        found, status = await health()
        return JSONResponse(found, status_code=status)

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/healthz/detail", healthz_detail, methods=["GET"])]
    for channel in channels:
        routes.extend(channel.routes())
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimit)
    app.add_middleware(BodyTimeout, timeout=settings.server.body_timeout_seconds)  # outermost: it sees the raw receive
    return app
