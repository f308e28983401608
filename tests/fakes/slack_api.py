"""A fake Slack Web API server on loopback (aiohttp, port 0) that records every call.

Speaks the documented wire format (https://docs.slack.dev/apis/web-api/): ``POST
/api/{method}`` with a JSON or form body, the token in ``Authorization: Bearer``, answers
``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``, HTTP 429 with ``Retry-After`` when
told to. The real ``slack_sdk.web.async_client.AsyncWebClient`` is pointed at ``api_url``.

Also serves a Socket Mode WebSocket (``apps.connections.open`` hands out its URL): tests push
envelopes with :meth:`FakeSlackApi.push_socket_envelope` and read the client's acks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class ApiCall:
    """One recorded Web API call: its answer in ``result``, ``at`` the ``time.monotonic()``
    when it was answered."""

    method: str
    token: str | None
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str | None:
        value = self.args.get("channel")
        return value if isinstance(value, str) else None

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.args.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else list(blocks)

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.args.get("metadata") or {}
        return json.loads(meta) if isinstance(meta, str) else dict(meta)

    @property
    def section_text(self) -> str:
        return "\n".join(
            b["text"]["text"] for b in self.blocks if b.get("type") == "section" and "text" in b
        )

    @property
    def button_ids(self) -> list[str]:
        return [
            e["action_id"]
            for b in self.blocks
            if b.get("type") == "actions"
            for e in b.get("elements", [])
        ]


@dataclass
class BotIdentity:
    """What ``auth.test`` answers for a token."""

    team_id: str
    user_id: str
    bot_id: str
    enterprise_id: str | None = None


@dataclass
class FakeSlackApi:
    """The fake server. Configure ``bots`` (token → identity) and ``users`` before use."""

    bots: dict[str, BotIdentity] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    oauth_access: dict[str, Any] | None = None
    calls: list[ApiCall] = field(default_factory=list)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    refusals: dict[str, list[str]] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    url: str = ""

    def __post_init__(self) -> None:
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ready = asyncio.Event()

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    async def start(self) -> FakeSlackApi:
        app = web.Application()
        app.add_routes(
            [
                web.post("/api/{method}", self._api),
                web.get("/api/{method}", self._api),
                web.get("/socket", self._socket),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, method: str, status: int = 429, retry_after: float = 0.2) -> None:
        """Answer the next call of ``method`` with ``status`` (429 carries ``Retry-After``)."""
        self.failures.setdefault(method, []).append((status, retry_after))

    def refuse_next(self, method: str, error: str) -> None:
        """Answer the next call of ``method`` with HTTP 200 ``{"ok": false, "error": error}``."""
        self.refusals.setdefault(method, []).append(error)

    def delay_next(self, method: str, seconds: float) -> None:
        """Hold the next call of ``method`` for ``seconds`` before answering (and recording)."""
        self.delays.setdefault(method, []).append(seconds)

    def of(self, method: str, channel: str | None = None) -> list[ApiCall]:
        return [
            c
            for c in self.calls
            if c.method == method and (channel is None or c.channel == channel)
        ]

    async def wait_for(
        self, method: str, *, channel: str | None = None, count: int = 1, timeout_s: float = 5.0
    ) -> list[ApiCall]:
        """Wait until at least ``count`` calls of ``method`` (to ``channel``) were recorded."""

        def enough() -> bool:
            return len(self.of(method, channel)) >= count

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(enough), timeout_s)
        return self.of(method, channel)

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; it is checked after every recorded call."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    # --- HTTP -----------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method == "GET":
            pass
        elif request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or args.pop("token", None)
        delays = self.delays.get(method)
        if delays:
            await asyncio.sleep(delays.pop(0))
        refusals = self.refusals.get(method)
        if refusals:
            return web.json_response({"ok": False, "error": refusals.pop(0)})
        queued = self.failures.get(method)
        if queued:
            status, retry_after = queued.pop(0)
            headers = {"Retry-After": str(retry_after)} if status == 429 else {}
            error = "ratelimited" if status == 429 else "internal_error"
            return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
        answer = self._answer(method, token, args)
        if answer.get("ok"):
            async with self._changed:
                self.calls.append(ApiCall(method, token, args, result=answer))
                self._changed.notify_all()
        return web.json_response(answer)

    def _answer(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        if method == "oauth.v2.access":
            return self.oauth_access or {"ok": False, "error": "invalid_code"}
        bot = self.bots.get(token or "")
        if bot is None:
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://example.slack.com/",
                "team": "Example",
                "user": "switchboard",
                "team_id": bot.team_id,
                "user_id": bot.user_id,
                "bot_id": bot.bot_id,
                "enterprise_id": bot.enterprise_id,
                "is_enterprise_install": False,
            }
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": {"ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}
        if method == "users.info":
            user = self.users.get(str(args.get("user")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": user}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.url.replace("http", "ws", 1) + "/socket"}
        return {"ok": True}

    # --- Socket Mode ----------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self._socket_ready.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                async with self._changed:
                    self.socket_acks.append(json.loads(msg.data))
                    self._changed.notify_all()
        return ws

    async def push_socket_envelope(self, envelope: dict[str, Any], timeout_s: float = 5.0) -> None:
        """Send a Socket Mode envelope to the connected client."""
        await asyncio.wait_for(self._socket_ready.wait(), timeout_s)
        await self._sockets[-1].send_json(envelope)

    async def wait_for_ack(self, envelope_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The client's acknowledgement of one Socket Mode envelope."""

        def found() -> dict[str, Any] | None:
            return next((a for a in self.socket_acks if a.get("envelope_id") == envelope_id), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout_s)
        ack = found()
        assert ack is not None
        return ack
