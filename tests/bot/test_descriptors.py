"""Sockets and descriptors (issue 16, fault 5): the open-files limit is raised to the hard limit at
start, connections stay below it, and a line repeated per connection (accept failing for want of a
descriptor) is logged once a minute, not hundreds of thousands of times."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

from bot.logs import OncePerMinute, setup_logging


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512));"
        "from bot.cli import raise_open_files_limit; from bot.web import concurrency_below_open_files;"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], concurrency_below_open_files(10_000))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["512", "512", str(512 - 64)]


def test_connections_stay_below_a_low_limit() -> None:
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100));"
        "from bot.web import concurrency_below_open_files; print(concurrency_below_open_files(100))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert int(done.stdout) == 36  # 100 less the reserve: the server keeps a descriptor to answer with


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_accept_flood_is_one_line_a_minute() -> None:
    clock, out = Clock(), io.StringIO()
    handler = logging.StreamHandler(out)  # as setup_logging builds it, with a clock of ours
    handler.addFilter(OncePerMinute(clock=clock))
    flood, own, slow = logging.getLogger("asyncio"), logging.getLogger("bot.engine"), logging.getLogger("bot.connections")
    for logger in (flood, own, slow):
        logger.addHandler(handler)
    try:
        for _ in range(5000):  # EMFILE: asyncio retries accept every second, uvicorn logs per connection
            flood.error("socket.accept() out of system resource")
            slow.warning("%d connections open (the limit): closed the one waiting longest for its request", 100)  # per connection
            clock.now += 0.01
        own.warning("own line %d", 1)
        own.warning("own line %d", 1)  # Tipline's own lines are not held back
        clock.now += 61
        flood.error("socket.accept() out of system resource")
    finally:
        for logger in (flood, own, slow):
            logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    accept = [line for line in lines if "socket.accept()" in line]
    assert len(accept) == 2, len(accept)
    assert "4999 more like it in the last minute not logged" in accept[1]
    assert sum("own line 1" in line for line in lines) == 2
    assert sum("closed the one waiting longest" in line for line in lines) == 1


def test_setup_logging_installs_the_throttle() -> None:
    assert any(isinstance(f, OncePerMinute) for f in _fresh_handler().filters)


def _fresh_handler() -> logging.Handler:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        setup_logging("INFO", stream=io.StringIO())
        return root.handlers[0]
    finally:
        root.handlers[:], root.level = saved, level
