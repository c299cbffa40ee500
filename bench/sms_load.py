"""Load test of the Twilio SMS webhook: Tipline against a bare endpoint on the same server stack.

    .venv/bin/python bench/sms_load.py                       # 1, 50 and 200 concurrent senders
    .venv/bin/python bench/sms_load.py --levels 50 --seconds 20 --keep   # keep data and server log

What it does, all on loopback:

* starts ``python main.py serve`` as a subprocess on a free port, with Twilio settings in the
  environment (``TIPLINE_PUBLIC_URL``, ``TIPLINE_TWILIO__*``), a temporary ``TIPLINE_DATA_DIR`` and
  ``TIPLINE_LOG_LEVEL=WARNING``. No officer channel is configured, so alerts go to the console
  sink (the subprocess's stderr, discarded). Twilio's REST API is never called.
* starts a bare Starlette endpoint returning a fixed TwiML string, in its own process, served by
  uvicorn with the same settings as ``serve`` (one process, same host, same HTTP stack).
* for each concurrency level, N simulated phones each walk the full English conversation to a
  receipt (11 signed webhook requests, signed with twilio's ``RequestValidator`` for the public
  URL), starting new conversations until the time budget is spent (and at most ``--max`` per
  level); the same requests then go to the bare endpoint.
* prints requests/s and p50/p99 latency for both, and the ratio ours/bare (throughput).
* finally kills the server with SIGKILL (no graceful shutdown), then checks that every receipt
  handed out matches a stored tip (by its keyed hash) and that ``python main.py tips export``
  holds exactly that many tips: a receipt is shown only after its tip is durably committed.

The load comes from ``--workers`` separate processes (2 by default), so a single client process is
not what bounds the bare endpoint. On a 2-core machine they still share the cores with the
server: the server CPU per request (read from /proc) is the figure that does not depend on that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUBLIC_URL = "https://tips.bench.example"
PATH = "/sms/twilio"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token"
FROM_NUMBER = "+15550001111"
RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
BARE_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Tipline. Reply 1 for English.</Message></Response>'

# The English flow to a receipt (DESIGN §2); "Hello" picks English on its own.
FLOW = (
    "Hello",
    "2",  # danger: no
    "2",  # witness
    "2",  # forced work
    "2",  # no minor
    "Motel Lune, 12 rue Fictive",
    "3",  # this week
    "A grey van parks there at night",
    "DONE",
    "1",  # replies OK
    "1",  # send
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_app():
    """The reference: the same server stack doing nothing but answering fixed TwiML."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def webhook(request) -> Response:
        await request.body()  # read the form like a real handler would
        return Response(BARE_TWIML, media_type="application/xml")

    return Starlette(routes=[Route(PATH, webhook, methods=["POST"])])


def serve_bare(port: int) -> None:
    import uvicorn

    # The same arguments as bot.cli.serve, so only the application differs.
    uvicorn.run(
        bare_app(),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    conversations: int = 0
    receipts: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0  # seconds of server CPU spent during the run

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu * 1000 / len(self.latencies) if self.latencies else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Phones:
    """Hands out numbers never used before, so every conversation starts afresh."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.next = 0

    def take(self) -> str:
        self.next += 1
        return f"+1{self.prefix}{self.next:07d}"


def form(sender: str, body: str) -> dict[str, str]:
    sid = "SM" + uuid.uuid4().hex
    return {
        "ToCountry": "CA", "ToState": "QC", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "MONTREAL",
        "FromZip": "H2X 1Y4", "SmsSid": sid, "FromState": "QC", "SmsStatus": "received", "FromCity": "MONTREAL",
        "Body": body, "FromCountry": "CA", "To": FROM_NUMBER, "ToZip": "", "NumSegments": "1", "MessageSid": sid,
        "AccountSid": ACCOUNT_SID, "From": sender, "ApiVersion": "2010-04-01",
    }  # fmt: skip


async def timed_post(client: httpx.AsyncClient, result: Result, path: str, content: str, headers: dict[str, str]) -> httpx.Response | None:
    """One request, its latency recorded; None (an error counted) when it failed or was not a 200."""
    started = time.perf_counter()
    try:
        response = await client.post(path, content=content, headers=headers)
    except httpx.HTTPError:
        result.errors += 1
        return None
    result.latencies.append(time.perf_counter() - started)
    if response.status_code != 200:
        result.errors += 1
        return None
    return response


async def converse(client: httpx.AsyncClient, validator: RequestValidator, sender: str, result: Result, receipt: bool) -> None:
    for step, body in enumerate(FLOW):
        params = form(sender, body)
        headers = {
            "X-Twilio-Signature": validator.compute_signature(PUBLIC_URL + PATH, params),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        response = await timed_post(client, result, PATH, urlencode(params), headers)
        if response is None:
            return
        if receipt and step == len(FLOW) - 1:
            found = RECEIPT.search(response.text)
            if found:
                result.receipts.append(found.group())
            else:
                result.errors += 1
    result.conversations += 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to compare server work per
    request independently of how fast this one-process client can push."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(base_url: str, senders: int, seconds: float, max_conversations: int, phones: Phones, pid: int, receipt: bool) -> Result:
    validator = RequestValidator(AUTH_TOKEN)
    result = Result()
    budget = max_conversations
    # One client (one keep-alive connection) per phone, like Twilio's many connections; a shared
    # httpx pool of hundreds of connections spends more CPU in the client than the servers do.
    clients = [httpx.AsyncClient(base_url=base_url, timeout=60) for _ in range(senders)]
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    deadline = started + seconds

    async def phone(client: httpx.AsyncClient) -> None:
        nonlocal budget
        while time.perf_counter() < deadline and budget > 0:
            budget -= 1
            await converse(client, validator, phones.take(), result, receipt)

    try:
        await asyncio.gather(*(phone(c) for c in clients))
    finally:
        result.elapsed = time.perf_counter() - started
        result.server_cpu = cpu_seconds(pid) - cpu_before
        await asyncio.gather(*(c.aclose() for c in clients))
    return result


async def drive_in_processes(
    base_url: str, senders: int, seconds: float, max_conversations: int, prefix: str, pid: int, receipt: bool, workers: int
) -> Result:
    """The load from ``workers`` separate processes (each ``senders / workers`` phones), so the
    client is not what limits a fast server; the server's CPU is read from /proc meanwhile."""
    shares = [senders // workers + (1 if i < senders % workers else 0) for i in range(workers)]
    shares = [n for n in shares if n]
    cpu_before = cpu_seconds(pid)
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", base_url, str(n), str(seconds), str(max(1, max_conversations // len(shares))),
            f"{prefix}{i}", "1" if receipt else "0", stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        for i, n in enumerate(shares)
    ]  # fmt: skip
    outputs = [await p.communicate() for p in processes]
    result = Result(server_cpu=cpu_seconds(pid) - cpu_before)
    for out, _ in outputs:
        part = json.loads(out)
        result.elapsed = max(result.elapsed, part["elapsed"])  # the load's own time, not process start-up
        result.latencies += part["latencies"]
        result.errors += part["errors"]
        result.conversations += part["conversations"]
        result.receipts += part["receipts"]
    return result


def worker(base_url: str, senders: str, seconds: str, max_conversations: str, prefix: str, receipt: str) -> None:
    """One load process: its phones, its numbers (``prefix``), its figures as JSON on stdout."""
    result = asyncio.run(drive(base_url, int(senders), float(seconds), int(max_conversations), Phones(prefix), os.getpid(), receipt == "1"))
    json.dump({"elapsed": result.elapsed, "latencies": result.latencies, "errors": result.errors, "conversations": result.conversations, "receipts": result.receipts}, sys.stdout)


def wait_ready(url: str, process: subprocess.Popen, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with code {process.returncode}")
        try:
            httpx.post(url + path, timeout=1)  # any answer (403 for ours) means it is listening
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start in {timeout:.0f}s")


async def verify(data_dir: Path, env: dict[str, str], receipts: list[str]) -> tuple[int, int, int]:
    """(receipts matching a stored tip, receipts handed out, tips the CLI exports)."""
    from storage.crypto import Cipher, KeyRing
    from storage.sqlite import SqliteStore

    cipher = Cipher(KeyRing.load(data_dir / "keys.json"))
    store = await SqliteStore.open(data_dir, cipher)
    try:
        matched = 0
        for receipt in receipts:
            tip = await store.tips.by_receipt_hash(cipher.lookup_hash("receipt", re.sub(r"\D", "", receipt)))
            matched += tip is not None
    finally:
        await store.close()
    # ``tips export`` rather than ``tips list``: the listing stops at 1000 tips.
    export = subprocess.run(
        [sys.executable, "main.py", "tips", "export", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return matched, len(receipts), len(json.loads(export.stdout))


def row(label: str, r: Result) -> str:
    return (
        f"  {label:<5} {r.rps:8.1f} req/s   p50 {r.pct(0.50):7.1f} ms   p99 {r.pct(0.99):7.1f} ms   "
        f"server CPU {r.cpu_ms_per_request:5.2f} ms/req   "
        f"{len(r.latencies):6d} requests, {r.conversations:5d} conversations, {r.errors} errors"
    )


async def main_async(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-"))
    data_dir = tmp / "data"
    ours_port, bare_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")},
        "TIPLINE_HOST": "127.0.0.1",
        "TIPLINE_PORT": str(ours_port),
        "TIPLINE_PUBLIC_URL": PUBLIC_URL,
        "TIPLINE_DATA_DIR": str(data_dir),
        "TIPLINE_LOG_LEVEL": "WARNING",
        "TIPLINE_TWILIO__ACCOUNT_SID": ACCOUNT_SID,
        "TIPLINE_TWILIO__AUTH_TOKEN": AUTH_TOKEN,
        "TIPLINE_TWILIO__FROM_NUMBER": FROM_NUMBER,
        "TIPLINE_TWILIO__API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: never used
    }
    subprocess.run([sys.executable, "main.py", "init"], cwd=ROOT, env=env, capture_output=True, check=True)  # serve makes no line
    stderr = open(tmp / "serve.stderr", "w")  # noqa: SIM115 - closed in finally
    ours = subprocess.Popen([sys.executable, "main.py", "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    bare = subprocess.Popen([sys.executable, __file__, "--bare-server", str(bare_port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    ours_url, bare_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{bare_port}"
    receipts: list[str] = []
    ratios: dict[int, float] = {}
    try:
        wait_ready(ours_url, ours, PATH)
        wait_ready(bare_url, bare, PATH)
        print(f"tipline serve on {ours_url}, bare endpoint on {bare_url}; data in {data_dir}; {os.cpu_count()} CPUs")
        for senders in levels:
            workers = min(args.workers, senders)
            mine = await drive_in_processes(ours_url, senders, args.seconds, args.max, f"514{senders:03d}", ours.pid, True, workers)
            reference = await drive_in_processes(bare_url, senders, args.seconds, args.max, f"438{senders:03d}", bare.pid, False, workers)
            receipts.extend(mine.receipts)
            ratios[senders] = mine.rps / reference.rps if reference.rps else float("nan")
            print(f"{senders} concurrent sender(s):")
            print(row("ours", mine))
            print(row("bare", reference))
            cpu_ratio = mine.cpu_ms_per_request / reference.cpu_ms_per_request if reference.cpu_ms_per_request else float("nan")
            print(f"  ratio ours/bare: throughput {ratios[senders]:.2f}, server CPU per request {cpu_ratio:.1f}x   p50 ours/bare: {mine.pct(0.5) / reference.pct(0.5):.1f}x")
    finally:
        # SIGKILL: no shutdown hook runs. What was acknowledged must already be on disk.
        ours.send_signal(signal.SIGKILL)
        ours.wait()
        bare.terminate()
        bare.wait()
        stderr.close()
    matched, handed_out, counted = await verify(data_dir, env, receipts)
    durable = matched == handed_out == counted
    print(f"durability after SIGKILL: {matched}/{handed_out} receipts match a stored tip; tips export counts {counted}: "
          + ("OK" if durable else "MISMATCH"))  # fmt: skip
    if 50 in ratios:
        print(f"target ratio >= 0.5 at 50 senders: {'met' if ratios[50] >= 0.5 else 'NOT met'} ({ratios[50]:.2f})")
    if args.keep:
        print(f"data kept in {tmp}")
    else:
        shutil.rmtree(tmp)
    return 0 if durable else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,50,200", help="concurrent senders per run, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per level and endpoint")
    parser.add_argument("--max", type=int, default=2000, help="most conversations per level and endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory and server log")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    if args.bare_server:
        serve_bare(args.bare_server)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
