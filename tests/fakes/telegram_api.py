"""An in-memory fake of the Telegram Bot API, served as a Starlette app.

Point the real python-telegram-bot client at it::

    api = FakeTelegramAPI()
    with LoopbackServer(api.app) as server:
        bot = telegram.Bot(TOKEN, base_url=f"{server.url}/bot")

PTB 22 POSTs every call as ``application/x-www-form-urlencoded`` (or
``multipart/form-data`` when uploading files) where each value is a string:
plain strings as-is, everything else ``json.dumps``-ed (ints -> "42",
bools -> "true", dicts/lists -> JSON).  We decode JSON containers back to
Python objects and keep scalars as sent; JSON bodies are accepted too.

The server runs in uvicorn's thread while tests inspect state from the main
thread, so all state lives behind one ``threading.RLock``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BOT_USER = {"id": 999, "is_bot": True, "first_name": "Tipline", "username": "tipline_test_bot",
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False}
# Free-text fields are never JSON-decoded, even if a user types "[1, 2]".
_FREE_TEXT = {"text", "caption", "title", "description", "short_description", "name",
              "question", "explanation", "message_text", "data", "url", "query"}
_ERRORS = {400: "Bad Request: injected failure", 403: "Forbidden: bot was blocked by the user",
           500: "Internal Server Error", 502: "Bad Gateway"}
_NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and "
                 "reply markup are exactly the same as a current content and reply markup "
                 "of the message")


@dataclass
class Call:
    """One request received by the fake (failed ones included, see ``status``)."""

    method: str
    params: dict[str, Any]
    status: int = 200

    def get_int(self, key: str, default: int | None = None) -> int | None:
        value = self.params.get(key)
        return default if value is None else int(value)

    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self.params.get(key)
        return default if value is None else value in (True, "true", "True", "1", 1)


@dataclass
class _Failure:
    remaining: int
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _decode(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and key not in _FREE_TEXT and value[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def _chat(chat_id: Any) -> dict[str, Any]:
    """Best-effort Chat object from a chat_id the bot sent (int-like or @username)."""
    text = str(chat_id)
    if text.startswith("@"):
        return {"id": -1000000000001, "type": "channel", "username": text[1:], "title": text}
    cid = int(text)
    if cid > 0:
        return {"id": cid, "type": "private"}
    kind = "supergroup" if text.startswith("-100") else "group"
    return {"id": cid, "type": kind, "title": f"Chat {cid}"}


class FakeTelegramAPI:
    """State + Starlette ``app`` that answers a subset of Bot API methods."""

    def __init__(self, token: str | None = None, max_long_poll: float = 1.0) -> None:
        self.token = token  # if set, other tokens get 401 like the real API
        self.max_long_poll = max_long_poll
        # RLock: stub handlers run with the lock held and may call helpers.
        self._lock = threading.RLock()
        always_true = lambda p: True  # noqa: E731
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": lambda p: dict(BOT_USER), "sendMessage": self._send_message,
            "editMessageText": self._edit_text, "editMessageReplyMarkup": self._edit_markup,
            "deleteMessage": self._delete, "deleteMessages": self._delete,
            "answerCallbackQuery": always_true, "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook, "getWebhookInfo": self._webhook_info,
            "setMyCommands": self._set_commands, "getMyCommands": self._get_commands,
            "close": always_true, "logOut": always_true,
            "getFile": self._get_file, "sendPhoto": self._send_photo,
        }
        # Bot API method names are case-insensitive; we record the canonical name.
        self._canonical = {name.lower(): name for name in [*self._handlers, "getUpdates"]}
        self._handlers = {name.lower(): fn for name, fn in self._handlers.items()}
        self.clear()
        self.app = Starlette(routes=[
            Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
            Route("/file/bot{token}/{path:path}", self._download, methods=["GET"])])

    # -- test-facing helpers ---------------------------------------------------

    def clear(self) -> None:
        """Forget calls, messages, queued updates, failures and settings."""
        with self._lock:
            self.calls: list[Call] = []
            self.messages: dict[tuple[str, int], dict[str, Any]] = {}
            self.updates: list[dict[str, Any]] = []
            self.commands: dict[tuple[str, str], list[Any]] = {}
            self.webhook_url = ""
            self._failures: dict[str, list[_Failure]] = {}
            self._chat_failures: dict[str, tuple[int, str]] = {}
            self._migrated: dict[str, int] = {}
            self._stubs: dict[str, Callable[[dict[str, Any]], Any]] = {}
            self._down = False
            self.files: dict[str, bytes] = {}  # file_id -> bytes, served by getFile + download
            self.downloads: list[str] = []  # file paths downloaded
            self._ids = itertools.count(1)

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent_messages(self, chat_id: Any = None) -> list[dict[str, Any]]:
        """Params of *successful* sendMessage calls, optionally for one chat."""
        return [c.params for c in self.calls_of("sendMessage") if c.status == 200
                and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))]

    def add_file(self, file_id: str, data: bytes) -> None:
        """A file a user sent, which getFile describes and /file/bot<token>/<path> serves."""
        with self._lock:
            self.files[file_id] = data

    def sent_photos(self, chat_id: Any = None) -> list[dict[str, Any]]:
        """Photos the bot sent: each with ``photo_bytes`` (the upload) and its parameters."""
        with self._lock:
            return [m for m in self.messages.values() if "photo_bytes" in m and (chat_id is None or str(m["chat"]["id"]) == str(chat_id))]

    def push_update(self, update: dict[str, Any]) -> None:
        with self._lock:
            self.updates.append(update)

    def fail_next(self, method: str, times: int = 1, status: int = 429, retry_after: int = 1,
                  description: str | None = None) -> None:
        """Make the next ``times`` calls of ``method`` fail like Telegram would."""
        body: dict[str, Any] = {"ok": False, "error_code": status}
        if status == 429:
            body["description"] = description or f"Too Many Requests: retry after {retry_after}"
            body["parameters"] = {"retry_after": retry_after}
        else:
            body["description"] = description or _ERRORS.get(status, "Injected failure")
        with self._lock:
            self._failures.setdefault(method.lower(), []).append(_Failure(times, status, body))

    def fail_chat(self, chat_id: Any, status: int | None = 502, description: str | None = None) -> None:
        """Make every ``send*`` call to ``chat_id`` fail with ``status`` (an error Telegram
        answers for one chat only: a 5xx from its data centre, or 403 for a blocked bot) until
        called again with ``status=None``. Other chats are not affected. ``description``:
        Telegram's words for it (e.g. "Forbidden: bot was kicked from the supergroup chat")."""
        with self._lock:
            if status is None:
                self._chat_failures.pop(str(chat_id), None)
            else:
                self._chat_failures[str(chat_id)] = (status, description or _ERRORS.get(status, "Injected failure"))

    def migrate_chat(self, chat_id: Any, new_chat_id: int) -> None:
        """The group ``chat_id`` became the supergroup ``new_chat_id``: every ``send*`` to the old id
        answers 400 with ``migrate_to_chat_id``, as Telegram does."""
        with self._lock:
            self._migrated[str(chat_id)] = new_chat_id

    def set_down(self, down: bool = True) -> None:
        """While down, every method answers HTTP 502 (an outage)."""
        with self._lock:
            self._down = down

    def stub(self, method: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        """Answer ``method`` with ``handler(params)`` as ``result`` (adds/overrides).

        The handler runs in the server thread; raise ``ApiError`` for an error.
        """
        with self._lock:
            self._stubs[method.lower()] = handler
            self._canonical.setdefault(method.lower(), method)

    # -- HTTP plumbing ---------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        params = _decode({**dict(request.query_params), **await self._body(request)})
        key = method.lower()
        with self._lock:
            status, body = self._precheck(token, key)
            chat_failure = self._chat_failures.get(str(params.get("chat_id")))
            if body is None and chat_failure is not None and key.startswith("send"):
                status, description = chat_failure
                body = {"ok": False, "error_code": status, "description": description}
            moved_to = self._migrated.get(str(params.get("chat_id")))
            if body is None and moved_to is not None and key.startswith("send"):
                status, body = 400, {"ok": False, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat",
                                     "parameters": {"migrate_to_chat_id": moved_to}}
            call = Call(self._canonical.get(key, method), params, status)
            self.calls.append(call)
        if body is None:
            try:
                body = {"ok": True, "result": await self._dispatch(key, params, request)}
            except ApiError as err:
                status, body = err.status, {"ok": False, "error_code": err.status,
                                            "description": err.description}
                with self._lock:
                    call.status = status
        return JSONResponse(body, status_code=status)

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            return dict(await request.json() or {})
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            # `async with` closes multipart temp files (else ResourceWarning).
            async with request.form() as form:
                out: dict[str, Any] = {}
                for k, v in form.multi_items():
                    out[k] = ({"filename": v.filename, "content": await v.read()}
                              if isinstance(v, UploadFile) else v)
                return out
        return {}

    def _precheck(self, token: str, key: str) -> tuple[int, dict[str, Any] | None]:
        """Outage / bad token / injected failure / unknown method (lock held)."""
        if self._down:
            return 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}
        if self.token is not None and token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        queue = self._failures.get(key)
        if queue:
            failure = queue[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                queue.pop(0)
            return failure.status, failure.body
        if key not in self._handlers and key not in self._stubs and key != "getupdates":
            return 404, {"ok": False, "error_code": 404,
                         "description": "Not Found: method not found"}
        return 200, None

    async def _dispatch(self, key: str, params: dict[str, Any], request: Request) -> Any:
        if key == "getupdates" and key not in self._stubs:
            return await self._get_updates(params, request)
        with self._lock:
            try:
                return (self._stubs.get(key) or self._handlers[key])(params)
            except KeyError as err:  # a required parameter is missing
                raise ApiError(400, f"Bad Request: {err.args[0]} is empty") from None
            except (ValueError, TypeError) as err:  # e.g. chat_id="abc"
                raise ApiError(400, f"Bad Request: invalid parameter ({err})") from None

    # -- methods (called with the lock held, except the long-poll) ---------------

    async def _get_updates(self, params: dict[str, Any], request: Request) -> list[Any]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        # Long-poll, capped so a test never waits more than ``max_long_poll``.
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), self.max_long_poll)
        while True:
            with self._lock:
                if self.webhook_url:
                    raise ApiError(409, "Conflict: can't use getUpdates method while "
                                         "webhook is active; use deleteWebhook to delete "
                                         "the webhook first")
                if offset > 0:  # like Telegram: an offset confirms everything below it
                    self.updates = [u for u in self.updates if u["update_id"] >= offset]
                elif offset < 0:
                    self.updates = self.updates[offset:]
                if self.updates or time.monotonic() >= deadline:
                    return list(self.updates[:limit])
            # A client that gave up (PTB cancels its poll on shutdown) would
            # otherwise keep uvicorn's graceful shutdown waiting for us.
            if await request.is_disconnected():
                return []
            await asyncio.sleep(0.01)

    def _send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        msg = {"message_id": next(self._ids), "date": int(time.time()),
               "chat": _chat(p["chat_id"]), "from": dict(BOT_USER), "text": p["text"]}
        for extra in ("reply_markup", "entities", "message_thread_id"):
            if extra in p:
                msg[extra] = p[extra]
        reply = p.get("reply_parameters")
        if reply is not None:
            replied = self.messages.get((str(p["chat_id"]), int(reply["message_id"])))
            if replied is None and not reply.get("allow_sending_without_reply"):
                raise ApiError(400, "Bad Request: message to be replied not found")
            if replied is not None:
                msg["reply_to_message"] = dict(replied)
        self.messages[(str(p["chat_id"]), msg["message_id"])] = msg
        return msg

    def _get_file(self, p: dict[str, Any]) -> dict[str, Any]:
        file_id = str(p["file_id"])
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        return {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": len(self.files[file_id]),
                "file_path": f"photos/{file_id}.bin"}

    async def _download(self, request: Request) -> Response:
        token, path = request.path_params["token"], request.path_params["path"]
        with self._lock:
            if self.token is not None and token != self.token:
                return Response(status_code=401)
            file_id = path.removeprefix("photos/").removesuffix(".bin")
            self.downloads.append(path)
            data = self.files.get(file_id)
        return Response(status_code=404) if data is None else Response(data, media_type="application/octet-stream")

    def _send_photo(self, p: dict[str, Any]) -> dict[str, Any]:
        photo = p["photo"]
        if not isinstance(photo, dict):
            raise ApiError(400, "Bad Request: photo must be an upload here")
        msg = {"message_id": next(self._ids), "date": int(time.time()), "chat": _chat(p["chat_id"]),
               "from": dict(BOT_USER), "photo": [{"file_id": f"sent-{time.time_ns()}", "file_unique_id": "x", "width": 1, "height": 1}],
               "photo_bytes": photo["content"], "caption": p.get("caption"),
               "protect_content": p.get("protect_content") in (True, "true", "True", "1")}
        self.messages[(str(p["chat_id"]), msg["message_id"])] = msg
        return {k: v for k, v in msg.items() if k not in ("photo_bytes", "protect_content")}

    def _edit(self, p: dict[str, Any], text: Any) -> Any:
        if "inline_message_id" in p:
            return True
        mkey = (str(p["chat_id"]), int(p["message_id"]))
        # Unknown messages (e.g. from pushed updates) are accepted leniently.
        old = self.messages.get(mkey) or {"message_id": mkey[1], "date": int(time.time()),
                                          "chat": _chat(p["chat_id"]), "from": dict(BOT_USER)}
        new = {k: v for k, v in old.items() if k not in ("text", "reply_markup")}
        new.update({"text": text, "edit_date": int(time.time())})
        if p.get("reply_markup") is not None:
            new["reply_markup"] = p["reply_markup"]
        if mkey in self.messages and all(old.get(k) == new.get(k)
                                         for k in ("text", "reply_markup")):
            raise ApiError(400, _NOT_MODIFIED)  # Telegram really does this
        self.messages[mkey] = new
        return new

    def _edit_text(self, p: dict[str, Any]) -> Any:
        return self._edit(p, p["text"])

    def _edit_markup(self, p: dict[str, Any]) -> Any:
        old = self.messages.get((str(p.get("chat_id")), int(p.get("message_id") or 0)), {})
        return self._edit(p, old.get("text"))

    def _delete(self, p: dict[str, Any]) -> bool:  # deleteMessage and deleteMessages
        for mid in p.get("message_ids") or [p["message_id"]]:
            self.messages.pop((str(p["chat_id"]), int(mid)), None)
        return True

    def _set_webhook(self, p: dict[str, Any]) -> bool:
        self.webhook_url = p["url"]
        return True

    def _delete_webhook(self, p: dict[str, Any]) -> bool:
        self.webhook_url = ""
        if Call("", p).get_bool("drop_pending_updates"):
            self.updates.clear()
        return True

    def _webhook_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.webhook_url, "has_custom_certificate": False,
                "pending_update_count": len(self.updates)}

    @staticmethod
    def _cmd_key(p: dict[str, Any]) -> tuple[str, str]:
        scope = json.dumps(p.get("scope") or {"type": "default"}, sort_keys=True)
        return scope, p.get("language_code") or ""

    def _set_commands(self, p: dict[str, Any]) -> bool:
        self.commands[self._cmd_key(p)] = p["commands"]
        return True

    def _get_commands(self, p: dict[str, Any]) -> list[Any]:
        return self.commands.get(self._cmd_key(p), [])


class ApiError(Exception):
    """Raise from a ``stub`` handler to answer with a Telegram error."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


# -- update builders ---------------------------------------------------------------
# Minimal but valid per the Bot API (Message: message_id, date, chat; User: id,
# is_bot, first_name).  Shared keyword args: user_id (defaults to chat_id in
# private chats, else 1001), message_id (defaults to update_id), chat_type,
# first_name, username, language_code.


def _user(user_id: int, first_name: str, username: str | None, language_code: str | None
          ) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    return user


def _update(update_id: int, chat_id: int, *, key: str = "message", user_id: int | None = None,
            language_code: str | None = "en", chat_type: str = "private",
            message_id: int | None = None, first_name: str = "Alice",
            username: str | None = "alice_w", **content: Any) -> dict[str, Any]:
    if chat_type == "private":
        chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
        if username:
            chat["username"] = username
    else:
        chat = {"id": chat_id, "type": chat_type, "title": f"Chat {chat_id}"}
    msg = {"message_id": update_id if message_id is None else message_id,
           "date": int(time.time()), "chat": chat, **content}
    if chat_type == "channel":  # channel posts have a sender_chat and no from
        msg["sender_chat"] = chat
        key = key.replace("message", "channel_post")
    else:
        uid = user_id if user_id is not None else (chat_id if chat_id > 0 else 1001)
        msg["from"] = _user(uid, first_name, username, language_code)
    return {"update_id": update_id, key: msg}


def _text(text: str) -> dict[str, Any]:
    content: dict[str, Any] = {"text": text}
    if text.startswith("/"):
        # PTB's CommandHandler only fires when a bot_command entity is present;
        # lengths are in UTF-16 code units, like Telegram counts them.
        word = text.split()[0]
        content["entities"] = [{"type": "bot_command", "offset": 0,
                                "length": len(word.encode("utf-16-le")) // 2}]
    return content


def make_text_update(update_id: int, chat_id: int, text: str, user_id: int | None = None,
                     language_code: str | None = "en", chat_type: str = "private",
                     message_id: int | None = None, first_name: str = "Alice",
                     username: str | None = "alice_w") -> dict[str, Any]:
    return _update(update_id, chat_id, user_id=user_id, language_code=language_code,
                   chat_type=chat_type, message_id=message_id, first_name=first_name,
                   username=username, **_text(text))


def make_edited_message_update(update_id: int, chat_id: int, text: str, message_id: int,
                               edit_date: int | None = None, **kw: Any) -> dict[str, Any]:
    return _update(update_id, chat_id, key="edited_message", message_id=message_id,
                   edit_date=edit_date or int(time.time()), **_text(text), **kw)


def make_callback_update(update_id: int, chat_id: int, data: str, message_id: int,
                         user_id: int | None = None, message_text: str = "...",
                         reply_markup: dict[str, Any] | None = None,
                         callback_id: str | None = None, **kw: Any) -> dict[str, Any]:
    """A button press on the bot's message ``message_id`` in ``chat_id``."""
    base = _update(update_id, chat_id, user_id=user_id, message_id=message_id, **kw)
    msg = base.pop("message")
    user = msg["from"]
    msg.update({"from": dict(BOT_USER), "text": message_text})  # the bot wrote it
    if reply_markup is not None:
        msg["reply_markup"] = reply_markup
    base["callback_query"] = {"id": callback_id or f"cbq-{update_id}", "from": user,
                              "chat_instance": f"ci-{chat_id}", "data": data, "message": msg}
    return base


def make_sticker_update(update_id: int, chat_id: int, emoji: str = "\N{THUMBS UP SIGN}",
                        file_id: str = "sticker-file", **kw: Any) -> dict[str, Any]:
    sticker = {"file_id": file_id, "file_unique_id": f"{file_id}-u", "type": "regular",
               "width": 512, "height": 512, "is_animated": False, "is_video": False,
               "emoji": emoji}
    return _update(update_id, chat_id, sticker=sticker, **kw)


def make_photo_update(update_id: int, chat_id: int, caption: str | None = None,
                      file_id: str = "photo-file", **kw: Any) -> dict[str, Any]:
    """A photo in two sizes, ``<file_id>-90`` and ``<file_id>-800`` (the bot fetches the largest)."""
    sizes = [{"file_id": f"{file_id}-{w}", "file_unique_id": f"{file_id}-u{w}",
              "width": w, "height": w * 3 // 4, "file_size": w * 100} for w in (90, 800)]
    extra = {"caption": caption} if caption is not None else {}
    return _update(update_id, chat_id, photo=sizes, **extra, **kw)


def make_document_update(update_id: int, chat_id: int, file_id: str, mime_type: str,
                         file_size: int, caption: str | None = None, **kw: Any) -> dict[str, Any]:
    document = {"file_id": file_id, "file_unique_id": f"{file_id}-u", "file_name": "file",
                "mime_type": mime_type, "file_size": file_size}
    extra = {"caption": caption} if caption is not None else {}
    return _update(update_id, chat_id, document=document, **extra, **kw)


def make_voice_update(update_id: int, chat_id: int, duration: int = 3,
                      file_id: str = "voice-file", **kw: Any) -> dict[str, Any]:
    voice = {"file_id": file_id, "file_unique_id": f"{file_id}-u", "duration": duration,
             "mime_type": "audio/ogg", "file_size": duration * 4000}
    return _update(update_id, chat_id, voice=voice, **kw)


def make_location_update(update_id: int, chat_id: int, latitude: float = 51.5074,
                         longitude: float = -0.1278, **kw: Any) -> dict[str, Any]:
    return _update(update_id, chat_id,
                   location={"latitude": latitude, "longitude": longitude}, **kw)
