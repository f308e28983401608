"""A fake Telegram Bot API server for tests (aiohttp on 127.0.0.1, port 0).

Follows the wire format of https://core.telegram.org/bots/api#making-requests: methods are
``POST /bot{token}/{method}`` with form-encoded, multipart or JSON parameters (objects such as
``reply_markup`` JSON-encoded in form fields), answered with ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code", "description", "parameters"?}``. Files are served at
``/file/bot{token}/{file_path}``.

Implemented: ``getMe``, ``sendMessage``, ``sendChatAction``, ``answerCallbackQuery``,
``setWebhook``, ``deleteWebhook``, ``getUpdates`` (long poll honouring ``offset`` and
``timeout``; a second concurrent ``getUpdates`` ends the open one with 409 ``Conflict:
terminated by other getUpdates request``, as Telegram does, counted in
:attr:`FakeTelegramAPI.conflicts`; :attr:`FakeTelegramAPI.max_concurrent_polls`), ``getFile``.
Every call is recorded in :attr:`FakeTelegramAPI.calls`. Scripted
failures: :meth:`fail_next` (429 with ``parameters.retry_after``, or any error), and
:attr:`FakeTelegramAPI.migrated` makes ``sendMessage`` to an old group id answer 400 with
``parameters.migrate_to_chat_id`` as Telegram does after an upgrade to a supergroup.

Usage::

    async with FakeTelegramAPI(token="123:ABC") as api:
        # settings: telegram_bot_token=api.token, telegram_api_url=api.url
        api.fail_next("sendMessage", retry_after=1)
        call = await api.next_call("sendMessage")
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "link_preview_options",
        "allowed_updates",
        "entities",
    }
)
_INT_FIELDS = frozenset(
    {"chat_id", "message_thread_id", "offset", "limit", "timeout", "max_connections"}
)


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded API call: the method name and its decoded parameters."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Failure:
    status: int
    description: str
    parameters: dict[str, Any] | None


class FakeTelegramAPI:
    """The fake Bot API (an async context manager).

    Attributes:
        token: the bot token it accepts (others get 401).
        bot_id, username: what ``getMe`` answers.
        calls: every call, in order.
        migrated: old group chat id → supergroup id (sendMessage to the old id fails).
        files: ``file_id`` → content served through ``getFile``.
        webhook: the URL and secret last set with ``setWebhook`` (None after deleteWebhook).
        conflicts: ``getUpdates`` calls ended with 409 by a concurrent one.
        max_concurrent_polls: the most ``getUpdates`` calls open at once.
        delivered: update ids returned by ``getUpdates``, in order (repeats included).
        url: ``http://127.0.0.1:PORT`` once started (the ``telegram_api_url`` setting).
    """

    def __init__(
        self, token: str = "4242:TEST-token", *, bot_id: int = 4242, username: str = "acme_bot"
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self.calls: list[Call] = []
        self.migrated: dict[int, int] = {}
        self.files: dict[str, bytes] = {}
        self.webhook: dict[str, Any] | None = None
        self.confirmed_offset: int | None = None
        self.conflicts = 0
        self.max_concurrent_polls = 0
        self.delivered: list[int] = []
        self._polls: dict[int, tuple[web.Request, bool]] = {}
        """Open getUpdates calls: poll number -> (request, terminated by a newer one)."""
        self._poll_numbers = itertools.count(1)
        self._updates: list[dict[str, Any]] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._message_ids = itertools.count(5000)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.url = ""

    # --- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:  # end open long polls now
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- scripting ------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        *,
        retry_after: int | None = None,
        status: int = 429,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error.

        With ``retry_after``: 429 ``Too Many Requests`` and ``parameters.retry_after``.
        """
        params = {"retry_after": retry_after} if retry_after is not None else None
        if retry_after is not None:
            status = 429
        text = description or (
            f"Too Many Requests: retry after {retry_after}" if status == 429 else "Bad Request"
        )
        self._failures.setdefault(method, []).extend(
            _Failure(status, text, params) for _ in range(times)
        )

    async def push_update(self, update: dict[str, Any]) -> None:
        """Queue an update for ``getUpdates``."""
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()

    # --- inspection -----------------------------------------------------------------------------
    def calls_of(self, method: str) -> list[Call]:
        """The recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self, method: str, count: int = 1, timeout_s: float = 5.0, **match: Any
    ) -> list[Call]:
        """Wait until ``count`` calls of ``method`` whose params contain ``match`` were made.

        Raises:
            TimeoutError: when they did not arrive within ``timeout_s`` seconds.
        """

        def found() -> list[Call]:
            return [
                c
                for c in self.calls_of(method)
                if all(c.params.get(k) == v for k, v in match.items())
            ]

        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count)
        return found()

    # --- handlers -------------------------------------------------------------------------------
    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        raw: dict[str, Any] = {}
        if request.can_read_body:
            form = await request.post()
            raw = {k: v for k, v in form.items() if isinstance(v, str)}
        raw.update(request.query)
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _JSON_FIELDS or (key in _INT_FIELDS and value.lstrip("-").isdigit()):
                params[key] = json.loads(value)
            else:
                params[key] = value
        return params

    def _me(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Acme Support",
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        async with self._changed:
            self.calls.append(Call(method, params))
            self._changed.notify_all()
        failures = self._failures.get(method)
        if failures:
            f = failures.pop(0)
            return _error(f.status, f.description, f.parameters)
        if method == "getUpdates":
            return await self._get_updates(params, request)
        handler = {
            "getMe": lambda p: self._me(),
            "sendMessage": self._send_message,
            "sendChatAction": lambda p: True,
            "answerCallbackQuery": lambda p: True,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getFile": self._get_file,
        }.get(method)
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            result = handler(params)
        except _ApiError as exc:
            return _error(exc.status, exc.description, exc.parameters)
        return web.json_response({"ok": True, "result": result})

    def _send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        chat_id = p.get("chat_id")
        if not isinstance(chat_id, int):
            raise _ApiError(400, "Bad Request: chat not found")
        if chat_id in self.migrated:
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self.migrated[chat_id]},
            )
        text = p.get("text")
        if not isinstance(text, str) or not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        result: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "from": self._me(),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "text": text,
        }
        if "message_thread_id" in p:
            result["message_thread_id"] = p["message_thread_id"]
            result["is_topic_message"] = True
        return result

    def _set_webhook(self, p: dict[str, Any]) -> bool:
        url = p.get("url")
        if not isinstance(url, str):
            raise _ApiError(400, "Bad Request: bad webhook: URL is required")
        self.webhook = {"url": url, "secret_token": p.get("secret_token")}
        return True

    def _delete_webhook(self, p: dict[str, Any]) -> bool:
        self.webhook = None
        return True

    def _get_file(self, p: dict[str, Any]) -> dict[str, Any]:
        file_id = p.get("file_id")
        if not isinstance(file_id, str) or file_id not in self.files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": len(self.files[file_id]),
            "file_path": f"documents/{file_id}.bin",
        }

    async def _get_updates(self, p: dict[str, Any], request: web.Request) -> web.Response:
        offset = p.get("offset")
        timeout = float(p.get("timeout") or 0)
        if isinstance(offset, int):
            self.confirmed_offset = offset
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

        async with self._changed:
            # A poll whose client went away (a stopped poller) is no competitor.
            self._polls = {n: v for n, v in self._polls.items() if _connected(v[0])}
            for number, (other, _) in self._polls.items():
                self._polls[number] = (other, True)
            me = next(self._poll_numbers)
            self._polls[me] = (request, False)
            self.max_concurrent_polls = max(self.max_concurrent_polls, len(self._polls))
            self._changed.notify_all()
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(
                        lambda: bool(self._updates) or self._closing or self._polls[me][1]
                    )
            except TimeoutError:
                pass
            finally:
                _, terminated = self._polls.pop(me)
            if terminated:
                if _connected(request):
                    self.conflicts += 1
                return _error(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            batch = list(self._updates[: int(p.get("limit") or 100)])
            self.delivered.extend(u["update_id"] for u in batch)
        return web.json_response({"ok": True, "result": batch})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        file_id = path.removeprefix("documents/").removesuffix(".bin")
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])


def _connected(request: web.Request) -> bool:
    """True while the client of ``request`` is still connected."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


class _ApiError(Exception):
    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def _error(
    status: int, description: str, parameters: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
