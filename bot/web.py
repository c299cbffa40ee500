"""The Starlette app served by ``python main.py serve``: channel webhooks and ``/healthz``, and
the uvicorn configuration it is served with.

One lifespan owns every resource: the runtime (keys, database, engine, outbox worker, expiry
sweeper) and the channels, started in that order and stopped in reverse.

Slow and idle clients (security review F15). A reverse proxy should stand in front, but the server
does not rely on it: a connection must send complete request headers within
``TIPLINE_SERVER__HEADER_TIMEOUT_SECONDS`` (:class:`TimedH11Protocol`; uvicorn's own protocols
have no such timeout), a body must arrive within ``…__BODY_TIMEOUT_SECONDS`` once the app reads
it (:class:`BodyTimeout`, 408), an idle kept-alive connection closes after
``…__KEEP_ALIVE_TIMEOUT_SECONDS``, and beyond ``…__CONCURRENCY_LIMIT`` open connections uvicorn
answers 503. Bodies over 64 KB get 413 (:class:`BodyLimit`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from bot.channels.registry import build_channels
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
                log.info("request body not received within %.1fs: answered 408", self.timeout)
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


_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 22\r\nconnection: close\r\n\r\nrequest header timeout"
)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines on the client, which uvicorn lacks.

    * Headers: from the moment a connection opens, and again whenever it waits for its next
      request, the complete request headers must arrive within ``header_timeout`` seconds,
      however slowly they trickle in; otherwise the connection is closed (with a 408 when part of
      a request came). uvicorn's keep-alive timer still closes an idle kept-alive connection
      sooner.
    * Unread body: when the app has answered without reading the whole body (a 403 or 413 before
      the body), the client gets ``body_timeout`` seconds to finish sending it before the
      connection closes; uvicorn would otherwise wait for it as long as bytes keep coming.

    A body the app does read is limited by :class:`BodyTimeout`. Use :func:`timed_protocol` to
    get a class with the deadlines set (uvicorn builds the protocol from ``Config.http``)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind: str | None = None  # "headers" or "unread body"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_client()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_client()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_client()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _follow_client(self) -> None:
        """Arm, keep or cancel the deadline for what the connection now waits for."""
        if self.transport is None or self.transport.is_closing():
            self._cancel_deadline()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._ensure_deadline("headers", self.header_timeout)
        elif state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
            self._ensure_deadline("unread body", self.body_timeout)
        else:  # a request is in the app's hands (BodyTimeout limits its body), or the connection ends
            self._cancel_deadline()

    def _ensure_deadline(self, kind: str, seconds: float) -> None:
        if self._deadline_kind == kind:
            return  # a deadline runs from when the wait began, never restarted by more bytes
        self._cancel_deadline()
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_kind = None, None

    def _deadline_passed(self) -> None:
        kind, self._deadline, self._deadline_kind = self._deadline_kind, None, None
        if self.transport.is_closing():
            return
        if kind == "headers" and self.conn.trailing_data[0]:
            # Part of a request came: tell a slow but honest client why (nothing was answered yet).
            self.transport.write(_REQUEST_TIMEOUT)
        log.info("closing a connection: %s not received in time", "request headers" if kind == "headers" else "the unread request body")
        self.transport.close()


def timed_protocol(header_timeout: float, body_timeout: float) -> type[TimedH11Protocol]:
    """A :class:`TimedH11Protocol` subclass with these deadlines, for ``uvicorn.Config(http=...)``."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout, "body_timeout": body_timeout})


def server_config(settings: Settings, app: ASGIApp | None = None, **overrides: Any) -> uvicorn.Config:
    """How ``serve`` runs uvicorn: the app (``create_app(settings)`` unless given) with the
    server limits of ``TIPLINE_SERVER__*``. ``overrides`` go to ``uvicorn.Config`` (tests)."""
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


def concurrency_below_open_files(configured: int, reserve: int = 64) -> int:
    """Connections beyond which ``serve`` answers 503, kept below the open-files limit (less what
    the database, the providers' connections and the logs need), so it always has a descriptor
    left to answer with."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - reserve))


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
