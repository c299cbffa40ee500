"""``serve``'s HTTP server against slow and idle clients (security review F15): Tipline's real app
served by uvicorn exactly as ``serve`` configures it (``bot.web.server_config``), on loopback in the
test's event loop, probed with raw sockets. Timeouts are shortened to half a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import uvicorn

from bot.settings import Settings
from bot.connections import Server
from bot.web import MAX_BODY_BYTES, server_config
from tests.conftest import set_up_line

TIMEOUT = 0.5  # seconds: header, body and keep-alive timeouts in these tests
SLACK = 0.6  # what a loaded test machine may add before a timer's close is seen
FORM = urlencode({"MessageSid": "SM" + "0" * 32, "From": "+15145550100", "Body": "hello"}).encode()


@dataclass
class Served:
    port: int
    server: uvicorn.Server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, raw: bytes) -> bytes:
        """One request on a fresh connection (with ``Connection: close``); the whole answer."""
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()


def get(path: str = "/healthz", close: bool = True) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: tips.example.org\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()


def post_head(length: int, *, signed: bool = True, path: str = "/sms/twilio") -> bytes:
    signature = "X-Twilio-Signature: not-checked-before-the-body\r\n" if signed else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: tips.example.org\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"{signature}Content-Length: {length}\r\n\r\n"
    ).encode()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


async def until_closed(reader: asyncio.StreamReader, started: float, limit: float = 5.0) -> tuple[float, bytes]:
    """(seconds from ``started`` until the server closed the connection, what it sent)."""
    received = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**server: object) -> Served:
        keys = tmp_path / "keys.json"
        limits = {"header_timeout_seconds": TIMEOUT, "body_timeout_seconds": TIMEOUT, "keep_alive_timeout_seconds": TIMEOUT, **server}
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            keys_file=keys,
            port=8080,  # replaced by port 0 below: the OS picks a free one
            public_url="https://tips.example.org",
            twilio={"account_sid": "AC" + "0" * 32, "auth_token": "tok", "from_number": "+15550001111"},
            server=limits,
        )
        set_up_line(settings)  # python main.py init, once
        config = server_config(settings, port=0, timeout_graceful_shutdown=1, log_level="warning")
        instance = Server(config)
        instance.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # older uvicorn
        task = asyncio.create_task(instance.serve())
        running.append((instance, task))
        while not instance.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return Served(instance.servers[0].sockets[0].getsockname()[1], instance)

    yield start
    for instance, task in running:
        instance.should_exit = True
        await task


async def test_normal_requests_work_also_kept_alive_and_a_big_body_still_gets_413(serve) -> None:
    served = await serve()
    assert status(await served.request(get())) == 200

    reader, writer = await served.connect()
    for _ in range(3):  # three requests on one kept-alive connection
        writer.write(get(close=False))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1])
        await reader.readexactly(length)
        assert status(head) == 200
    writer.close()

    # A whole form arrives in time: the webhook reads it (and refuses the made-up signature).
    assert status(await served.request(post_head(len(FORM)) + FORM)) == 403
    # Over 64 KB: declared, or streamed in chunks.
    assert status(await served.request(post_head(MAX_BODY_BYTES + 1))) == 413
    chunk = b"x" * 8192
    chunked = (
        b"POST /sms/twilio HTTP/1.1\r\nHost: tips.example.org\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"X-Twilio-Signature: s\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"2000\r\n" + chunk + b"\r\n") * 9 + b"0\r\n\r\n"
    )
    assert status(await served.request(chunked)) == 413


async def test_half_headers_and_silent_connections_are_closed_after_the_header_timeout(serve) -> None:
    """The review's probe, 40 half requests and 10 silent connections, at the default concurrency."""
    served = await serve()
    started = time.monotonic()
    half, silent = [], []
    for _ in range(40):
        reader, writer = await served.connect()
        writer.write(b"POST /sms/twilio HTTP/1.1\r\nHost: tips.example.org\r\nContent-Le")
        half.append((reader, writer))
    for _ in range(10):
        silent.append(await served.connect())

    results = await asyncio.gather(*(until_closed(r, started) for r, _ in half + silent))
    for _, writer in half + silent:
        writer.close()
    seconds = [s for s, _ in results]
    assert TIMEOUT - 0.05 <= min(seconds) and max(seconds) <= TIMEOUT + SLACK, seconds
    assert all(status(data) == 408 for data, in [(d,) for _, d in results[:40]])  # told why: part of a request came
    assert all(data == b"" for _, data in results[40:])  # a silent connection is just closed
    assert status(await served.request(get())) == 200  # and the server is as good as new


async def test_headers_trickling_in_do_not_extend_the_deadline(serve) -> None:
    served = await serve()
    reader, writer = await served.connect()
    started = time.monotonic()
    closed = asyncio.create_task(until_closed(reader, started))
    for byte in b"GET /healthz HTTP/1.1\r\nHost: tips.example.org\r\nX-Slow: " + b"a" * 100:
        if closed.done() or writer.is_closing():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    seconds, data = await closed
    writer.close()
    assert TIMEOUT - 0.05 <= seconds <= TIMEOUT + SLACK and status(data) == 408


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(serve) -> None:
    served = await serve(header_timeout_seconds=5.0, keep_alive_timeout_seconds=TIMEOUT)
    reader, writer = await served.connect()
    writer.write(get(close=False))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    answered = time.monotonic()
    seconds, _ = await until_closed(reader, answered)
    writer.close()
    assert status(head) == 200
    assert TIMEOUT - 0.05 <= seconds <= TIMEOUT + SLACK  # the keep-alive timeout, not the 5 s header one


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
async def test_a_body_that_does_not_arrive_in_time_gets_408_and_a_close(serve, trickle: bool) -> None:
    served = await serve(header_timeout_seconds=5.0)
    reader, writer = await served.connect()
    writer.write(post_head(len(FORM)) + FORM[:10])
    started = time.monotonic()
    closed = asyncio.create_task(until_closed(reader, started))
    for byte in FORM[10:] if trickle else b"":
        await asyncio.sleep(0.1)
        if closed.done():
            break
        try:
            writer.write(bytes([byte]))
        except ConnectionError:
            break
    seconds, data = await closed
    writer.close()
    assert status(data) == 408 and b"connection: close" in data.lower()
    assert TIMEOUT - 0.05 <= seconds <= TIMEOUT + SLACK


async def test_a_body_left_unread_after_an_early_answer_cannot_hold_the_connection(serve) -> None:
    """Without a signature the webhook answers 403 before reading the body; the client then has the
    body timeout to finish sending it, however it trickles."""
    served = await serve(header_timeout_seconds=5.0, keep_alive_timeout_seconds=5.0)
    reader, writer = await served.connect()
    writer.write(post_head(1000, signed=False))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    answered = time.monotonic()
    closed = asyncio.create_task(until_closed(reader, answered))
    for _ in range(40):
        await asyncio.sleep(0.05)
        if closed.done():
            break
        try:
            writer.write(b"x")
        except ConnectionError:
            break
    seconds, _ = await closed
    writer.close()
    assert status(head) == 403
    assert seconds <= TIMEOUT + SLACK


async def test_at_the_connection_limit_a_new_connection_takes_the_place_of_the_longest_waiting(serve) -> None:
    """A flood of idle connections cannot keep a request out, nor use up the descriptors: at the
    limit the connection that has waited longest for its request headers is closed."""
    served = await serve(concurrency_limit=5, header_timeout_seconds=5.0)
    waiting = []
    for _ in range(4):
        reader, writer = await served.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: tips")  # incomplete: these wait for their headers
        waiting.append((reader, writer))
        await asyncio.sleep(0.05)  # the server takes them in this order

    assert status(await served.request(get())) == 200  # the fifth connection: served at once
    seconds, data = await until_closed(waiting[0][0], time.monotonic(), limit=2)
    assert seconds < 1 and status(data) == 503  # the longest waiting gave its place, told why
    for reader, _ in waiting[1:]:
        assert not reader.at_eof()  # the others still wait for their headers
    reader, writer = await served.connect()  # a silent one: the places are all taken again
    waiting.append((reader, writer))
    await asyncio.sleep(0.05)
    assert status(await served.request(get())) == 200  # and the next request takes the second's place
    seconds, data = await until_closed(waiting[1][0], time.monotonic(), limit=2)
    assert seconds < 1 and status(data) == 503
    assert not reader.at_eof()  # not the newest's
    for _, writer in waiting:
        writer.close()
        await writer.wait_closed()


async def test_when_every_place_is_busy_with_a_request_the_server_answers_503(serve) -> None:
    served = await serve(concurrency_limit=5, header_timeout_seconds=5.0, body_timeout_seconds=5.0)
    busy = [await served.connect() for _ in range(4)]
    for _, writer in busy:
        writer.write(post_head(len(FORM)) + FORM[:10])  # the webhook reads these bodies: requests in progress
    await asyncio.sleep(0.2)

    answer = await served.request(get())
    assert status(answer) == 503 and answer.endswith(b"Service Unavailable")
    for reader, writer in busy:
        assert not reader.at_eof()  # a request in progress never gives its place
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.1)
    assert status(await served.request(get())) == 200  # places free again: served


def test_settings_name_the_server_limits_and_have_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None).server
    assert (defaults.header_timeout_seconds, defaults.body_timeout_seconds) == (10, 10)
    assert (defaults.keep_alive_timeout_seconds, defaults.concurrency_limit) == (5, 100)
    monkeypatch.setenv("TIPLINE_SERVER__HEADER_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("TIPLINE_SERVER__CONCURRENCY_LIMIT", "20")
    config = server_config(Settings(_env_file=None), app=lambda scope, receive, send: None)
    config.load()
    assert config.http_protocol_class.header_timeout == 3  # type: ignore[attr-defined]
    assert (config.limit_concurrency, config.timeout_keep_alive) == (20, 5)


def test_the_public_health_check_says_only_ok_and_the_details_need_the_token(make_settings) -> None:
    """What an outsider may learn from /healthz: whether the line works. How many alerts wait, or
    which channels run, is for the deployer (a bearer token), or `python main.py outbox`."""
    import httpx

    from bot.web import create_app
    from tests.conftest import HEALTH_HEADERS
    from tests.fakes.server import LoopbackServer

    with LoopbackServer(create_app(make_settings()), lifespan="on") as server, httpx.Client(base_url=server.url, timeout=10) as client:
        public = client.get("/healthz")
        assert public.status_code == 200 and public.json() == {"status": "ok"}
        assert client.get("/healthz/detail").status_code == 401
        assert client.get("/healthz/detail", headers={"Authorization": "Bearer wrong"}).status_code == 401
        detail = client.get("/healthz/detail", headers=HEALTH_HEADERS).json()
        assert detail["outbox"] == {"pending": 0, "dead": 0, "unreachable": 0} and detail["database"] is True
    unset = create_app(make_settings(server={"health_token": None}, data_dir=make_settings().data_dir.parent / "other"))
    with LoopbackServer(unset, lifespan="on") as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/healthz/detail", headers=HEALTH_HEADERS).status_code == 404  # not served at all
