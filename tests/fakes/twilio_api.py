"""A fake of the two Twilio REST endpoints the bot uses, for the real twilio client to talk to.

Serve ``FakeTwilioAPI().app`` with ``tests.fakes.server.LoopbackServer`` and pass the server's
``url`` as ``TwilioRest(api_url=...)``. Requests are handled on uvicorn's thread while tests
inspect state from theirs, so all state sits behind one lock.
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-auth-token"

# Twilio's code for a bare HTTP status, used when a test injects a status without a code.
_DEFAULT_CODES = {401: 20003, 404: 20404, 409: 20409, 429: 20429, 500: 20500, 503: 20503}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    form: dict[str, str]
    status: int = 0  # what the fake answered


@dataclass
class _Failure:
    status: int
    code: int | None
    message: str
    remaining: int


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    created: dict[str, dict] = field(default_factory=dict)  # sid -> message JSON
    deleted: list[str] = field(default_factory=list)
    deleted_media: list[tuple[str, str]] = field(default_factory=list)  # (message sid, media sid)
    sent_sids: list[str] = field(default_factory=list)  # every created message, in order
    failures: dict[str, deque[_Failure]] = field(
        default_factory=lambda: {"create": deque(), "delete": deque(), "media": deque()}
    )
    down: bool = False
    media: dict[str, bytes] = field(default_factory=dict)  # media sid -> bytes, served at its URL
    media_fetches: list[tuple[str, bool]] = field(default_factory=list)  # (media sid, credentials sent)
    redirect_media: str | None = None  # like Twilio: answer a media GET with a redirect to this base


def _error(status: int, code: int | None, message: str) -> JSONResponse:
    """Twilio's legacy error body; twilio-python turns it into TwilioRestException."""
    code = code if code is not None else _DEFAULT_CODES.get(status, status)
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


class FakeTwilioAPI:
    def __init__(
        self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Lock()
        self._state = _State()
        base = f"/{API_VERSION}/Accounts/{{account}}"
        self.app = Starlette(
            routes=[
                Route(f"{base}/Messages.json", self._create, methods=["POST"]),
                Route(f"{base}/Messages/{{msid}}.json", self._delete, methods=["DELETE"]),
                Route(f"{base}/Messages/{{msid}}/Media/{{mesid}}.json", self._delete_media, methods=["DELETE"]),
                Route(f"{base}/Messages/{{msid}}/Media/{{mesid}}", self._media, methods=["GET"]),
                Route("/media-store/{mesid}", self._media_store, methods=["GET"]),
            ]
        )

    # -- test controls ------------------------------------------------------

    def fail_next(
        self,
        kind: str,
        times: int = 1,
        status: int = 500,
        code: int | None = None,
        message: str = "Injected failure",
    ) -> None:
        """Answer the next ``times`` authenticated ``kind`` ("create"/"delete") calls with an
        error. Queued failures are used in order."""
        if kind not in ("create", "delete", "media"):
            raise ValueError(f"unknown kind {kind!r}")
        with self._lock:
            self._state.failures[kind].append(_Failure(status, code, message, times))

    def set_down(self, down: bool = True) -> None:
        """Simulate an outage: every request gets HTTP 503 until set_down(False)."""
        with self._lock:
            self._state.down = down

    # -- inspection ---------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._state.calls)

    def sent(self) -> list[dict[str, str]]:
        """Form fields (To, From, Body, ...) of every successfully created message, in order."""
        with self._lock:
            calls = self._state.calls
            return [dict(c.form) for c in calls if c.method == "POST" and c.status == 201]

    def deleted(self) -> list[str]:
        """SIDs of successfully deleted messages, in order."""
        with self._lock:
            return list(self._state.deleted)

    def sent_sids(self) -> list[str]:
        """SIDs of every successfully created message, in order (deleted ones included)."""
        with self._lock:
            return list(self._state.sent_sids)

    def add_media(self, message_sid: str, data: bytes) -> str:
        """Media of an inbound message, as Twilio stores it; returns its path (``MediaUrlN`` is
        the API URL + this path)."""
        media_sid = "ME" + uuid.uuid4().hex
        with self._lock:
            self._state.media[media_sid] = data
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message_sid}/Media/{media_sid}"

    def redirect_media_to(self, base: str | None) -> None:
        """Answer media GETs with a 307 to ``base``/media-store/<sid> (Twilio's media store)."""
        with self._lock:
            self._state.redirect_media = base

    def media_fetches(self) -> list[tuple[str, bool]]:
        with self._lock:
            return list(self._state.media_fetches)

    def deleted_media(self) -> list[tuple[str, str]]:
        """(message SID, media SID) of successfully deleted media, in order."""
        with self._lock:
            return list(self._state.deleted_media)

    # -- handlers -----------------------------------------------------------

    async def _media(self, request: Request) -> Response:
        mesid = request.path_params["mesid"]
        with self._lock:
            self._state.media_fetches.append((mesid, "authorization" in request.headers))
            response = self._guard(request, "media")
            if response is None:
                data = self._state.media.get(mesid)
                if data is None or (request.path_params["msid"], mesid) in self._state.deleted_media:
                    response = _error(404, 20404, f"The requested resource {request.url.path} was not found")
                elif self._state.redirect_media:
                    response = Response(status_code=307, headers={"Location": f"{self._state.redirect_media}/media-store/{mesid}"})
                else:
                    response = Response(data, media_type="image/jpeg")
            self._record(request, {}, response.status_code)
        return response

    async def _media_store(self, request: Request) -> Response:
        mesid = request.path_params["mesid"]
        with self._lock:
            self._state.media_fetches.append((mesid, "authorization" in request.headers))
            data = self._state.media.get(mesid)
        return Response(status_code=404) if data is None else Response(data, media_type="image/jpeg")

    async def _delete_media(self, request: Request) -> Response:
        msid, mesid = request.path_params["msid"], request.path_params["mesid"]
        with self._lock:
            response = self._guard(request, "delete")
            if response is None:
                if msid in self._state.deleted or (msid, mesid) in self._state.deleted_media:
                    response = _error(404, 20404, f"The requested resource {request.url.path} was not found")
                else:
                    self._state.deleted_media.append((msid, mesid))
                    response = Response(status_code=204)
            self._record(request, {}, response.status_code)
        return response

    async def _create(self, request: Request) -> Response:
        # Parse the urlencoded body ourselves: no python-multipart dependency, exact values.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        with self._lock:
            response = self._guard(request, "create") or self._store(form)
            self._record(request, form, response.status_code)
        return response

    async def _delete(self, request: Request) -> Response:
        msid = request.path_params["msid"]
        with self._lock:
            response = self._guard(request, "delete")
            if response is None:
                if msid in self._state.deleted:
                    # Real Twilio: the record is gone, so a second DELETE is a 404.
                    response = _error(
                        404, 20404, f"The requested resource {request.url.path} was not found"
                    )
                else:
                    # Any other SID is accepted: inbound messages were not created here.
                    self._state.deleted.append(msid)
                    self._state.created.pop(msid, None)
                    response = Response(status_code=204)
            self._record(request, {}, response.status_code)
        return response

    # -- helpers (caller holds the lock) ------------------------------------

    def _guard(self, request: Request, kind: str) -> Response | None:
        """Outage, auth and injected failures, in the order Twilio's edge would apply them."""
        if self._state.down:
            return _error(503, 20503, "Service Unavailable")
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        queue = self._state.failures[kind]
        if queue:
            failure = queue[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                queue.popleft()
            return _error(failure.status, failure.code, failure.message)
        return None

    def _authorized(self, request: Request) -> bool:
        if request.path_params.get("account") != self.account_sid:
            return False
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == (self.account_sid, self.auth_token)

    def _store(self, form: dict[str, str]) -> Response:
        if not form.get("To") or not form.get("From") or "Body" not in form:
            return _error(400, 21604, "A 'To' phone number, 'From' and 'Body' are required.")
        sid = "SM" + uuid.uuid4().hex  # 34 chars, like Twilio's
        now = format_datetime(datetime.now(timezone.utc), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        message = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form["From"],
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form["To"],
            "uri": uri,
        }
        self._state.created[sid] = message
        self._state.sent_sids.append(sid)
        return JSONResponse(message, status_code=201)

    def _record(self, request: Request, form: dict[str, str], status: int) -> None:
        self._state.calls.append(Call(request.method, request.url.path, form, status))
