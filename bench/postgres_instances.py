"""Signed SMS conversations against one and two ``serve`` instances on one PostgreSQL database,
each setup behind the same round-robin dispatcher, and a bare endpoint behind it too.

    .venv/bin/python bench/postgres_instances.py                 # 50 concurrent senders, 15 s each
    .venv/bin/python bench/postgres_instances.py --senders 20 --seconds 30

What it does, all on loopback:

* starts a throwaway PostgreSQL server (tests/postgres_server.py) with fsync ON, as in production,
  and makes one key ring for all instances;
* for 1 and then 2 instances: a fresh database, N ``python main.py serve`` processes with
  ``TIPLINE_DATABASE_URL`` and the dispatcher (tests/fakes/dispatcher.py) in its own process in
  front of them; the load generator of bench/sms_load.py walks the full English conversation to a
  receipt per phone (11 signed requests), new phones until the time is spent;
* the bare endpoint of bench/sms_load.py (fixed TwiML, the same uvicorn settings) behind the same
  dispatcher, as the reference for what the HTTP stack and the dispatcher cost on their own;
* prints requests/s, p50/p99 and server CPU per request (summed over the instances, from /proc),
  then checks every receipt handed out against the tips stored in PostgreSQL.

On a 2-core machine the instances, PostgreSQL, the dispatcher and the load generator share two
cores: a second instance adds resilience here, not throughput. The figures say how much.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from sms_load import (  # noqa: E402 - after the path is set
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PATH,
    PUBLIC_URL,
    Phones,
    Result,
    cpu_seconds,
    drive,
    free_port,
    row,
    wait_ready,
)

from storage.crypto import Cipher, KeyRing  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402


def serve_env(data_dir: Path, port: int, url: str, keys: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")},
        "PTB_TIMEDELTA": "1",
        "TIPLINE_HOST": "127.0.0.1",
        "TIPLINE_PORT": str(port),
        "TIPLINE_PUBLIC_URL": PUBLIC_URL,
        "TIPLINE_DATA_DIR": str(data_dir),
        "TIPLINE_KEYS_FILE": str(keys),
        "TIPLINE_DATABASE_URL": url,
        "TIPLINE_LOG_LEVEL": "WARNING",
        "TIPLINE_TWILIO__ACCOUNT_SID": ACCOUNT_SID,
        "TIPLINE_TWILIO__AUTH_TOKEN": AUTH_TOKEN,
        "TIPLINE_TWILIO__FROM_NUMBER": FROM_NUMBER,
        "TIPLINE_TWILIO__API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: never used
    }


def dispatcher(backends: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.dispatcher", str(port), *backends], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, PATH)
    return process, url


async def measure(url: str, pids: list[int], senders: int, seconds: float, phones: Phones, receipt: bool) -> Result:
    before = sum(cpu_seconds(p) for p in pids)
    result = await drive(url, senders, seconds, 10**6, phones, pids[0], receipt)
    result.server_cpu = sum(cpu_seconds(p) for p in pids) - before
    return result


async def stored(url: str, cipher: Cipher, receipts: list[str]) -> tuple[int, int]:
    from storage.postgres import PostgresStore

    store = await PostgresStore.open(url, cipher)
    try:
        matched = 0
        for code in receipts:
            matched += await store.tips.by_receipt_hash(cipher.lookup_hash("receipt", re.sub(r"\D", "", code))) is not None
        return matched, len(await store.tips.list(None, limit=None))
    finally:
        await store.close()


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tipline-pg-bench-"))
    keys = tmp / "keys.json"
    KeyRing.generate().save(keys)
    cipher = Cipher(KeyRing.load(keys))
    ok = True
    with PostgresServer().start(fsync=True) as pg:
        print(f"PostgreSQL on port {pg.port} (fsync on); {os.cpu_count()} CPUs; {args.senders} concurrent senders, {args.seconds:.0f} s per run")
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(BENCH / "sms_load.py"), "--bare-server", str(bare_port)], cwd=ROOT, stderr=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{bare_port}", bare, PATH)
        front, front_url = dispatcher([f"http://127.0.0.1:{bare_port}"])
        try:
            reference = await measure(front_url, [bare.pid], args.senders, args.seconds, Phones("438"), receipt=False)
        finally:
            for process in (front, bare):
                process.terminate()
                process.wait()
        print(row("bare", reference))
        for count in (1, 2):
            url = pg.create_database(f"bench_{count}")
            instances, logs, ports = [], [], []
            try:
                for n in range(count):
                    port = free_port()
                    ports.append(port)
                    logs.append(open(tmp / f"serve-{count}-{n}.log", "w"))  # noqa: SIM115 - closed below
                    env = serve_env(tmp / f"data-{count}-{n}", port, url, keys)
                    if n == 0:  # the schema, made once by init: serve makes no line
                        subprocess.run([sys.executable, "main.py", "init"], cwd=ROOT, env=env, capture_output=True, check=True)
                    instances.append(subprocess.Popen([sys.executable, "main.py", "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=logs[-1]))
                    wait_ready(f"http://127.0.0.1:{port}", instances[-1], PATH)
                front, front_url = dispatcher([f"http://127.0.0.1:{p}" for p in ports])
                try:
                    started = time.perf_counter()
                    mine = await measure(front_url, [p.pid for p in instances], args.senders, args.seconds, Phones(f"51{count}"), receipt=True)
                finally:
                    front.terminate()
                    front.wait()
            finally:
                for process in instances:
                    process.terminate()
                    process.wait()
                for handle in logs:
                    handle.close()
            matched, tips = await stored(url, cipher, mine.receipts)
            durable = matched == len(mine.receipts) == tips
            ok &= durable and mine.errors == 0
            print(row(f"{count} inst", mine) + f"   ({time.perf_counter() - started:.0f} s)")
            print(f"           ratio to bare (req/s) {mine.rps / reference.rps:.2f}; receipts matching a stored tip {matched}/{len(mine.receipts)}, "
                  f"tips {tips}: {'OK' if durable else 'MISMATCH'}")  # fmt: skip
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
