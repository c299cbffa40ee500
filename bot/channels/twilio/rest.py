"""Outbound Twilio REST calls (send an SMS/WhatsApp message, delete a message record).

We use twilio-python's own resource classes so request shapes and error parsing stay Twilio's,
but plug in our own async HTTP client, for three reasons found in twilio 9.13 / aiohttp 3.14:

* ``AsyncTwilioHttpClient`` builds ``aiohttp.BasicAuth``, which aiohttp 3.14 deprecates with a
  ``DeprecationWarning`` on *every request* (fatal under ``-W error``). We send the
  ``Authorization`` header ourselves instead.
* It ignores its own ``timeout`` argument and passes ``timeout=None`` to aiohttp, which means
  "no timeout at all". A hung Twilio connection would stall the outbox forever.
* It opens its ``ClientSession`` in ``__init__``, which needs a running event loop. Ours opens it
  on first use, so ``TwilioRest`` can be built during synchronous start-up wiring.

The REST base URL is redirected through ``client.api.base_url`` (the ``Domain`` object every
``/2010-04-01/...`` resource builds its absolute URL from), which is how tests point the real
client at a loopback fake over plain http.

Privacy: nothing here logs phone numbers or message bodies. Note that ``str()`` of a
``TwilioRestException`` can quote the phone number (e.g. 21211 "The 'To' number +1... is not a
valid phone number"), so callers must log :func:`safe_summary` instead of the exception.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.twilio.com"
WHATSAPP_PREFIX = "whatsapp:"

# Twilio error codes we act on (https://www.twilio.com/docs/api/errors/<code>).
CODE_CANNOT_DELETE_YET = 20009  # "Cannot delete this resource before it is complete"
CODE_TOO_MANY_REQUESTS = 20429

_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class _HttpClient(AsyncTwilioHttpClient):
    """Drop-in replacement for ``AsyncTwilioHttpClient`` (see module docstring for why)."""

    def __init__(self, timeout: float) -> None:
        # pool_connections=False: the parent must not open a ClientSession outside a loop.
        super().__init__(pool_connections=False, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        params: Optional[Dict[str, object]] = None,
        data: Optional[Dict[str, object]] = None,
        headers: Optional[Dict[str, str]] = None,
        auth: Optional[Tuple[str, str]] = None,
        timeout: Optional[float] = None,
        allow_redirects: bool = False,
    ) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.request(
            method.upper(),
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as resp:
            text = await resp.text()
            return Response(resp.status, text, resp.headers)

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()


class TwilioRest:
    """The few Twilio REST operations the bot needs. Errors propagate; see :func:`classify`."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 15.0,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("api_url must be an absolute http(s) URL")
        # Plain http would put the auth token on the wire; only acceptable for a local fake.
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            raise ValueError("api_url may only use plain http on a loopback address")
        self._from = from_number
        self._http = _HttpClient(timeout=timeout)
        # Explicit credentials, so TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN in the env never win.
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = api_url.rstrip("/")
        # ClientBase.get_hostname() rewrites the host for edge/region (also read from the
        # TWILIO_EDGE / TWILIO_REGION env vars): "127.0.0.1" would become "127.ie1.0.1".
        # api_url is the one knob; for a regional endpoint pass e.g. its full hostname.
        self._client.edge = None
        self._client.region = None

    async def send_sms(self, to: str, body: str) -> str:
        """Send ``body`` to ``to`` (E.164, or ``whatsapp:+E.164``); return the message SID."""
        sender = self._from
        if to.startswith(WHATSAPP_PREFIX) and not sender.startswith(WHATSAPP_PREFIX):
            sender = WHATSAPP_PREFIX + sender
        message = await self._client.messages.create_async(to=to, from_=sender, body=body)
        log.debug("twilio message created sid=%s", message.sid)
        return message.sid

    async def delete_message(self, sid: str) -> None:
        """Delete Twilio's copy of a message (body and metadata), e.g. to redact a tip."""
        await self._client.messages(sid).delete_async()
        log.debug("twilio message deleted sid=%s", sid)

    async def delete_media(self, message_sid: str, media_sid: str) -> None:
        """Delete one picture (or other media) of a message Twilio still stores."""
        await self._client.messages(message_sid).media(media_sid).delete_async()
        log.debug("twilio media deleted sid=%s", media_sid)

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent; the instance may be reused (it reopens lazily)."""
        await self._http.close()


def classify(exc: BaseException) -> str:
    """Map a failure from :class:`TwilioRest` to what the caller should do about it.

    * ``"retry"``: transient - throttling (429), Twilio-side errors (5xx), network/timeouts.
    * ``"too_early"``: deleting a message Twilio has not finished with (code 20009, or a 409 on
      DELETE); Twilio says wait a minute or more and try again.
    * ``"permanent"``: anything else, e.g. 21610 (recipient opted out with STOP), 21211 (invalid
      'To' number), 401 (bad credentials), 404 (already deleted). Unknown exception types are
      also permanent, so a programming error or an unparseable 2xx (the message may have gone
      out) is not retried into a loop of duplicate sends.
    """
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)):
        return "retry"
    if not isinstance(exc, (TwilioRestException, TwilioServiceException)):
        return "permanent"
    # Both exception types expose .status (HTTP) and .code (Twilio code). TwilioServiceException
    # (RFC 9457 bodies) is *not* a TwilioRestException subclass in twilio 9.
    status = exc.status or 0
    code = exc.code
    if code == CODE_CANNOT_DELETE_YET:
        return "too_early"
    if status == 409 and (exc.method or "").upper() == "DELETE":
        return "too_early"
    if status == 429 or code == CODE_TOO_MANY_REQUESTS or status >= 500:
        return "retry"
    if 400 <= status < 500:
        return "permanent"
    return "retry"  # a non-error status raised as an error: odd, but not the caller's fault


def safe_summary(exc: BaseException) -> str:
    """A log-safe one-liner for ``exc``: never includes Twilio's message text (it may quote a
    phone number) nor a URL."""
    if isinstance(exc, (TwilioRestException, TwilioServiceException)):
        return f"twilio HTTP {exc.status} code {exc.code} ({classify(exc)})"
    return f"{type(exc).__name__} ({classify(exc)})"
