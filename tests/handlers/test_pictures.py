"""Pictures in the conversation, through the engine: a draft's pictures are filed with it, an ADD
brings them to its case, a picture alone is worth filing, and EXIT leaves none. The source is a
small in-process one serving Pillow-made files (the channels' own sources are tested over loopback
in tests/channels)."""

from __future__ import annotations

import re

from bot.engine import Engine
from bot.messages import InboundMessage, MediaRef
from bot.pictures import PictureRefused, Refusal
from handlers.state import load_state
from tests.fakes.images import phone_photo
from tests.handlers.transcript import OPEN, Talk

SENDER = "sender-under-test-0001"


class Files:
    """A channel's store of files by id."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def fetch(self, ref: MediaRef, max_bytes: int) -> bytes:
        if ref.locator not in self.files:
            raise PictureRefused(Refusal.NOT_RECEIVED)
        return self.files[ref.locator]


def picture_message(text: str = "", *ids: str) -> InboundMessage:
    refs = tuple(MediaRef("test", i, "image/jpeg") for i in ids)
    return InboundMessage("console", SENDER, text, has_media=True, media=refs)


def with_files(engine: Engine) -> Files:
    files = Files()
    engine.pictures.add_source("test", files)
    return files


async def test_a_picture_alone_opens_a_report_that_expires_filed_with_it(engine: Engine, store, clock) -> None:
    files = with_files(engine)
    files.files["p1"] = phone_photo()
    replies = await engine.handle(picture_message("", "p1"))
    assert [r.key for r in replies][:1] == ["picture.kept"]
    draft = await store.drafts.get(SENDER)
    assert load_state(draft.state).pictures == 1
    clock.advance(31 * 60)
    assert await engine.expire_due() == 1
    (tip,) = await store.tips.list(None)
    assert not tip.complete and await store.pictures.count_for_tip(tip.id) == 1


async def test_add_brings_its_pictures_to_the_case_with_one_alert(engine: Engine, store) -> None:
    files = with_files(engine)
    files.files["p1"] = phone_photo()
    talk = Talk(engine)
    await talk.say(OPEN)
    for said in ["1", "2", "2", "2", "2", "Motel Lune", "3", "grey van", "DONE", "2"]:
        await talk.say(said)
    receipt = re.search(r"\d{3}-\d{3}-\d{3}-\d{3}", (await talk.say("1"))[0].text).group(0)
    (tip,) = await store.tips.list(None)
    assert await store.pictures.count_for_tip(tip.id) == 0
    await talk.say("thanks")
    await talk.say(f"ADD {receipt}")
    assert [r.key for r in await engine.handle(picture_message("", "p1"))] == ["picture.kept", "add.more"]
    assert await store.pictures.count_for_tip(tip.id) == 0  # not the case's until DONE
    assert [r.key for r in await talk.say("DONE")] == ["add.sent"]
    assert await store.pictures.count_for_tip(tip.id) == 1
    alerts = [i for i in await store.outbox.due(10**12) if i.payload.get("event") == "addition"]
    assert [a.payload.get("pictures") for a in alerts] == [1]


async def test_a_picture_just_after_the_receipt_joins_the_report_sent(engine: Engine, store) -> None:
    files = with_files(engine)
    files.files["p1"] = phone_photo()
    talk = Talk(engine)
    await talk.say(OPEN)
    for said in ["1", "2", "2", "2", "2", "Motel Lune", "3", "grey van", "DONE", "2", "1"]:
        await talk.say(said)
    assert [r.key for r in await engine.handle(picture_message("", "p1"))] == ["picture.added"]
    (tip,) = await store.tips.list(None)
    assert await store.pictures.count_for_tip(tip.id) == 1
    # With a caption: both join the case sent, and no new report opens with a second copy.
    assert [r.key for r in await engine.handle(picture_message("the van again", "p1"))] == ["picture.added"]
    assert await store.pictures.count_for_tip(tip.id) == 2 and await store.pictures.count() == 2
    assert [f.text for f in await store.followups.for_tip(tip.id)] == ["the van again"]
    assert len(await store.tips.list(None)) == 1


async def test_exit_and_cancel_leave_no_picture(engine: Engine, store) -> None:
    files = with_files(engine)
    files.files["p1"] = phone_photo()
    talk = Talk(engine)
    await talk.say(OPEN)
    await talk.say("1")
    await engine.handle(picture_message("", "p1"))
    assert await store.pictures.count() == 1
    await talk.say("EXIT")
    assert await store.pictures.count() == 0
    for said in [OPEN, "1", "2", "2", "2", "2", "Motel Lune", "3"]:
        await talk.say(said)
    await engine.handle(picture_message("the room", "p1"))
    await talk.say("DONE")
    assert [r.key for r in await talk.say("2")] == ["review.question"]
    assert [r.key for r in await talk.say("3")] == ["erased"]  # Cancel at the review
    assert await store.pictures.count() == 0 and await store.tips.list(None) == []


async def test_an_urgent_case_has_its_pictures_at_once(engine: Engine, store) -> None:
    files = with_files(engine)
    files.files["p1"] = phone_photo()
    talk = Talk(engine)
    await talk.say(OPEN)
    await talk.say("1")
    await engine.handle(picture_message("", "p1"))
    await talk.say("1")  # danger: yes, the case is created now
    (tip,) = await store.tips.list(None)
    assert await store.pictures.count_for_tip(tip.id) == 1
