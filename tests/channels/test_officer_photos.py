"""Officers see a case's pictures only in their group, protected, and every look is audited."""

from __future__ import annotations

import io

from PIL import Image

from tests.channels.officer_app import (  # noqa: F401 - fake_server, fake and serve are fixtures used by name
    Group,
    case_of,
    fake,
    fake_server,
    file_urgent_tip,
    serve,
    tipster,
)
from tests.channels.test_telegram_app import CATALOGUES, CHAT
from tests.fakes.images import phone_photo
from tests.fakes.telegram_api import FakeTelegramAPI, make_photo_update


def test_an_urgent_case_s_photos_are_counted_in_alerts_and_sent_protected_on_request(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    person = tipster(fake, running)
    file_urgent_tip(person)
    case = case_of(running)
    fake.add_file("plate-800", phone_photo(120, 80, orientation=6))
    person.post(make_photo_update(person.new_update_id(), CHAT, file_id="plate"))
    assert CATALOGUES.text("en", "picture.kept", count=1, limit=10) in [m["text"] for m in person.sent()]

    running.settled()

    (answer,) = group.type(f"/photos {case}")
    assert answer["text"] == CATALOGUES.text("en", "officer.photos.header", case=case, count=1)
    assert answer["protect_content"] == "true"
    (photo,) = fake.sent_photos(-1001)
    assert photo["protect_content"] is True
    assert photo["caption"] == CATALOGUES.text("en", "officer.photos.caption", case=case, index=1, count=1)
    picture = Image.open(io.BytesIO(photo["photo_bytes"]))
    assert picture.size == (80, 120) and not picture.getexif() and "xmp" not in picture.info
    # Looked at, and audited like /show.
    entries = running.on_server(running.runtime.store.audit.entries())
    assert [e.action for e in entries][-1] == "photos"
    # /show counts them too, and points to /photos.
    running.settled()
    (shown,) = group.type(f"/show {case}")
    assert CATALOGUES.text("en", "alert.pictures", count=1, case=case) in shown["text"]
    assert fake.sent_photos(CHAT) == []  # the tipster is never sent the picture back


def test_photos_of_a_case_without_any_says_so(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    file_urgent_tip(tipster(fake, running))
    case = case_of(running)
    running.settled()
    (answer,) = group.type(f"/photos {case}")
    assert answer["text"] == CATALOGUES.text("en", "officer.photos.none", case=case)
    assert fake.sent_photos() == []


def test_exit_after_a_photo_erases_it_and_officers_get_none(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    person = tipster(fake, running)
    file_urgent_tip(person)
    case = case_of(running)
    fake.add_file("room-800", phone_photo())
    person.post(make_photo_update(person.new_update_id(), CHAT, file_id="room"))
    assert running.rows("pictures") == 1
    person.say("EXIT")
    assert running.rows("pictures") == 0
    running.settled()
    (answer,) = group.type(f"/photos {case}")  # the case was withdrawn, its content erased
    assert answer["text"] == CATALOGUES.text("en", "officer.unknown_case", case=case)
    assert fake.sent_photos() == []


def test_an_alert_about_a_case_with_photos_has_a_photos_button(serve, fake: FakeTelegramAPI) -> None:
    running = serve()
    group = Group(fake, running.url)
    person = tipster(fake, running)
    file_urgent_tip(person)
    case = case_of(running)
    urgent = group.alert(CATALOGUES.text("en", "alert.urgent", case=case))
    buttons = [b["callback_data"] for row in urgent["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == [f"o:ack:{case}", f"o:show:{case}"]  # no pictures yet: no Photos button
    fake.add_file("van-800", phone_photo())
    person.post(make_photo_update(person.new_update_id(), CHAT, file_id="van"))
    person.say("Motel Lune")  # the place: an update alert, about a case that now has a picture
    update = group.wait_for(lambda: next((m for m in group.sent() if "o:photos:" in str(m.get("reply_markup"))), None))
    assert CATALOGUES.text("en", "alert.pictures", count=1, case=case) in update["text"]
    group.press(f"o:photos:{case}")
    (photo,) = fake.sent_photos(-1001)
    assert photo["protect_content"] is True
