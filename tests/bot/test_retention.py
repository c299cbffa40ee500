"""Retention removes what it should and nothing else."""

from __future__ import annotations

import uuid

from bot.retention import DAY, purge
from storage.records import Draft, Followup, OutboxItem, OutboxStatus, Tip, TipStatus
from storage.sqlite import SqliteStore

NOW = 1_900_000_000.0


def _tip(case: str, status: TipStatus, updated: float, contact: str | None = None) -> Tip:
    return Tip(
        uuid.uuid4().hex, case, status, "sender", "sms", "en", updated, updated,
        answers={"where": "x"}, contact_ok=contact is not None, contact_address=contact,
        closed_at=updated if status is TipStatus.CLOSED else None,
    )  # fmt: skip


async def test_purge_applies_each_rule_and_keeps_the_rest(store: SqliteStore, make_settings) -> None:
    old_closed = _tip("26-0001", TipStatus.CLOSED, NOW - 100 * DAY)
    recent_closed = _tip("26-0002", TipStatus.CLOSED, NOW - 5 * DAY, contact="+15145550123")
    old_open = _tip("26-0003", TipStatus.OPEN, NOW - 400 * DAY, contact="+15145550124")
    async with store.transaction() as tx:
        for tip in (old_closed, recent_closed, old_open):
            await tx.tips.save(tip)
            await tx.followups.add(Followup(uuid.uuid4().hex, tip.id, "tipster", "more", tip.created_at))
        for delivered_at, status in ((NOW - 30 * DAY, OutboxStatus.DELIVERED), (NOW - DAY, OutboxStatus.DELIVERED), (None, OutboxStatus.PENDING)):
            await tx.outbox.add(OutboxItem(uuid.uuid4().hex, "console", {}, status, 0, 0.0, 0.0, 0, delivered_at))
        await tx.processed.add("sms:old", [], NOW - 400 * DAY)  # past the year a replay is refused
        await tx.processed.add("sms:new", [{"text": "r"}], NOW - DAY)  # id kept, its replies not
        await tx.processed.add("sms:now", [{"text": "r"}], NOW - 600)
        await tx.message_refs.add("old-chat", ["1"], NOW - 3 * DAY)
        await tx.message_refs.add("new-chat", ["2"], NOW - 3600)
        for sender, at in (("old-aside", NOW - 30 * DAY), ("new-aside", NOW - DAY)):
            await tx.drafts.save(Draft(sender, {"v": 2, "mode": "report"}, at, at))
            await tx.drafts.set_aside(sender, at)
        # Pictures: the purged case's go with it; the others stay; a draft's stays while its draft
        # (or the draft set aside) lives; one no draft leads to goes once a day old.
        await tx.pictures.add("p-old-closed", b"jpeg1", NOW - 100 * DAY, tip_id=old_closed.id)
        await tx.pictures.add("p-open", b"jpeg2", NOW - 400 * DAY, tip_id=old_open.id)
        await tx.drafts.save(Draft("writing", {"v": 2, "mode": "report"}, NOW - 2 * DAY, NOW + 600))
        await tx.pictures.add("p-writing", b"jpeg3", NOW - 2 * DAY, owner="writing")
        await tx.pictures.add("p-aside", b"jpeg4", NOW - 2 * DAY, owner="new-aside")
        await tx.pictures.add("p-lost", b"jpeg5", NOW - 2 * DAY, owner="gone")
        await tx.pictures.add("p-lost-new", b"jpeg6", NOW - 600, owner="gone")

    removed = await purge(store, make_settings(), NOW)

    assert removed == {"closed tips": 1, "contact addresses": 1, "outbox rows": 1, "provider ids": 1, "message refs": 1, "set-aside drafts": 1, "cached replies": 1, "tip senders": 2, "pictures": 2}
    assert await store.drafts.set_aside_count() == 1
    for gone in ("p-old-closed", "p-lost"):
        assert await store.pictures.get(gone) is None
    for kept_id in ("p-open", "p-writing", "p-aside", "p-lost-new"):
        assert await store.pictures.get(kept_id) is not None
    assert await store.tips.get(old_closed.id) is None and await store.followups.for_tip(old_closed.id) == []
    kept = await store.tips.get(recent_closed.id)
    assert kept is not None and kept.contact_address is None and len(await store.followups.for_tip(kept.id)) == 1
    still_open = await store.tips.get(old_open.id)
    assert still_open.contact_address == "+15145550124"  # open cases are never purged
    assert (await store.outbox.counts())[OutboxStatus.DELIVERED] == 1
    assert (await store.outbox.counts())[OutboxStatus.PENDING] == 1
    assert await store.processed.replies_for("sms:old") is None and await store.processed.replies_for("sms:new") == []
    assert await store.processed.replies_for("sms:now") == [{"text": "r"}]
    assert await store.message_refs.get("old-chat") == [] and await store.message_refs.get("new-chat") == ["2"]
    assert await purge(store, make_settings(), NOW) == dict.fromkeys(removed, 0)
