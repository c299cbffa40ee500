"""The connections ``serve`` accepts (security review F15, issue 16): uvicorn's h11 protocol with
the deadlines uvicorn lacks and a limit on open connections that holds under a flood, and uvicorn's
server with the accept batch that limit needs.

A reverse proxy should stand in front, but the server does not rely on it: a connection must send
complete request headers within ``TIPLINE_SERVER__HEADER_TIMEOUT_SECONDS``, an idle kept-alive
connection closes after ``…__KEEP_ALIVE_TIMEOUT_SECONDS`` (uvicorn's own timer), and at most
``…__CONCURRENCY_LIMIT`` connections stay open (kept below the open-files limit): a new one takes
the place of the one that has waited longest for its request, or, when every other one is busy
with a request, uvicorn answers it 503.

What these log is per connection, so a flood of connections would flood the log: it goes to the
``bot.connections`` logger, which ``bot.logs`` holds to one line a minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import weakref
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

connections_log = logging.getLogger(__name__)  # one line a minute (bot.logs.OncePerMinute)

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 22\r\nconnection: close\r\n\r\nrequest header timeout"
)
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\nconnection: close\r\n\r\nService Unavailable"
)
# Per server: its connections now waiting for request headers, longest-waiting first.
_WAITING: weakref.WeakKeyDictionary[object, dict[TimedH11Protocol, None]] = weakref.WeakKeyDictionary()


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
    * Connections: at uvicorn's ``limit_concurrency`` open connections (below the open-files
      limit), a new one closes the connection that has waited longest for its
      request headers (an idle or slow client; 503 if part of a request came), so a flood of idle
      connections can neither use up the descriptors nor keep a real request out. uvicorn only
      answers 503 to requests beyond its limit, and leaves silent connections open until accept
      fails for want of descriptors. When no other connection waits (all busy with requests), the
      new one stays and uvicorn answers it 503.

    A body the app does read is limited by :class:`BodyTimeout`. Use :func:`timed_protocol` to
    get a class with the deadlines set (uvicorn builds the protocol from ``Config.http``)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind: str | None = None  # "headers" or "unread body"
        self._waiting = _WAITING.setdefault(self.server_state, {})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_client()
        if self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency:
            self._make_room()

    def _make_room(self) -> None:
        victim = next((p for p in self._waiting if p is not self and not p.transport.is_closing()), None)
        if victim is None:
            return  # every other connection is busy with a request: uvicorn answers this one 503
        connections_log.warning("%d connections open (the limit): closed the one waiting longest for its request", len(self.connections))
        victim._close_waiting(_UNAVAILABLE)
        # Counted out now, not when its close completes: the next connection of a burst must not
        # close another one for the same place.
        self.connections.discard(victim)

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
        if kind == "headers":
            self._waiting[self] = None  # the newest wait goes last

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_kind = None, None
        self._waiting.pop(self, None)

    def _deadline_passed(self) -> None:
        kind = self._deadline_kind
        self._cancel_deadline()
        if self.transport.is_closing():
            return
        if kind == "headers":
            connections_log.info("closing a connection: request headers not received in time")
            self._close_waiting(_REQUEST_TIMEOUT)
        else:
            connections_log.info("closing a connection: the unread request body not received in time")
            self.transport.close()

    def _close_waiting(self, answer: bytes) -> None:
        """Close a connection waiting for request headers; when part of a request came, tell a slow
        but honest client why first (nothing was answered yet)."""
        self._cancel_deadline()
        if self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:
            self.transport.write(answer)
        self.transport.close()


def timed_protocol(header_timeout: float, body_timeout: float) -> type[TimedH11Protocol]:
    """A :class:`TimedH11Protocol` subclass with these deadlines, for ``uvicorn.Config(http=...)``."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout, "body_timeout": body_timeout})


# asyncio accepts up to ``backlog`` connections each time the listening socket is readable, before
# any protocol code runs: with uvicorn's 2,048 a flood would take every descriptor in one go (accept
# then fails with EMFILE and pauses a second at a time) before the connection limit could make room.
# So asyncio is given a small batch, and Server puts the kernel's queue of connections back to this.
ACCEPT_BATCH = 8
LISTEN_BACKLOG = 2048


class Server(uvicorn.Server):
    """uvicorn's server, its listening sockets with the kernel queue of LISTEN_BACKLOG connections
    (uvicorn set ACCEPT_BATCH there too: asyncio takes both from one ``backlog``)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for listening in server.sockets:
                # listen() again on a listening socket only changes its queue length (Linux, BSD).
                with socket.socket(fileno=os.dup(listening.fileno())) as same:
                    same.listen(LISTEN_BACKLOG)


def concurrency_below_open_files(configured: int, reserve: int = 64) -> int:
    """The most connections ``serve`` keeps open (uvicorn's ``limit_concurrency``), below the
    open-files limit less what the database, the providers' connections, the logs and the few
    connections accepted before the limit makes room (a couple of ACCEPT_BATCHes) need, so it
    always has a descriptor left to answer with."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - reserve))
