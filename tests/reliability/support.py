"""What the reliability tests share: the deployment's test identities, Twilio-signed forms, TwiML
parsing, catalogue look-ups, and ``python main.py serve`` run as a real subprocess.

Nothing here is a test; the test modules next to it say how to run each one alone.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from bot.i18n import Catalogues
from tests.conftest import HEALTH_HEADERS, HEALTH_TOKEN

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "main.py"

PUBLIC_URL = "https://tips.example.org"
SMS_PATH = "/sms/twilio"
TELEGRAM_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Distinctive values, so a test can search logs and files for them without false hits.
ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "twilio-auth-QmV9xK2pL7"
FROM_NUMBER = "+15550001111"  # the line's own number: it is public, and may appear anywhere
OFFICER_NUMBER = "+15550002222"
BOT_TOKEN = "7654321098:AAHfakeTokenForReliabilityTests_x9Z"
WEBHOOK_SECRET = "reliability-secret_42"
OFFICER_CHAT = -1001
RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
CATALOGUES = Catalogues.load()


def norm(text: str) -> str:
    return " ".join(text.split())


def catalogue(key: str, language: str = "en", **values: object) -> str:
    return norm(CATALOGUES.text(language, key, **values))


def shows(key: str, text: str, language: str = "en") -> bool:
    """Whether ``text`` (a whole reply, all its messages) carries the catalogue text ``key``.
    The review prompt embeds a summary and the receipt a code, so only their fixed parts count."""
    text = norm(text)
    if key == "submitted.receipt":
        return RECEIPT.search(text) is not None and text.startswith(catalogue(key, language, receipt="").split(":")[0])
    if key == "review.question":
        return catalogue(key, language, summary="").strip() in text
    return catalogue(key, language) in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Twilio ------------------------------------------------------------------------------------


def sms_form(sender: str, body: str, sid: str | None = None, **extra: str) -> dict[str, str]:
    """A messaging webhook form as Twilio posts it (geo fields included: Tipline must drop them)."""
    sid = sid or "SM" + uuid.uuid4().hex
    return {
        "ToCountry": "CA", "ToState": "QC", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "MONTREAL",
        "FromZip": "H2X 1Y4", "SmsSid": sid, "FromState": "QC", "SmsStatus": "received", "FromCity": "LAVAL",
        "Body": body, "FromCountry": "CA", "To": FROM_NUMBER, "ToZip": "", "NumSegments": "1", "MessageSid": sid,
        "AccountSid": ACCOUNT_SID, "From": sender, "ApiVersion": "2010-04-01", **extra,
    }  # fmt: skip


def twilio_signature(params: Mapping[str, str] | Iterable[tuple[str, str]], url: str = PUBLIC_URL + SMS_PATH) -> str:
    """Twilio's signature over the PUBLIC url (what Twilio called), with twilio's own validator.
    Repeated fields are signed value by value, as Twilio does."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return RequestValidator(AUTH_TOKEN).compute_signature(url, _MultiDict(grouped))


def signed_sms(form: Mapping[str, str]) -> dict[str, object]:
    """``httpx`` keyword arguments for POSTing ``form`` to the SMS webhook as Twilio would."""
    return {
        "content": urlencode(form),
        "headers": {"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": twilio_signature(form)},
    }


class _MultiDict(dict):
    """The ``getlist`` interface RequestValidator reads repeated fields through."""

    def getlist(self, key: str) -> list[str]:
        return self[key]


def twiml_messages(response: httpx.Response) -> list[str]:
    """The ``<Message>`` texts of a TwiML answer (asserting it is one)."""
    assert response.status_code == 200, (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/xml"), response.headers
    root = ET.fromstring(response.content)
    assert root.tag == "Response" and all(child.tag == "Message" for child in root), response.text[:200]
    return [child.text or "" for child in root]


# --- the server as a subprocess ------------------------------------------------------------------


def serve_environment(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The process environment for ``main.py serve``: nothing TIPLINE_* of the developer's leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(
        {
            "PTB_TIMEDELTA": "1",
            "TIPLINE_DATA_DIR": str(data_dir),
            "TIPLINE_HOST": "127.0.0.1",
            "TIPLINE_PORT": str(port),
            "TIPLINE_PUBLIC_URL": PUBLIC_URL,
            "TIPLINE_SERVER__HEALTH_TOKEN": HEALTH_TOKEN,
            **settings,
        }
    )
    return env


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` on this machine (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def owns_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` is the one listening on ``port``. A port picked free can be taken by
    another program before the server binds it; its /healthz must not be mistaken for ours."""
    inodes = _listening_inodes(port)
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[len("socket:[") : -1] in inodes:
            return True
    return False


def main_py(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python main.py COMMAND…`` with ``env`` (from ``serve_environment``), run to its end."""
    return subprocess.run([sys.executable, str(MAIN), *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def set_up_line(env: dict[str, str], cwd: Path) -> None:
    """``python main.py init`` with serve's environment: ``serve`` never makes a line itself."""
    done = main_py(["init"], env, cwd)
    assert done.returncode == 0, done.stderr


class ServeProcess:
    """``python main.py serve`` in a subprocess; stderr goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        self.env = env
        self.port = int(env["TIPLINE_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        # cwd outside the repository: no developer .env is read.
        self.process = subprocess.Popen(
            [sys.executable, str(MAIN), "serve"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=self._log, preexec_fn=preexec_fn
        )

    @classmethod
    def start(
        cls,
        environment: Callable[[int], dict[str, str]],
        log_path: Path,
        cwd: Path,
        attempts: int = 3,
        *,
        init: bool = False,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ServeProcess:
        """Start on a free port and wait for /healthz; on another port if this one was taken.
        ``init``: set the line up first (``python main.py init``), as on a new deployment.
        ``preexec_fn`` runs in the child before ``serve`` (e.g. to lower its open-files limit)."""
        if init:
            set_up_line(environment(free_port()), cwd)
        for _ in range(attempts):
            server = cls(environment(free_port()), log_path, cwd, preexec_fn)
            if server.wait_healthy():
                return server
        raise AssertionError(f"serve did not start on {attempts} ports:\n{server.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 20.0) -> bool:
        """True once this process answers /healthz; False when it exited because the port was taken."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                assert "address already in use" in self.log().lower(), f"serve exited with {self.process.returncode}:\n{self.log()[-2000:]}"
                return False
            try:
                response = httpx.get(self.url + "/healthz", timeout=1)
                if response.status_code == 200 and owns_port(self.process.pid, self.port):
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"serve not healthy in {timeout:.0f}s:\n{self.log()[-2000:]}")

    def health(self) -> dict:
        return httpx.get(self.url + "/healthz/detail", headers=HEALTH_HEADERS, timeout=5).json()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a power cut or the OOM killer."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> int:
        """A graceful stop (SIGTERM), falling back to SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode
