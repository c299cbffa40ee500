"""The disk-full drill of issue 16, on a real full file system: ``serve`` with its data directory
on a small tmpfs that is then filled to the last byte.

    sudo .venv/bin/python bench/disk_full.py            # needs root (it mounts a tmpfs)
    sudo .venv/bin/python bench/disk_full.py --seconds 60 --messages 400

What it does, all on loopback (Twilio is tests/fakes/twilio_api.py):

1. sets up a line on the tmpfs (``main.py keygen``) and starts ``main.py serve``;
2. a person texts "help me now": the URGENT alert for the on-call officer's phone is queued, but
   Twilio is down for a moment, so it waits its retry;
3. the file system is filled (a file grows until ENOSPC) and Twilio comes back: the alert is sent
   while the database cannot record it (the fault that paged an officer 380 times in 30 s);
4. for ``--seconds``, people keep texting (new reports and replies) while the disk is full;
5. space is freed; the same people text again.

It prints the officer SMS copies of that alert, the HTTP statuses and replies during the fault,
the /healthz answers, the log's line count (and its lines about storage), and what the line filed
once space came back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import HEALTH_HEADERS  # noqa: E402
from tests.fakes.server import LoopbackServer  # noqa: E402
from tests.fakes.twilio_api import FakeTwilioAPI  # noqa: E402
from tests.reliability.support import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    MAIN,
    OFFICER_NUMBER,
    SMS_PATH,
    ServeProcess,
    serve_environment,
    signed_sms,
    sms_form,
)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def post(client: httpx.AsyncClient, url: str, sender: str, body: str, statuses: Counter, replies: Counter) -> float:
    started = time.monotonic()
    try:
        response = await client.post(url + SMS_PATH, **signed_sms(sms_form(sender, body)))
    except httpx.HTTPError as exc:
        statuses[type(exc).__name__] += 1
        return time.monotonic() - started
    statuses[response.status_code] += 1
    text = response.text
    start = text.find(">", text.find("<Message")) + 1 if "<Message" in text else -1
    replies[text[start : text.find("</Message>")][:70] if start > 0 else "(no message)"] += 1
    return time.monotonic() - started


def officer_copies(twilio: FakeTwilioAPI, title: str) -> int:
    return sum(1 for m in twilio.sent() if m["To"] == OFFICER_NUMBER and title in m["Body"])


async def drill(args: argparse.Namespace, volume: Path) -> int:
    twilio = FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    data_dir = volume / "data"
    with LoopbackServer(twilio.app) as twilio_server:

        def environment(port: int) -> dict[str, str]:
            return serve_environment(
                data_dir, port,
                TIPLINE_TWILIO__ACCOUNT_SID=ACCOUNT_SID, TIPLINE_TWILIO__AUTH_TOKEN=AUTH_TOKEN,
                TIPLINE_TWILIO__FROM_NUMBER=FROM_NUMBER, TIPLINE_TWILIO__API_URL=twilio_server.url,
                TIPLINE_OFFICERS__SMS_NUMBERS=OFFICER_NUMBER,
            )  # fmt: skip

        setup = subprocess.run([sys.executable, str(MAIN), "keygen"], env=environment(1), cwd=volume.parent, capture_output=True, text=True)
        if setup.returncode:
            print("keygen failed:", setup.stderr)
            return 1
        log_path = volume.parent / "serve.log"
        server = ServeProcess.start(environment, log_path, volume.parent)
        statuses, replies = Counter(), Counter()
        timings: list[float] = []
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                twilio.set_down(True)
                await post(client, server.url, "+15145550001", "help me now", statuses, replies)
                await asyncio.sleep(0.5)  # its first try failed; the retry waits
                filler = fill(volume)
                twilio.set_down(False)
                health_during = []
                deadline = time.monotonic() + args.seconds
                sent = 0
                while time.monotonic() < deadline:
                    phone = f"+1514556{sent % 50:04d}"
                    body = ("hi", "someone is held at the motel", "yes", "idk", "help me now")[sent % 5]
                    timings.append(await post(client, server.url, phone, body, statuses, replies))
                    sent += 1
                    if sent % 50 == 0:
                        health_during.append((await client.get(server.url + "/healthz/detail", headers=HEALTH_HEADERS)).text[:300])
                    if sent >= args.messages:
                        await asyncio.sleep(0.05)
                copies_during = officer_copies(twilio, "URGENT")
                log_during = server.log().splitlines()
                filler.unlink()
                await asyncio.sleep(5)  # the outbox records what it kept in memory
                after = Counter()
                for phone in ("+15145550001", "+15145567001"):
                    for body in ("help me now", "the motel on rue Fictive", "tonight", "no", "DONE", "yes", "no", "SEND"):
                        await post(client, server.url, phone, body, after, Counter())
                await asyncio.sleep(3)
                health_after = (await client.get(server.url + "/healthz/detail", headers=HEALTH_HEADERS)).text[:300]
                copies_after = officer_copies(twilio, "URGENT")
        finally:
            server.stop()
    timings.sort()
    lines = server.log().splitlines()
    print(f"officer SMS copies of the first URGENT alert while the disk was full: {copies_during}")
    print(f"officer URGENT SMS in all (the first alert + the ones raised after space came back): {copies_after}")
    print(f"tipster messages during the fault: {sum(statuses.values())}; HTTP statuses: {dict(statuses)}")
    if timings:
        print(f"reply time p50 {timings[len(timings) // 2] * 1000:.0f} ms, max {timings[-1] * 1000:.0f} ms")
    print("replies during the fault:")
    for text, count in replies.most_common(6):
        print(f"  {count:5d}  {text}")
    print("healthz/detail during the fault (first, last):", *(health_during[:1] + health_during[-1:]), sep="\n  ")
    print("healthz/detail after:", health_after)
    print(f"HTTP statuses after space came back: {dict(after)}")
    print(f"log: {len(log_during)} lines during the fault, {len(lines)} in all; lines about storage:")
    for line in [l for l in lines if "disk" in l.lower() or "database" in l.lower() or "storage" in l.lower()][:12]:
        print("  ", line[:200])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", default="6m", help="size of the tmpfs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/disk_full.py mounts a tmpfs: run it as root")
        return 2
    base = Path(tempfile.mkdtemp(prefix="tipline-diskfull-"))
    volume = base / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size}", "tmpfs", str(volume)], check=True)
    try:
        return asyncio.run(drill(args, volume))
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
