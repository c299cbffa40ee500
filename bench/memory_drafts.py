"""Resident memory with many open drafts: it should stay flat, because drafts live in the database
(encrypted), not in memory; per-sender locks and flood buckets are dropped when idle.

    .venv/bin/python bench/memory_drafts.py [--drafts 10000]

Opens batches of 10,000 conversations through the engine (each sender answers a question, so a
real encrypted draft is stored), printing resident memory (VmRSS) after each batch, the draft
count, and the database size.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engine import Engine  # noqa: E402
from bot.i18n import Catalogues  # noqa: E402
from bot.messages import InboundMessage  # noqa: E402
from handlers.turn import ConversationConfig  # noqa: E402
from storage.crypto import Cipher, KeyRing  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def open_drafts(engine: Engine, start: int, count: int, concurrency: int = 64) -> None:
    queue = iter(range(start, start + count))

    async def worker() -> None:
        for i in queue:
            sender = f"bench-sender-{i}"
            await engine.handle(InboundMessage("sms", sender, "hello, I need to report something", provider_id=f"SMa{i}"))
            await engine.handle(InboundMessage("sms", sender, "2", provider_id=f"SMb{i}"))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def main(drafts: int, batches: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        cipher = Cipher(KeyRing.generate())
        store = await SqliteStore.open(Path(directory), cipher)
        engine = Engine(store, cipher, Catalogues.load(), ConversationConfig())
        await open_drafts(engine, 0, 200)  # warm up imports, caches and connections
        gc.collect()
        print(f"{'open drafts':>12} {'RSS MiB':>9} {'db MiB':>8} {'seconds':>8}")
        baseline = rss_mib()
        print(f"{await store.drafts.count():>12} {baseline:>9.1f} {'':>8} {'':>8}")
        figures = []
        for batch in range(batches):
            started = time.perf_counter()
            await open_drafts(engine, 1000 + batch * drafts, drafts)
            gc.collect()
            size = sum(p.stat().st_size for p in Path(directory).iterdir()) / 2**20
            figures.append(rss_mib())
            print(f"{await store.drafts.count():>12} {figures[-1]:>9.1f} {size:>8.1f} {time.perf_counter() - started:>8.1f}")
        steps = [figures[0] - baseline] + [b - a for a, b in zip(figures, figures[1:])]
        print("growth per batch of", drafts, "drafts (MiB):", " ".join(f"{g:+.1f}" for g in steps))
        # What memory does hold per sender, and why it is bounded: flood buckets live until a
        # sender has been idle for burst/rate seconds (40 s) and never exceed max_senders.
        print(f"sender locks in memory: {len(engine._locks)}; flood buckets: {len(engine.rate_limiter)} "
              f"(capped at {engine.rate_limiter.max_senders})")
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drafts", type=int, default=10_000, help="drafts per batch")
    parser.add_argument("--batches", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.drafts, arguments.batches))
