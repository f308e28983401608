"""A fake Discord API on loopback: the REST endpoints a bot uses plus a minimal gateway.

Wire formats follow the Discord developer documentation (API v10):

- REST: https://discord.com/developers/docs/resources/message (create message, start thread
  from message), .../resources/channel (get channel, start thread without message, trigger
  typing), .../resources/user (get current user, create DM), .../resources/application
  (get current application), .../interactions/receiving-and-responding (interaction callback,
  edit original response), .../interactions/application-commands (bulk overwrite global
  commands), .../topics/rate-limits (429 with ``retry_after`` and ``X-RateLimit-*`` headers).
- Gateway: https://discord.com/developers/docs/events/gateway (HELLO op 10, IDENTIFY op 2,
  READY dispatch, heartbeats op 1 / ACK op 11). Frames are sent as JSON text (uncompressed).

Every REST request is recorded (:attr:`FakeDiscord.requests`); tests wait for requests with
:meth:`FakeDiscord.wait_for` and push gateway events with :meth:`FakeDiscord.dispatch`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

BOT_ID = "1100000000000000001"
BODY = web.RequestKey("body", object)
APPLICATION_ID = "1100000000000000002"


def snowflake_time(snowflake: int) -> str:
    """ISO timestamp encoded in a snowflake (Discord epoch 2015-01-01)."""
    ms = (snowflake >> 22) + 1420070400000
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass
class Recorded:
    """One REST request the fake received."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]
    at: float


@dataclass
class RateLimitPlan:
    """Answer the next ``count`` matching requests with 429 and ``retry_after`` seconds."""

    method: str
    pattern: str
    retry_after: float
    count: int = 1
    is_global: bool = False
    after: int = 0
    """Matching requests to let through before the first 429."""


@dataclass
class FakeDiscord:
    """State of the fake: recorded requests, channels, threads, gateway sockets."""

    token: str
    bot_id: str = BOT_ID
    application_id: str = APPLICATION_ID
    requests: list[Recorded] = field(default_factory=list)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    rate_limits: list[RateLimitPlan] = field(default_factory=list)
    identified: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    # --- helpers for tests --------------------------------------------------------------------
    def new_id(self) -> str:
        """A fresh snowflake (monotonic, with a realistic timestamp part)."""
        return str((1_300_000_000_000 << 22) + next(self._ids))

    def bot_user(self) -> dict[str, Any]:
        """The bot's user object."""
        return {
            "id": self.bot_id,
            "username": "switchboard",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
        }

    def add_text_channel(self, channel_id: str, guild_id: str) -> None:
        """Make ``GET /channels/{id}`` answer a guild text channel."""
        self.channels[channel_id] = {
            "id": channel_id,
            "type": 0,
            "guild_id": guild_id,
            "name": "help",
        }

    def add_thread(self, thread_id: str, guild_id: str, parent_id: str, owner_id: str) -> None:
        """Make ``GET /channels/{id}`` answer a public thread."""
        self.channels[thread_id] = _thread(thread_id, guild_id, parent_id, owner_id, "thread")

    def add_dm(self, user_id: str, channel_id: str) -> None:
        """Make ``POST /users/@me/channels`` for ``user_id`` answer this DM channel."""
        self.channels[channel_id] = {
            "id": channel_id,
            "type": 1,
            "last_message_id": None,
            "recipients": [
                {"id": user_id, "username": "customer", "discriminator": "0", "avatar": None}
            ],
        }

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        """Recorded requests whose path fully matches the regex ``pattern``."""
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.fullmatch(r.path)]

    async def wait_for(
        self, method: str, pattern: str, count: int = 1, timeout_s: float = 5.0
    ) -> list[Recorded]:
        """Wait until ``count`` requests match; returns them.

        Raises:
            TimeoutError: fewer arrived within ``timeout_s`` seconds.
        """
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.calls(method, pattern)) >= count)
        return self.calls(method, pattern)

    async def wait_ready(self, timeout_s: float = 5.0) -> None:
        """Wait until a client identified and was sent READY."""
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) frame ``event`` with payload ``data`` to every client."""
        frame = {"op": 0, "t": event, "s": next(self._seq), "d": data}
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(json.dumps(frame))

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Send a raw gateway frame to every client."""
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(json.dumps(frame))

    # --- server -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application (REST under ``/api/v10``, gateway at ``/gateway``)."""
        app = web.Application(middlewares=[self._record])
        p = "/api/v10"
        app.add_routes(
            [
                web.get("/gateway", self._gateway),
                web.get(f"{p}/users/@me", self._me),
                web.get(f"{p}/oauth2/applications/@me", self._application),
                web.get(f"{p}/gateway/bot", self._gateway_bot),
                web.put(f"{p}/applications/{{app}}/commands", self._commands),
                web.get(f"{p}/channels/{{cid}}", self._get_channel),
                web.post(f"{p}/channels/{{cid}}/messages", self._create_message),
                web.post(f"{p}/channels/{{cid}}/messages/{{mid}}/threads", self._thread_from),
                web.post(f"{p}/channels/{{cid}}/threads", self._thread_without),
                web.post(f"{p}/channels/{{cid}}/typing", self._typing),
                web.post(f"{p}/users/@me/channels", self._create_dm),
                web.post(f"{p}/interactions/{{iid}}/{{token}}/callback", self._callback),
                web.patch(
                    f"{p}/webhooks/{{app}}/{{token}}/messages/@original", self._edit_original
                ),
                web.post(f"{p}/webhooks/{{app}}/{{token}}", self._followup),
            ]
        )
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        body: Any = None
        raw = await request.read()
        if raw:
            ctype = request.headers.get("Content-Type", "")
            if ctype.startswith("multipart/"):
                body = _multipart_json(raw, ctype)
            else:
                body = json.loads(raw)
        path = request.path.removeprefix("/api/v10")
        rec = Recorded(
            request.method,
            path,
            body,
            dict(request.headers),
            asyncio.get_running_loop().time(),
        )
        async with self._changed:
            self.requests.append(rec)
            self._changed.notify_all()
        request[BODY] = body
        # Interaction callbacks and webhooks authenticate by the token in the URL.
        by_url = path.startswith(("/interactions/", "/webhooks/"))
        if not by_url and request.headers.get("Authorization") != "Bot " + self.token:
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for plan in self.rate_limits:
            if (
                plan.count > 0
                and plan.method == request.method
                and re.fullmatch(plan.pattern, path)
            ):
                if plan.after > 0:
                    plan.after -= 1
                    continue
                plan.count -= 1
                return _too_many(plan)
        return await handler(request)

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user())

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": "Switchboard",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": {
                    "id": "1100000000000000009",
                    "username": "owner",
                    "discriminator": "0",
                    "avatar": None,
                },
                "verify_key": "0" * 64,
                "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT_LIMITED
                "bot": self.bot_user(),
            }
        )

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        ws_url = self.base_url.replace("http://", "ws://") + "/gateway"
        return _json(
            {
                "url": ws_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14400000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _commands(self, request: web.Request) -> web.Response:
        body = await request.json()
        out = [
            {
                **cmd,
                "id": self.new_id(),
                "application_id": self.application_id,
                "version": self.new_id(),
                "default_member_permissions": None,
                "type": cmd.get("type", 1),
            }
            for cmd in body
        ]
        return _json(out)

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.match_info["cid"])
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, status=404)
        return _json(channel)

    async def _create_message(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        body = _body(request)
        mid = self.new_id()
        return _json(
            {
                "id": mid,
                "channel_id": cid,
                "author": self.bot_user(),
                "content": body.get("content") or "",
                "timestamp": snowflake_time(int(mid)),
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": [],
                "mention_roles": [],
                "attachments": [],
                "embeds": body.get("embeds") or [],
                "components": body.get("components") or [],
                "pinned": False,
                "type": 0,
                "flags": 0,
                "nonce": body.get("nonce"),
            }
        )

    async def _thread_from(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        mid = request.match_info["mid"]
        body = _body(request)
        existing = self.channels.get(mid)
        if existing is not None:
            return _json(
                {"message": "A thread has already been created for this message", "code": 160004},
                status=400,
            )
        guild_id = self.channels.get(cid, {}).get("guild_id", "0")
        thread = _thread(mid, guild_id, cid, self.bot_id, body.get("name", "thread"))
        self.channels[mid] = thread
        return _json(thread, status=201)

    async def _thread_without(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        body = _body(request)
        tid = self.new_id()
        guild_id = self.channels.get(cid, {}).get("guild_id", "0")
        thread = _thread(tid, guild_id, cid, self.bot_id, body.get("name", "thread"))
        thread["type"] = body.get("type", 11)
        self.channels[tid] = thread
        return _json(thread, status=201)

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = _body(request)
        user_id = body["recipient_id"]
        for channel in self.channels.values():
            if channel.get("type") == 1 and channel["recipients"][0]["id"] == str(user_id):
                return _json(channel)
        channel_id = self.new_id()
        channel = {
            "id": channel_id,
            "type": 1,
            "last_message_id": None,
            "recipients": [
                {"id": str(user_id), "username": "customer", "discriminator": "0", "avatar": None}
            ],
        }
        self.channels[channel_id] = channel
        return _json(channel)

    async def _callback(self, request: web.Request) -> web.Response:
        """Interaction callback; with ``?with_response=true`` Discord answers 200 with a body."""
        body = _body(request)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        flags = (body.get("data") or {}).get("flags") or 0
        return _json(
            {
                "interaction": {
                    "id": request.match_info["iid"],
                    "type": 2,
                    "activity_instance_id": None,
                    "response_message_id": None,
                    "response_message_loading": body.get("type") == 5,
                    "response_message_ephemeral": bool(flags & 64),
                },
                "resource": {"type": body.get("type")},
            }
        )

    async def _edit_original(self, request: web.Request) -> web.Response:
        body = _body(request)
        return _json(
            {
                "id": self.new_id(),
                "channel_id": "0",
                "author": self.bot_user(),
                "content": body.get("content") or "",
                "timestamp": snowflake_time(int(self.new_id())),
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": [],
                "mention_roles": [],
                "attachments": [],
                "embeds": [],
                "pinned": False,
                "type": 20,
            }
        )

    async def _followup(self, request: web.Request) -> web.Response:
        return await self._edit_original(request)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame.get("op") == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif frame.get("op") == 2:
                    self.identified.append(frame["d"])
                    await ws.send_str(json.dumps(self._ready_frame()))
                    self._ready.set()
        finally:
            self._sockets.remove(ws)
        return ws

    def _ready_frame(self) -> dict[str, Any]:
        return {
            "op": 0,
            "t": "READY",
            "s": next(self._seq),
            "d": {
                "v": 10,
                "user": self.bot_user(),
                "guilds": [],
                "session_id": "fake-session",
                "resume_gateway_url": self.base_url.replace("http://", "ws://") + "/gateway",
                "shard": [0, 1],
                "application": {"id": self.application_id, "flags": 1 << 19},
            },
        }

    async def close_sockets(self) -> None:
        """Close every gateway connection."""
        for ws in list(self._sockets):
            await ws.close()


def _thread(tid: str, guild_id: str, parent_id: str, owner_id: str, name: str) -> dict[str, Any]:
    return {
        "id": tid,
        "type": 11,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "owner_id": owner_id,
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": "2026-01-01T00:00:00+00:00",
            "locked": False,
        },
    }


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with exactly ``Content-Type: application/json`` (discord.py checks it)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _body(request: web.Request) -> dict[str, Any]:
    """The JSON body the recording middleware parsed."""
    body = request.get(BODY)
    return body if isinstance(body, dict) else {}


def _multipart_json(raw: bytes, ctype: str) -> Any:
    """The ``payload_json`` part of a multipart body (discord.py sends files this way)."""
    boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
    for part in raw.split(b"--" + boundary):
        if b'name="payload_json"' in part:
            return json.loads(part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n-"))
    return None


def _too_many(plan: RateLimitPlan) -> web.Response:
    """A 429 as Discord sends it (topics/rate-limits): body and ``X-RateLimit-*`` headers."""
    headers = {
        "Retry-After": str(max(1, round(plan.retry_after))),
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{datetime.now(UTC).timestamp() + plan.retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{plan.retry_after:.3f}",
        "X-RateLimit-Bucket": "fake-bucket",
        "X-RateLimit-Scope": "global" if plan.is_global else "user",
        "Via": "1.1 google",
    }
    if plan.is_global:
        headers["X-RateLimit-Global"] = "true"
    return _json(
        {
            "message": "You are being rate limited.",
            "retry_after": plan.retry_after,
            "global": plan.is_global,
            "code": 0,
        },
        status=429,
        headers=headers,
    )
