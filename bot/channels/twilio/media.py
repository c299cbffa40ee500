"""Pictures of an MMS or WhatsApp message, fetched from Twilio.

A webhook's ``MediaUrl{N}`` is only believed when it points at the configured Twilio API host,
under this account and this very message (``/2010-04-01/Accounts/AC…/Messages/MM…/Media/ME…``);
anything else (another host, another account, a path that wanders) is never fetched, and the
person is told the picture could not be received. The fetch sends the account's credentials to
that host only. Twilio answers with a redirect to its media store; it is followed (without
credentials, https only) only to Twilio's own media hosts, at most twice. The body is read up to
the size limit and no further.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import urljoin, urlsplit

import aiohttp
from starlette.datastructures import ImmutableMultiDict

from bot.messages import MediaRef
from bot.pictures import PictureRefused, Refusal
from bot.settings import TwilioSettings

SOURCE = "twilio"
_MEDIA_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages/((?:MM|SM)[0-9a-fA-F]{32})/Media/ME[0-9a-fA-F]{32}$")
MAX_REDIRECTS = 2
CHUNK = 64 * 1024


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def media_refs(form: ImmutableMultiDict, count: int, message_sid: str, settings: TwilioSettings) -> tuple[MediaRef, ...]:
    """The message's media as references to fetch; one that fails the checks is kept unfetchable
    (so the person still hears about it)."""
    refs = []
    for index in range(count):
        url = form.get(f"MediaUrl{index}", "")
        content_type = form.get(f"MediaContentType{index}", "")
        path = urlsplit(url).path
        found = _MEDIA_PATH.match(path)
        ours = (
            found is not None
            and _origin(url) == _origin(settings.api_url)
            and found.group(1) == settings.account_sid
            and found.group(2) == message_sid
            and not urlsplit(url).query
        )
        refs.append(MediaRef(SOURCE, path if ours else "", content_type[:100], None, fetchable=ours))
    return tuple(refs)


def twilio_media_host(url: str) -> bool:
    """Where Twilio's media redirect may lead: its own media hosts, over https."""
    scheme, host, _ = _origin(url)
    if scheme != "https":
        return False
    if host.endswith(".twiliocdn.com") or host.endswith(".twilio.com") or host == "twilio.com":
        return True
    # The media store's S3 bucket, addressed by path (s3-external-1.amazonaws.com/media.twiliocdn.com/…).
    return host.endswith(".amazonaws.com") and urlsplit(url).path.startswith("/media.twiliocdn.com/")


class TwilioPictureSource:
    def __init__(self, settings: TwilioSettings) -> None:
        assert settings.account_sid and settings.auth_token
        self._base = settings.api_url.rstrip("/")
        secret = f"{settings.account_sid}:{settings.auth_token.get_secret_value()}"
        self._auth = "Basic " + base64.b64encode(secret.encode()).decode("ascii")
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, ref: MediaRef, max_bytes: int) -> bytes:
        if not ref.fetchable or not _MEDIA_PATH.match(ref.locator):
            raise PictureRefused(Refusal.NOT_RECEIVED)
        if self._session is None:
            # The receiver's deadline cuts a slow fetch sooner; this bounds one that nobody awaits.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        url, headers = self._base + ref.locator, {"Authorization": self._auth}
        for _ in range(MAX_REDIRECTS + 1):
            async with self._session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    target = urljoin(url, response.headers.get("Location", ""))
                    if not twilio_media_host(target) and _origin(target) != _origin(self._base):
                        raise PictureRefused(Refusal.NOT_RECEIVED)
                    # Credentials go to the API host only, never to where it points.
                    url, headers = target, (headers if _origin(target) == _origin(self._base) else {})
                    continue
                if response.status != 200:
                    raise PictureRefused(Refusal.NOT_RECEIVED)
                if (response.content_length or 0) > max_bytes:
                    raise PictureRefused(Refusal.TOO_BIG)
                return await _read_capped(response, max_bytes)
        raise PictureRefused(Refusal.NOT_RECEIVED)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PictureRefused(Refusal.TOO_BIG)
    return bytes(body)
