"""Helpers shared by the channel and server tests: a served app and channel harnesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from bot.envelope import Citation, SessionKey
from bot.server import make_app
from channels.memory.plugin import MemoryChannel
from channels.rest.plugin import RestChannel
from channels.rest.translate import rest_session_key
from channels.webchat.plugin import WebchatChannel
from channels.webchat.translate import visitor_session_key

if TYPE_CHECKING:
    from bot.hub import Hub

PAYLOADS = Path(__file__).parent / "payloads"


def samples(channel: str) -> list[tuple[str, bytes]]:
    """Recorded payloads of a channel: ``(file name, bytes)``."""
    return [(p.name, p.read_bytes()) for p in sorted((PAYLOADS / channel).glob("*.json"))]


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Serve ``app`` on 127.0.0.1, port 0, and yield a client for it."""
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def serve_hub(hub: Hub) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Serve ``make_app(hub)`` and yield a client."""
    async with serve(make_app(hub)) as client:
        yield client


@dataclass(frozen=True)
class Receipt:
    """What a channel told the customer's side about an ingested message."""

    event_id: str
    session_key: str
    duplicate: bool


@dataclass(frozen=True)
class Delivery:
    """A message that reached the customer."""

    text: str
    citations: list[Citation]
    kind: str
    reply_to: str | None


class MemoryHarness:
    """Drives the memory channel as its customer."""

    name = "memory"
    plugin_cls = MemoryChannel
    conversation = "contract"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        channel = hub.channels["memory"]
        assert isinstance(channel, MemoryChannel)
        self.channel = channel
        self.session_key = MemoryChannel.session_key_for(self.conversation)
        self._actions: dict[str | None, list[str]] = {}

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        r = await self.channel.push_message(
            text, user_id="cust-1", conversation=self.conversation, event_id=event_id
        )
        return Receipt(r.event_id, r.session_key, r.duplicate)

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        out = await self.channel.pop_message(self.session_key, timeout_s=timeout_s)
        self._actions[out.reply_to] = [a.id for a in out.actions]
        return Delivery(out.text, list(out.citations), str(out.kind), out.reply_to)

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> list[str]:
        return self._actions.get(reply_to, [])

    async def close(self) -> None:
        return None


class RestHarness:
    """Drives the REST channel over HTTP (POST, then long-poll GET)."""

    name = "rest"
    plugin_cls = RestChannel
    conversation = "contract"

    def __init__(self, hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        self.hub = hub
        self.client = client
        self.session_key: SessionKey = rest_session_key(self.conversation)
        self._after = 0
        self._buffer: deque[dict[str, Any]] = deque()

    @property
    def url(self) -> str:
        return f"/api/v1/conversations/{self.conversation}/messages"

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        resp = await self.client.post(
            self.url, json={"text": text, "user": {"id": "cust-1"}, "event_id": event_id}
        )
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        return Receipt(body["event_id"], body["session_key"], body["duplicate"])

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._buffer:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("no delivery")
            resp = await self.client.get(
                self.url, params={"after": self._after, "wait": f"{remaining:.3f}"}
            )
            assert resp.status == 200, await resp.text()
            for m in (await resp.json())["messages"]:
                self._after = max(self._after, m["seq"])
                if m["role"] != "customer":
                    self._buffer.append(m)
        m = self._buffer.popleft()
        return Delivery(
            m["text"], [Citation(**c) for c in m["citations"]], m["kind"], m["reply_to"]
        )

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> None:
        return None  # REST has no buttons

    async def close(self) -> None:
        return None


class WebchatHarness:
    """Drives the web chat over its WebSocket, as the widget does."""

    name = "webchat"
    plugin_cls = WebchatChannel
    visitor = "contract-visitor-1"

    def __init__(self, hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        self.hub = hub
        self.client = client
        self.session_key: SessionKey = visitor_session_key(self.visitor)
        self.frames: list[dict[str, Any]] = []
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._actions: dict[str | None, list[str]] = {}
        self._actions_seen = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.ws: Any = None

    async def connect(self, after: int = 0) -> None:
        self.ws = await self.client.ws_connect(
            "/webchat/ws", params={"visitor": self.visitor, "after": str(after)}
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self.frames.append(frame)
            if frame["type"] == "message" and frame["role"] != "customer":
                self._messages.put_nowait(frame)
            elif frame["type"] in ("ack", "error") and frame.get("event_id") in self._acks:
                fut = self._acks.pop(frame["event_id"])
                if not fut.done():
                    fut.set_result(frame)
            elif frame["type"] == "actions":
                self._actions[frame["reply_to"]] = [a["id"] for a in frame["actions"]]
                self._actions_seen.set()

    async def customer_says(self, text: str, *, event_id: str) -> Receipt:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[event_id] = fut
        await self.ws.send_json({"type": "message", "text": text, "event_id": event_id})
        frame = await asyncio.wait_for(fut, 5.0)
        assert frame["type"] == "ack", frame
        return Receipt(frame["event_id"], str(self.session_key), frame["duplicate"])

    async def next_delivery(self, timeout_s: float = 5.0) -> Delivery:
        f = await asyncio.wait_for(self._messages.get(), timeout_s)
        return Delivery(
            f["text"], [Citation(**c) for c in f["citations"]], f["kind"], f["reply_to"]
        )

    async def offered_actions(self, reply_to: str | None, timeout_s: float = 2.0) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while reply_to not in self._actions and loop.time() < deadline:
            self._actions_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._actions_seen.wait(), deadline - loop.time())
        return self._actions.get(reply_to, [])

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
