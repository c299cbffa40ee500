"""Pictures by MMS / WhatsApp: fetched from the Twilio API host only, stripped, encrypted, and
deleted at Twilio. The REST double serves real image files made with Pillow (EXIF GPS, XMP,
orientation)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.channels.twilio import channel as twilio_sms
from bot.channels.twilio.media import twilio_media_host
from tests.channels.test_twilio_sms import (  # noqa: F401 - fixtures used by name
    ACCOUNT_SID,
    Tipline,
    catalogue,
    fake_twilio,
    inbound,
    messages,
    tipline_factory,
    wait_for,
)
from tests.fakes.images import PLANTED, XMP_MARKER, bomb_png, phone_photo

SENDER = "+15145550777"
TO_DETAILS = ["Hello", "2", "2", "2", "2", "Motel Lune", "3"]


@pytest.fixture
async def tipline(tipline_factory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Tipline]:
    monkeypatch.setattr(twilio_sms, "REDACT_DELAY_SECONDS", 0.0)
    async with tipline_factory() as running:
        yield running


def with_media(tipline: Tipline, body: str, *files: tuple[bytes, str], url: str | None = None) -> dict[str, str]:
    form = inbound(SENDER, body)
    form["NumMedia"] = str(len(files))
    for index, (data, content_type) in enumerate(files):
        path = tipline.fake.add_media(form["MessageSid"], data)
        form[f"MediaUrl{index}"] = url or (tipline.settings.twilio.api_url.rstrip("/") + path)
        form[f"MediaContentType{index}"] = content_type
    return form


def replies_of(response) -> list[str]:
    """Each reply on its own (TwiML joins a turn's replies with a blank line to save segments)."""
    return [part for message in messages(response) for part in message.split("\n\n")]


async def to_details(tipline: Tipline) -> None:
    for text in TO_DETAILS:
        assert await tipline.say(SENDER, text)


async def stored_pictures(tipline: Tipline) -> list[bytes]:
    async with tipline.store() as store:
        (tip,) = await store.tips.list(None)
        return [await store.pictures.get(i) for i in await store.pictures.ids_for_tip(tip.id)]


async def test_an_mms_photo_is_kept_stripped_upright_encrypted_and_deleted_at_twilio(tipline: Tipline, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    original = phone_photo(120, 80, orientation=6)
    await to_details(tipline)
    form = with_media(tipline, "the van", (original, "image/jpeg"))
    replies = replies_of(await tipline.post(form))
    assert replies == [catalogue("en", "picture.kept", count=1, limit=10), catalogue("en", "details.more")]
    for text in ("DONE", "2", "1"):
        assert await tipline.say(SENDER, text)

    (kept,) = await stored_pictures(tipline)
    picture = Image.open(io.BytesIO(kept))
    assert picture.format == "JPEG" and picture.size == (80, 120)  # turned upright by its orientation tag
    assert not picture.getexif() and "exif" not in picture.info and "xmp" not in picture.info
    rgb = picture.convert("RGB")
    assert rgb.getpixel((40, 5))[0] > 150 and rgb.getpixel((40, 115))[2] > 150  # red on top, blue below
    # The fetch carried the account's credentials, to the API host; then Twilio's copy went.
    ((media_sid, credentials),) = tipline.fake.media_fetches()
    assert credentials
    await wait_for(lambda: (form["MessageSid"], media_sid) in tipline.fake.deleted_media())
    # Nothing of the original anywhere: the database, WAL and logs.
    raw = tipline.raw_data()
    for planted in (*PLANTED, "Exif", "GPS", "the van", SENDER):
        assert planted.encode() not in raw, planted
    assert original[:400] not in raw and kept[100:300] not in raw  # neither copy is stored in clear
    logged = caplog.text
    for secret in (*PLANTED, form["MediaUrl0"]):  # (SIDs are logged at DEBUG when deleted: no content)
        assert secret not in logged


async def test_the_review_and_the_alert_count_the_pictures(tipline: Tipline) -> None:
    await to_details(tipline)
    form = with_media(tipline, "", (phone_photo(), "image/jpeg"), (phone_photo(fmt="PNG"), "image/png"))
    replies = replies_of(await tipline.post(form))
    assert catalogue("en", "picture.kept", count=2, limit=10) in replies
    assert replies[-1] == catalogue("en", "details.question")  # a picture alone answers nothing: asked again
    await tipline.say(SENDER, "DONE")
    review = await tipline.say(SENDER, "2")
    assert f"{catalogue('en', 'summary.pictures')}: 2" in review[0]
    await tipline.say(SENDER, "1")
    assert len(await stored_pictures(tipline)) == 2


@pytest.mark.parametrize(
    ("files", "key"),
    [
        ([(b"\x00\x00\x00 ftypmp42 a video", "video/mp4")], "media.note"),
        ([(b"this is not a picture at all", "image/jpeg")], "picture.unreadable"),
        ([(bomb_png(), "image/png")], "picture.too_big"),
    ],
    ids=["a-video", "not-an-image", "decompression-bomb"],
)
async def test_what_is_not_a_keepable_picture_is_refused_calmly_and_nothing_is_stored(tipline: Tipline, files, key) -> None:
    await to_details(tipline)
    replies = replies_of(await tipline.post(with_media(tipline, "", *files)))
    assert replies[0].startswith(catalogue("en", key, mb=10)[:30])
    assert replies[-1] == catalogue("en", "details.question")
    async with tipline.store() as store:
        assert await store.pictures.count() == 0


async def test_an_oversized_picture_is_refused_with_the_limit(tipline_factory, monkeypatch) -> None:
    monkeypatch.setattr(twilio_sms, "REDACT_DELAY_SECONDS", 0.0)
    async with tipline_factory(pictures={"max_bytes": 2048}) as tipline:
        await to_details(tipline)
        big = phone_photo(900, 700)
        assert len(big) > 2048
        replies = replies_of(await tipline.post(with_media(tipline, "", (big, "image/jpeg"))))
        assert replies[0] == catalogue("en", "picture.too_big", mb=0)
        async with tipline.store() as store:
            assert await store.pictures.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/2010-04-01/Accounts/{account}/Messages/{sid}/Media/ME" + "0" * 32,
        "{api}/2010-04-01/Accounts/AC" + "9" * 32 + "/Messages/{sid}/Media/ME" + "0" * 32,
        "{api}/2010-04-01/Accounts/{account}/Messages/SM" + "1" * 32 + "/Media/ME" + "0" * 32,
        "{api}/2010-04-01/Accounts/{account}/Messages/{sid}/Media/../../../Messages.json",
    ],
    ids=["another-host", "another-account", "another-message", "a-wandering-path"],
)
async def test_a_media_url_not_of_this_message_at_the_api_host_is_never_fetched(tipline: Tipline, url: str) -> None:
    await to_details(tipline)
    form = with_media(tipline, "", (phone_photo(), "image/jpeg"))
    form["MediaUrl0"] = url.format(api=tipline.settings.twilio.api_url.rstrip("/"), account=ACCOUNT_SID, sid=form["MessageSid"])
    replies = replies_of(await tipline.post(form))
    assert replies[0] == catalogue("en", "picture.not_received")
    assert tipline.fake.media_fetches() == []


async def test_a_redirect_off_twilio_is_not_followed(tipline: Tipline) -> None:
    tipline.fake.redirect_media_to("http://127.0.0.2:9")  # not one of Twilio's media hosts
    await to_details(tipline)
    replies = replies_of(await tipline.post(with_media(tipline, "", (phone_photo(), "image/jpeg"))))
    assert replies[0] == catalogue("en", "picture.not_received")
    assert len(tipline.fake.media_fetches()) == 1  # the API host only


async def test_a_redirect_to_the_same_host_media_store_is_followed(tipline: Tipline) -> None:
    tipline.fake.redirect_media_to(tipline.settings.twilio.api_url.rstrip("/"))
    await to_details(tipline)
    replies = replies_of(await tipline.post(with_media(tipline, "", (phone_photo(), "image/jpeg"))))
    assert replies[0] == catalogue("en", "picture.kept", count=1, limit=10)
    assert len(tipline.fake.media_fetches()) == 2


def test_only_twilio_media_hosts_over_https_are_followed() -> None:
    assert twilio_media_host("https://mms.twiliocdn.com/AC1/abc")
    assert twilio_media_host("https://s3-external-1.amazonaws.com/media.twiliocdn.com/AC1/abc")
    assert not twilio_media_host("http://mms.twiliocdn.com/AC1/abc")  # not https
    assert not twilio_media_host("https://evil.example/media.twiliocdn.com/x")
    assert not twilio_media_host("https://s3.amazonaws.com/someone-else/x")
    assert not twilio_media_host("https://twiliocdn.com.evil.example/x")


async def test_a_failed_fetch_is_said_and_the_text_is_kept(tipline: Tipline) -> None:
    await to_details(tipline)
    tipline.fake.fail_next("media", status=500)
    replies = replies_of(await tipline.post(with_media(tipline, "white van, plate ABC 123", (phone_photo(), "image/jpeg"))))
    assert replies == [catalogue("en", "picture.not_received"), catalogue("en", "details.more")]
    await tipline.say(SENDER, "DONE")
    review = await tipline.say(SENDER, "2")
    assert "white van" in review[0]


async def test_exit_after_pictures_leaves_none(tipline: Tipline) -> None:
    await to_details(tipline)
    original = phone_photo()
    await tipline.post(with_media(tipline, "", (original, "image/jpeg")))
    async with tipline.store() as store:
        (picture_id,) = [r[0] for r in await store.pictures._all("SELECT id FROM pictures")]
        sealed = (await store.pictures._one("SELECT image FROM pictures WHERE id = ?", (picture_id,)))[0]
    assert sealed[40:120] in tipline.raw_data()  # the sealed copy is there, in the database or its WAL
    assert await tipline.say(SENDER, "EXIT") == [catalogue("en", "erased")]
    async with tipline.store() as store:
        assert await store.pictures.count() == 0
    raw = tipline.raw_data()
    assert sealed[40:120] not in raw and picture_id.encode() not in raw  # secure_delete, and the WAL cut
    assert XMP_MARKER.encode() not in raw


async def test_more_than_the_limit_is_said_and_not_kept(tipline_factory, monkeypatch) -> None:
    monkeypatch.setattr(twilio_sms, "REDACT_DELAY_SECONDS", 0.0)
    async with tipline_factory(pictures={"per_report": 2}) as tipline:
        await to_details(tipline)
        photos = [(phone_photo(), "image/jpeg")] * 3
        replies = replies_of(await tipline.post(with_media(tipline, "", *photos)))
        assert catalogue("en", "picture.full", limit=2) in replies
        async with tipline.store() as store:
            assert await store.pictures.count() == 2


async def test_a_picture_with_no_declared_type_is_decided_by_decoding(tipline: Tipline) -> None:
    await to_details(tipline)
    replies = replies_of(await tipline.post(with_media(tipline, "", (phone_photo(), ""), (b"GIF89a broken", "image/tiff"))))
    assert catalogue("en", "picture.kept", count=1, limit=10) in replies
    assert catalogue("en", "picture.unreadable") in replies
