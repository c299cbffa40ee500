"""A tiny round-robin HTTP dispatcher in front of several ``serve`` instances, as a load balancer
would stand in front of them: each request goes to the next instance in turn (so one sender's
consecutive messages land on different instances).

When an instance is down (connection refused) the request goes to the next one. When it dies with
the request in its hands (the connection drops before an answer), the same request, with the same
MessageSid or update_id, is sent to the next instance: what Twilio and Telegram do when a webhook
is not answered. Only when every instance fails for a while does the caller get a 502.

Run alone: ``python -m tests.fakes.dispatcher PORT http://127.0.0.1:8081 http://127.0.0.1:8082``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_FORWARDED = ("content-type", "x-twilio-signature", "x-telegram-bot-api-secret-token")
_ROUNDS = 20  # tries over all instances before giving up (an instance restarting takes a few seconds)


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._turn = itertools.count()
        self._client: httpx.AsyncClient | None = None
        self.retried = 0  # requests sent again because an instance dropped them
        self.served = {b: 0 for b in backends}
        # Serve it with its lifespan on (LoopbackServer(..., lifespan="on")): that opens the client.
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST"])], lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            self._client = client
            yield

    async def _forward(self, request: Request) -> Response:
        assert self._client is not None
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        start = next(self._turn)
        for attempt in range(len(self.backends) * _ROUNDS):
            backend = self.backends[(start + attempt) % len(self.backends)]
            try:
                answer = await self._client.request(request.method, backend + path, content=body, headers=headers)
            except httpx.ConnectError:
                pass  # not running: the next one
            except httpx.TransportError:
                self.retried += 1  # it died holding the request: the provider would send it again
            else:
                self.served[backend] += 1
                kept = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
                return Response(answer.content, status_code=answer.status_code, headers=kept)
            if (attempt + 1) % len(self.backends) == 0:
                await asyncio.sleep(0.25)
        return Response(b"no instance answered", status_code=502)


def main(argv: list[str]) -> None:
    import uvicorn

    port, *backends = argv
    uvicorn.run(RoundRobin(backends).app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
