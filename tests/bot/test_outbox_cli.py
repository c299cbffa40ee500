"""``python main.py outbox`` and ``outbox retry``, run as a user runs them (a subprocess on a data
directory), over rows seeded through the store: what is listed, and what never is (a tip's words,
a tipster's address, any payload)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from bot.outbox import OutboxWorker
from handlers.alerts import AlertEvent, enqueue_alert
from storage.crypto import Cipher, KeyRing
from storage.records import Followup, OutboxItem, OutboxStatus, Tip, TipStatus
from storage.sqlite import SqliteStore
from tests.bot.test_chat_cli import run

PHRASE = "Quetzal Laundromat behind 8812 Imaginary Lane"  # typed by the tipster
ADDRESS = "+15145550199"  # the tipster's number, kept for replies
REPLY = "Officers ask: is the blue door Zanzibar-7 still locked?"
GROUP = "-1009876543210"


async def seed(data: Path) -> dict[str, str]:
    """A tip with a reply for its tipster and alerts for a Telegram group and an officer's SMS;
    some rows dead, one waiting on an unreachable group. Returns row ids by name."""
    store = await SqliteStore.open(data, Cipher(KeyRing.load(data / "keys.json")))
    ids: dict[str, str] = {}
    try:
        now = 1_000.0  # long ago: every age is large, every next try is due
        tip = Tip(
            uuid.uuid4().hex, "26-0001", TipStatus.OPEN, "sender-1", "sms", "en", now, now,
            answers={"where": PHRASE, "details": PHRASE}, urgent=True, contact_ok=True, contact_address=ADDRESS,
        )  # fmt: skip
        followup = Followup(uuid.uuid4().hex, tip.id, "officer", REPLY, now)
        async with store.transaction() as tx:
            await tx.tips.save(tip)
            await tx.followups.add(followup)
            await enqueue_alert(tx, tip, AlertEvent.URGENT, (f"telegram:{GROUP}", "sms:pseudonym-of-the-officer"), now)
            ids["reply"] = uuid.uuid4().hex
            payload = {"kind": "reply", "tip_id": tip.id, "followup_id": followup.id, "note": PHRASE, "to": ADDRESS}
            await tx.outbox.add(OutboxItem(ids["reply"], "tipster:sms", payload, OutboxStatus.PENDING, 0, now, now))
        for entry in await store.outbox.listing((OutboxStatus.PENDING,)):
            ids[entry.sink.partition(":")[0]] = entry.id
        async with store.transaction() as tx:
            await tx.outbox.mark_failed(ids["telegram"], 0, now + 300, "telegram officer group unreachable: add the bot back", False, unreachable=True)
            await tx.outbox.mark_failed(ids["sms"], 10, now + 900, "twilio HTTP 500", dead=True)
            await tx.outbox.mark_failed(ids["reply"], 1, now, "twilio 21610 unsubscribed recipient", dead=True)
    finally:
        await store.close()
    return ids


def test_outbox_lists_pending_and_dead_rows_without_any_content(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run(["keygen"], data).returncode == 0
    empty = run(["outbox"], data)
    assert empty.returncode == 0 and empty.stdout == "outbox: empty (nothing pending, nothing dead)\n"
    ids = asyncio.run(seed(data))

    listed = run(["outbox"], data)
    assert listed.returncode == 0, listed.stderr
    output = (listed.stdout + listed.stderr).encode()
    for secret in (PHRASE, "Quetzal", ADDRESS, "5145550199", REPLY, "Zanzibar", "pseudonym-of-the-officer"):
        assert secret.encode() not in output, secret
    assert not any(full.encode() in output for full in ids.values())  # ids are shortened

    header, *rows, summary = listed.stdout.splitlines()
    assert header.split() == ["ID", "TO", "STATUS", "PRIORITY", "ATTEMPTS", "AGE", "NEXT", "TRY", "LAST", "ERROR"]
    by_id = {row.split()[0]: row for row in rows}
    assert set(by_id) == {i[:8] for i in ids.values()}
    group = by_id[ids["telegram"][:8]].split()
    assert group[:5] == [ids["telegram"][:8], f"telegram:{GROUP}", "unreachable", "urgent", "0"]
    assert by_id[ids["telegram"][:8]].endswith("telegram officer group unreachable: add the bot back")
    officer_sms = by_id[ids["sms"][:8]].split()
    assert officer_sms[1:5] == ["sms-officer", "dead", "urgent", "10"] and "never (dead)" in by_id[ids["sms"][:8]]
    reply = by_id[ids["reply"][:8]].split()
    assert reply[1:5] == ["tipster:sms", "dead", "normal", "1"]
    assert "d" in group[5] and "due now" in by_id[ids["telegram"][:8]]  # days old, and due
    assert summary == "1 pending (1 waiting on an unreachable target), 2 dead; re-queue the dead with: python main.py outbox retry"


def test_outbox_retry_requeues_dead_rows_and_the_worker_delivers_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(["keygen"], data)
    ids = asyncio.run(seed(data))

    unknown = run(["outbox", "retry", "zzzz"], data)
    assert unknown.returncode == 1 and "no dead outbox row with id zzzz" in unknown.stderr
    alive = run(["outbox", "retry", ids["telegram"][:8]], data)  # pending, not dead: nothing to do
    assert alive.returncode == 1
    one = run(["outbox", "retry", ids["sms"][:8].upper()], data)
    assert (one.returncode, one.stdout) == (0, "outbox: 1 dead row re-queued (a running server sends them within 30 seconds)\n")
    rest = run(["outbox", "retry"], data)
    assert (rest.returncode, rest.stdout.split("(")[0]) == (0, "outbox: 1 dead row re-queued ")
    assert run(["outbox", "retry"], data).stdout == "outbox: 0 dead rows re-queued\n"

    listed = run(["outbox"], data).stdout
    assert " dead " not in listed and listed.splitlines()[-1] == "3 pending (1 waiting on an unreachable target), 0 dead"

    class Recorder:
        def __init__(self) -> None:
            self.rows: list[str] = []

        async def deliver(self, item: OutboxItem, target: str) -> None:
            self.rows.append(item.id)

    async def deliver() -> tuple[list[str], dict[OutboxStatus, int], list[tuple[int, str | None]]]:
        store = await SqliteStore.open(data, Cipher(KeyRing.load(data / "keys.json")))
        try:
            requeued = [await store.outbox.get(ids[name]) for name in ("sms", "reply")]
            kept = [(item.attempts, item.last_error) for item in requeued]
            sink = Recorder()
            await OutboxWorker(store, {"sms": sink, "tipster": sink}).run_once()
            return sink.rows, await store.outbox.counts(), kept
        finally:
            await store.close()

    delivered, counts, kept = asyncio.run(deliver())
    assert sorted(delivered) == sorted([ids["sms"], ids["reply"]])  # the re-queued rows, due now
    assert kept == [(0, "twilio HTTP 500"), (0, "twilio 21610 unsubscribed recipient")]  # why they died, until the next try
    assert counts == {OutboxStatus.PENDING: 1, OutboxStatus.DELIVERED: 2, OutboxStatus.DEAD: 0}
