"""Run any ASGI app on a loopback port in a background thread, for tests.

Tests talk to fakes over real TCP so that real clients (python-telegram-bot,
httpx) exercise their full HTTP stack.  The server gets its own event loop in
its own thread, so it keeps serving while the test's event loop is busy
awaiting the client - there is no deadlock between the two.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


class LoopbackServer:
    """Serve ``app`` on ``127.0.0.1`` with uvicorn in a daemon thread.

    >>> with LoopbackServer(app) as server:
    ...     httpx.get(f"{server.url}/health")
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
        lifespan: str = "off",
    ) -> None:
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,  # 0: the OS picks a free port; we read it back after bind
            log_level="warning",
            # None: do not let uvicorn call logging.config.dictConfig(), which
            # would reconfigure process-global logging under pytest's feet.
            log_config=None,
            access_log=False,
            lifespan=lifespan,  # "on" to run an app's lifespan (Tipline's own app under test)
            loop="asyncio",  # deterministic, no uvloop/httptools surprises
            http="h11",
            ws="none",
            # A request still in flight (e.g. a getUpdates long-poll) must not
            # hold stop() hostage for long.
            timeout_graceful_shutdown=2,
        )
        self._host = host
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LoopbackServer:
        """Start serving; block until the socket is accepting connections."""
        if self._thread is not None:
            raise RuntimeError("LoopbackServer already started")
        self._server = uvicorn.Server(self._config)
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name="loopback-uvicorn", daemon=True
        )
        self._thread.start()

        # uvicorn flips `started` only after the listening socket exists, so
        # once it is True a connect() cannot be refused.
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._thread.join()
                self._thread = None
                raise RuntimeError("uvicorn failed to start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("uvicorn did not start in time")
            time.sleep(0.005)

        sockets = self._server.servers[0].sockets
        self._port = sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and join its thread.  Safe to call twice."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        # should_exit is polled by uvicorn's main loop every 0.1 s; it then
        # closes the listener and idle keep-alive connections itself, which
        # is what keeps ResourceWarnings away.
        server.should_exit = True
        thread.join(self._shutdown_timeout)
        if thread.is_alive():  # pragma: no cover - only with stuck handlers
            server.force_exit = True
            thread.join(self._shutdown_timeout)
        self._thread = None
        self._server = None
        self._port = None
        if thread.is_alive():  # pragma: no cover
            raise RuntimeError("uvicorn thread did not stop")

    def _run(self) -> None:
        assert self._server is not None
        try:
            # Server.run() -> asyncio.run(): a private loop for this thread.
            # Signal handlers are only installed on the main thread, so this
            # does not steal Ctrl-C from pytest.
            self._server.run()
        except BaseException as exc:  # SystemExit on bind failure, etc.
            self._error = exc

    # -- info --------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LoopbackServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self._host}:{self.port}"

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
