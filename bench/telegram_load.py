"""Load test of the Telegram webhook: Tipline against a bare endpoint on the same server stack.

    .venv/bin/python bench/telegram_load.py                      # 50 concurrent chats, 10 s
    .venv/bin/python bench/telegram_load.py --chats 20 --seconds 20

What it does, all on loopback:

* the fake Bot API of the tests (tests/fakes/telegram_api.py) runs in its own process; Tipline's
  ``serve`` runs in another with Telegram in webhook mode pointed at it, so every reply really
  goes out as ``sendMessage`` (Tipline's side of that HTTP call is counted in its CPU);
* the bare endpoint of bench/sms_load.py, in its own process under the same uvicorn settings,
  reads the JSON body and answers 200;
* ``--workers`` load processes post updates with the secret header, each chat walking the English
  conversation to its receipt (``/start`` then ten answers), new chats until the time is spent;
* prints requests/s, p50/p99 and server CPU per request for both, and the ratios.

Telegram paces a bot's messages to one chat; the sink honours that, so latency here includes the
pacing of each conversation's replies. Server CPU per request is the figure to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from sms_load import FLOW, Result, cpu_seconds, free_port, row, timed_post  # noqa: E402

TOKEN = "7000000001:AAbenchTokenForTheWebhookLoad_xyz0"
SECRET = "bench-webhook-secret_1"
PATH = "/telegram/webhook"
TELEGRAM_FLOW = ("/start", *FLOW[1:])  # /start opens the conversation; the rest as typed on SMS


def serve_fake(port: int) -> None:
    import uvicorn

    from tests.fakes.telegram_api import FakeTelegramAPI

    uvicorn.run(FakeTelegramAPI(token=TOKEN).app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_bare(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def webhook(request) -> Response:
        json.loads(await request.body())  # read the update like a real handler would
        return Response(status_code=200)

    app = Starlette(routes=[Route(PATH, webhook, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, proxy_headers=False, timeout_graceful_shutdown=10)


async def drive(base_url: str, chats: int, seconds: float, first_chat: int) -> Result:
    from tests.fakes.telegram_api import make_text_update

    result = Result()
    next_chat, update_id = first_chat, first_chat * 100
    deadline = time.perf_counter() + seconds
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "content-type": "application/json"}

    async def chat(client: httpx.AsyncClient) -> None:
        nonlocal next_chat, update_id
        while time.perf_counter() < deadline:
            next_chat += 1
            chat_id = next_chat
            for text in TELEGRAM_FLOW:
                update_id += 1
                body = json.dumps(make_text_update(update_id, chat_id, text, message_id=update_id))
                if await timed_post(client, result, PATH, body, headers) is None:
                    return
            result.conversations += 1

    clients = [httpx.AsyncClient(base_url=base_url, timeout=60) for _ in range(chats)]
    started = time.perf_counter()
    try:
        await asyncio.gather(*(chat(c) for c in clients))
    finally:
        result.elapsed = time.perf_counter() - started
        await asyncio.gather(*(c.aclose() for c in clients))
    return result


async def drive_in_processes(url: str, chats: int, seconds: float, pid: int, workers: int, base: int) -> Result:
    shares = [chats // workers + (1 if i < chats % workers else 0) for i in range(workers)]
    before = cpu_seconds(pid)
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", url, str(n), str(seconds), str(base + i * 1_000_000),
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        for i, n in enumerate(shares) if n
    ]  # fmt: skip
    outputs = [await p.communicate() for p in processes]
    result = Result(server_cpu=cpu_seconds(pid) - before)
    for out, _ in outputs:
        part = json.loads(out)
        result.elapsed = max(result.elapsed, part["elapsed"])
        result.latencies += part["latencies"]
        result.errors += part["errors"]
        result.conversations += part["conversations"]
    return result


def wait_listening(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited early with code {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tipline-tg-bench-"))
    fake_port, ours_port, bare_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")},
        "PTB_TIMEDELTA": "1",
        "TIPLINE_HOST": "127.0.0.1",
        "TIPLINE_PORT": str(ours_port),
        "TIPLINE_PUBLIC_URL": "https://tips.bench.example",
        "TIPLINE_DATA_DIR": str(tmp / "data"),
        "TIPLINE_LOG_LEVEL": "WARNING",
        "TIPLINE_TELEGRAM__TOKEN": TOKEN,
        "TIPLINE_TELEGRAM__API_URL": f"http://127.0.0.1:{fake_port}",
        "TIPLINE_TELEGRAM__WEBHOOK_SECRET": SECRET,
    }
    me = [sys.executable, __file__]
    fake = subprocess.Popen([*me, "--fake-api", str(fake_port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    bare = subprocess.Popen([*me, "--bare-server", str(bare_port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 - closed below
    try:
        wait_listening(f"http://127.0.0.1:{fake_port}", fake)
        subprocess.run([sys.executable, "main.py", "init"], cwd=ROOT, env=env, capture_output=True, check=True)  # serve makes no line
        ours = subprocess.Popen([sys.executable, "main.py", "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_listening(f"http://127.0.0.1:{ours_port}", ours)
            wait_listening(f"http://127.0.0.1:{bare_port}", bare)
            print(f"tipline serve (Telegram webhook) and a bare endpoint; {os.cpu_count()} CPUs; {args.chats} concurrent chats, {args.seconds:.0f} s each")
            mine = await drive_in_processes(f"http://127.0.0.1:{ours_port}", args.chats, args.seconds, ours.pid, args.workers, 8_000_000)
            reference = await drive_in_processes(f"http://127.0.0.1:{bare_port}", args.chats, args.seconds, bare.pid, args.workers, 9_000_000)
        finally:
            ours.terminate()
            ours.wait()
    finally:
        for process in (fake, bare):
            process.terminate()
            process.wait()
        log.close()
    print(row("ours", mine))
    print(row("bare", reference))
    cpu = mine.cpu_ms_per_request / reference.cpu_ms_per_request if reference.cpu_ms_per_request else float("nan")
    print(f"  ratio ours/bare: throughput {mine.rps / reference.rps:.2f}, server CPU per request {cpu:.1f}x")
    return 0 if mine.errors == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fake-api", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_api:
        serve_fake(args.fake_api)
    elif args.bare_server:
        serve_bare(args.bare_server)
    elif args.worker:
        url, chats, seconds, first = args.worker
        result = asyncio.run(drive(url, int(chats), float(seconds), int(first)))
        json.dump({"elapsed": result.elapsed, "latencies": result.latencies, "errors": result.errors, "conversations": result.conversations}, sys.stdout)
    else:
        return asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
