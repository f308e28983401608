"""The web chat: widget assets, the WebSocket protocol, lossless replay on reconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from bot.envelope import OutboundKind, OutboundMessage
from bot.hub import Hub
from bot.server import HUB_KEY
from bot.store.base import NewMessage, Role
from channels.memory.pytest_plugin import HubFactory, ScriptedAgent
from channels.webchat.plugin import WebchatChannel
from channels.webchat.translate import visitor_session_key
from tests.channels.support import serve_hub

Client = TestClient[web.Request, web.Application]
VISITOR = "visitor-0123456789"
KEY = visitor_session_key(VISITOR)


@pytest_asyncio.fixture
async def client(hub_factory: HubFactory) -> AsyncIterator[Client]:
    hub = await hub_factory(channels=(WebchatChannel,), bot_name="Sparky")
    async with serve_hub(hub) as c:
        yield c


def hub_of(client: Client) -> Hub:
    assert client.app is not None
    return client.app[HUB_KEY]


class Socket:
    """A widget-like WebSocket client that records every frame."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, client: Client, after: int = 0, visitor: str = VISITOR) -> Socket:
        ws = await client.ws_connect(
            "/webchat/ws", params={"visitor": visitor, "after": str(after)}
        )
        return cls(ws)

    async def next(self, timeout_s: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame whose fields equal ``match``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - loop.time()))
            assert msg.type == WSMsgType.TEXT, msg
            frame: dict[str, Any] = json.loads(msg.data)
            self.frames.append(frame)
            if all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds``."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await self.ws.receive(timeout=left)
            except TimeoutError:
                break
            if msg.type == WSMsgType.TEXT:
                got.append(json.loads(msg.data))
        self.frames += got
        return got

    async def say(self, text: str, event_id: str) -> dict[str, Any]:
        await self.ws.send_json({"type": "message", "text": text, "event_id": event_id})
        return await self.next(type="ack", event_id=event_id)

    async def close(self) -> None:
        await self.ws.close()


async def test_widget_and_demo_page_are_served(client: Client) -> None:
    resp = await client.get("/webchat/widget.js")
    assert resp.status == 200
    assert resp.content_type == "application/javascript"
    js = await resp.text()
    assert "/webchat/ws" in js
    assert "localStorage" in js
    assert "handoff.request" in js
    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    assert "Acme Support" in html
    assert 'src="/webchat/widget.js"' in html


async def test_demo_page_only_when_enabled(hub_factory: HubFactory) -> None:
    hub = await hub_factory(channels=(WebchatChannel,), demo_site=False)
    async with serve_hub(hub) as c:
        assert (await c.get("/")).status == 404
        assert (await c.get("/webchat/widget.js")).status == 200


async def test_hello_then_message_ack_and_answer(client: Client) -> None:
    sock = await Socket.open(client)
    hello = await sock.next(type="hello")
    assert hello["session_key"] == KEY
    assert hello["mode"] == "bot"
    assert hello["bot_name"] == "Sparky"
    ack = await sock.say("How do I connect Slack?", "w-1")
    assert ack["duplicate"] is False
    mine = await sock.next(type="message", role="customer")
    assert (mine["seq"], mine["event_id"], mine["text"]) == (1, "w-1", "How do I connect Slack?")
    answer = await sock.next(type="message", role="bot")
    assert answer["seq"] == 2
    assert answer["text"] == "Echo: How do I connect Slack?"
    assert answer["reply_to"] == "w-1"
    assert answer["citations"][0]["url"] == "https://docs.example.com/guide"
    await sock.close()


async def test_reconnect_replays_exactly_the_missed_messages(client: Client) -> None:
    hub = hub_of(client)
    sock = await Socket.open(client)
    await sock.say("first", "w-a")
    await sock.next(type="message", role="bot")
    last = max(f["seq"] for f in sock.frames if f["type"] == "message")
    assert last == 2
    await sock.close()

    # While the visitor is away: an agent reply, a notice and another bot answer land.
    for i, kind in enumerate((OutboundKind.AGENT, OutboundKind.NOTICE, OutboundKind.ANSWER)):
        await hub.deliver(
            OutboundMessage(
                session_key=KEY,
                text=f"missed {i}",
                kind=kind,
                author="Ann" if kind == OutboundKind.AGENT else None,
                idempotency_key=f"missed-{i}",
            )
        )
    await hub.store.append(
        [NewMessage(KEY, Role.AGENT, "internal remark", kind="note", internal=True)]
    )

    back = await Socket.open(client, after=last)
    await back.next(type="hello")
    frames = [f for f in await back.quiet(0.5) if f["type"] == "message"]
    assert [(f["seq"], f["text"]) for f in frames] == [
        (3, "missed 0"),
        (4, "missed 1"),
        (5, "missed 2"),
    ]
    assert frames[0]["role"] == "agent"
    assert frames[0]["author"] == "Ann"
    assert frames[1]["role"] == "system"

    # Live messages follow the replay without gaps or repeats.
    await back.say("second", "w-b")
    await back.next(type="message", role="bot", text="Echo: second")
    seqs = [f["seq"] for f in back.frames if f["type"] == "message"]
    assert seqs == sorted(set(seqs))
    assert seqs == [3, 4, 5, 7, 8]  # seq 6 is the internal note: never sent
    await back.close()

    # A fresh page load (after=0) replays the whole visible history.
    fresh = await Socket.open(client, after=0)
    history = [f for f in await fresh.quiet(0.5) if f["type"] == "message"]
    assert [f["seq"] for f in history] == [1, 2, 3, 4, 5, 7, 8]
    assert "internal remark" not in [f["text"] for f in history]
    await fresh.close()


async def test_resend_after_reconnect_is_deduplicated(
    client: Client, scripted_agent: ScriptedAgent
) -> None:
    sock = await Socket.open(client)
    await sock.say("only once please", "w-same")
    await sock.next(type="message", role="bot")
    await sock.close()
    again = await Socket.open(client, after=2)
    ack = await again.say("only once please", "w-same")
    assert ack["duplicate"] is True
    assert [f for f in await again.quiet(0.4) if f["type"] == "message"] == []
    assert len(scripted_agent.turns) == 1
    stored = await hub_of(client).store.messages(KEY)
    assert [m.role for m in stored] == [Role.CUSTOMER, Role.BOT]
    await again.close()


async def test_two_tabs_of_one_visitor_both_see_the_conversation(client: Client) -> None:
    tab1 = await Socket.open(client)
    tab2 = await Socket.open(client)
    await tab1.say("from tab one", "w-t1")
    for tab in (tab1, tab2):
        await tab.next(type="message", role="customer", text="from tab one")
        await tab.next(type="message", role="bot", text="Echo: from tab one")
    await tab1.close()
    await tab2.close()


async def test_talk_to_a_person_action_escalates(client: Client) -> None:
    sock = await Socket.open(client)
    await sock.next(type="hello")
    await sock.ws.send_json(
        {
            "type": "action",
            "action": "handoff.request",
            "label": "Talk to a person",
            "event_id": "w-h",
        }
    )
    ack = await sock.next(type="ack", event_id="w-h")
    assert ack["duplicate"] is False
    mode = await sock.next(type="mode")
    assert mode["mode"] == "queued"
    notice = await sock.next(type="message", role="system")
    assert notice["text"]
    conv = await hub_of(client).store.conversation(KEY)
    assert conv is not None
    assert conv.escalation_reason == "customer_request"
    await sock.close()


async def test_typing_is_shown_while_the_bot_composes(
    client: Client, scripted_agent: ScriptedAgent
) -> None:
    scripted_agent.delay_s = 0.8  # typing shows after typing_delay_s (0.25 s)
    sock = await Socket.open(client)
    await sock.say("hello", "w-typ")
    await sock.next(type="typing", timeout_s=2)
    assert not [f for f in sock.frames if f.get("role") == "bot"], "typing after the answer"
    await sock.next(type="message", role="bot")
    await sock.close()


async def test_invalid_frames_get_error_frames(client: Client) -> None:
    sock = await Socket.open(client)
    await sock.next(type="hello")
    await sock.ws.send_str("{not json")
    err = await sock.next(type="error")
    assert "malformed JSON" in err["error"]
    await sock.ws.send_json({"type": "message", "text": "   ", "event_id": "w-e"})
    assert (await sock.next(type="error"))["field"] == "text"
    await sock.ws.send_json({"type": "dance", "event_id": "w-e2"})
    assert (await sock.next(type="error"))["field"] == "type"
    await sock.ws.send_json({"type": "message", "text": "x" * 40_000, "event_id": "w-big"})
    big = await sock.next(type="error")
    assert (big["field"], big["status"]) == ("text", 413)
    assert await hub_of(client).store.conversation(KEY) is None  # nothing stored
    await sock.close()


async def test_bad_visitor_id_is_refused_before_upgrade(client: Client) -> None:
    for visitor in ("", "short", "has space in it", "x" * 65, "a:b:c:d:e:f"):
        resp = await client.get("/webchat/ws", params={"visitor": visitor})
        assert resp.status == 400, visitor
        assert (await resp.json())["field"] == "visitor"


async def test_hub_stop_closes_sockets_with_going_away(hub_factory: HubFactory) -> None:
    hub = await hub_factory(channels=(WebchatChannel,))
    async with serve_hub(hub) as c:
        sock = await Socket.open(c)
        await sock.next(type="hello")
        receiving = asyncio.create_task(sock.ws.receive(timeout=5))
        await hub.stop(timeout_s=1)
        msg = await receiving
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert sock.ws.close_code == 1001
