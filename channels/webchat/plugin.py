"""The web chat channel: an embeddable widget and its WebSocket.

Routes:

- ``GET /webchat/widget.js``: the widget (embed with
  ``<script src="https://HUB/webchat/widget.js" defer></script>``; ``data-hub`` overrides the
  hub's URL).
- ``GET /webchat/ws?visitor=ID&after=SEQ``: the conversation's WebSocket (frames in
  :mod:`channels.webchat.translate`).
- ``GET /``: a demo "Acme Support" page embedding the widget (only when ``demo_site``).

Lossless by construction: a socket subscribes to the session's hub events *before* reading the
store, then streams every stored, customer-visible message with ``seq > after`` in order. A
reconnect with the last seen ``after`` replays exactly what was missed, so :meth:`send` has
nothing to deliver for stored messages; it only forwards what the store does not keep (typing
indicators and buttons) to the visitor's open sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from bot.channel import HubAPI, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import OutboundKind, OutboundMessage, SessionKey
from bot.errors import BackendUnavailable, Draining, PayloadInvalid
from bot.events import Subscription
from bot.store.base import SessionMode
from channels.webchat.translate import (
    PARSE_VISITOR,
    actions_frame,
    customer_visible,
    message_frame,
    parse_frame,
    visitor_session_key,
)

logger = logging.getLogger(__name__)

PAGE_LIMIT = 200
HEARTBEAT_S = 25.0
RETRY_AFTER_S = 2.0
CLOSE_TIMEOUT_S = 2.0


def _asset(name: str) -> bytes:
    return resources.files("channels.webchat").joinpath("static", name).read_bytes()


class _Socket:
    """One open WebSocket of a visitor; frames are sent one at a time."""

    def __init__(self, ws: web.WebSocketResponse, session_key: SessionKey) -> None:
        self.ws = ws
        self.session_key = session_key
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON frame; a closed socket is ignored (the visitor will reconnect)."""
        if self.ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(frame))


class WebchatChannel:
    """The web chat plugin (``webchat``)."""

    name: ClassVar[str] = "webchat"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hub: HubAPI | None = None
        self._sockets: dict[SessionKey, set[_Socket]] = {}
        self._widget = _asset("widget.js")
        self._widget_css = _asset("widget.css")
        self._demo = _asset("demo.html")
        self._demo_css = _asset("demo.css")

    # --- ChannelPlugin ------------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Always enabled (the widget needs no credentials)."""
        return True

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded inbound frame (optionally with a ``visitor`` field).

        Raises:
            PayloadInvalid: malformed JSON, a schema violation, a bad visitor id, or text over
                ``settings.max_message_bytes``.
        """
        visitor = PARSE_VISITOR
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            doc = json.loads(data)
            if isinstance(doc, dict) and isinstance(doc.get("visitor"), str):
                visitor = doc["visitor"]
        _, msg = parse_frame(
            data, visitor_id=visitor, max_message_bytes=settings.max_message_bytes
        )
        return Parsed(msg)

    def routes(self) -> Sequence[web.RouteDef]:
        """Widget script and stylesheet, WebSocket, and (with ``demo_site``) the demo page.

        The demo page is ``/``, its stylesheet ``/webchat/demo.css`` (files, never inline: the
        pages' CSP forbids inline style).
        """
        out = [
            web.get("/webchat/widget.js", self._widget_js),
            web.get("/webchat/widget.css", self._widget_stylesheet),
            web.get("/webchat/ws", self._websocket),
        ]
        if self.settings.demo_site:
            out.append(web.get("/", self._demo_page))
            out.append(web.get("/webchat/demo.css", self._demo_stylesheet))
        return out

    async def start(self, hub: HubAPI) -> None:
        """Remember the hub the sockets feed."""
        self._hub = hub

    async def stop(self) -> None:
        """Close every open socket (1001 going away); widgets reconnect and replay."""
        sockets = [s for group in self._sockets.values() for s in group]

        async def close(sock: _Socket) -> None:
            with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await sock.ws.close(code=1001, message=b"server shutting down")

        await asyncio.gather(*(close(s) for s in sockets))

    async def send(self, out: OutboundMessage) -> None:
        """Forward what the store does not keep to the visitor's open sockets.

        Stored messages reach the widget through the store-backed stream (see the module
        docstring); here only typing indicators and buttons are pushed. A visitor without an
        open socket sees the messages on the next connect; buttons are ephemeral.
        """
        sockets = self._sockets.get(out.session_key)
        if not sockets:
            return
        if out.kind == OutboundKind.TYPING:
            frame: dict[str, Any] | None = {"type": "typing"}
        elif out.actions:
            frame = actions_frame(out)
        else:
            frame = None
        if frame is not None:
            for sock in list(sockets):
                await sock.send(frame)

    # --- handlers -----------------------------------------------------------------------------
    async def _widget_js(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._widget,
            content_type="application/javascript",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def _widget_stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._widget_css,
            content_type="text/css",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def _demo_stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(body=self._demo_css, content_type="text/css", charset="utf-8")

    async def _demo_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._demo, content_type="text/html", charset="utf-8")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        if self._hub is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        hub = self._hub
        visitor = request.query.get("visitor", "")
        key = visitor_session_key(visitor)
        after = _after(request.query.get("after"))
        ws = web.WebSocketResponse(
            heartbeat=HEARTBEAT_S, max_msg_size=self.settings.max_body_bytes
        )
        await ws.prepare(request)
        sock = _Socket(ws, key)
        self._sockets.setdefault(key, set()).add(sock)
        logger.info("webchat.connected", extra={"channel": self.name, "session_key": key})
        try:
            async with hub.events.subscribe(key) as sub:
                streamer = asyncio.create_task(self._stream(hub, sock, sub, after))
                try:
                    async for frame in ws:
                        if frame.type == WSMsgType.TEXT:
                            await self._on_frame(hub, sock, visitor, frame.data)
                        elif frame.type == WSMsgType.ERROR:
                            break
                finally:
                    streamer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await streamer
        finally:
            group = self._sockets.get(key)
            if group is not None:
                group.discard(sock)
                if not group:
                    del self._sockets[key]
            logger.info("webchat.disconnected", extra={"channel": self.name, "session_key": key})
        return ws

    async def _on_frame(self, hub: HubAPI, sock: _Socket, visitor: str, data: str) -> None:
        """Ingest one inbound frame and acknowledge it (or answer an error frame)."""
        try:
            _, msg = parse_frame(
                data, visitor_id=visitor, max_message_bytes=self.settings.max_message_bytes
            )
        except PayloadInvalid as exc:
            await sock.send(
                {"type": "error", "error": str(exc), "field": exc.field, "status": exc.status}
            )
            return
        try:
            receipt = await hub.ingest(msg)
        except (Draining, BackendUnavailable) as exc:
            await sock.send(
                {
                    "type": "error",
                    "error": str(exc) or type(exc).__name__,
                    "event_id": msg.event_id,
                    "retry_after": RETRY_AFTER_S,
                    "status": 503,
                }
            )
            return
        await sock.send(
            {"type": "ack", "event_id": receipt.event_id, "duplicate": receipt.duplicate}
        )

    async def _stream(self, hub: HubAPI, sock: _Socket, sub: Subscription, after: int) -> None:
        """Send every visible stored message with ``seq > after``, then follow the events.

        Runs as its own task (a task boundary): an unexpected error is logged and closes the
        socket, so the widget reconnects and replays.
        """
        key = sock.session_key
        try:
            conv = await hub.store.conversation(key)
            await sock.send(
                {
                    "type": "hello",
                    "session_key": key,
                    "mode": (conv.mode if conv else SessionMode.BOT).value,
                    "agent": conv.assigned_agent if conv else None,
                    "bot_name": self.settings.bot_name,
                    "company_name": self.settings.company_name,
                }
            )
            last = await self._flush(hub, sock, after)
            while not sock.ws.closed:
                event = await sub.get()
                if event is None:  # pragma: no cover - get() without timeout never times out
                    continue
                if event.type == "mode":
                    await sock.send(
                        {
                            "type": "mode",
                            "mode": event.data.get("mode"),
                            "agent": event.data.get("agent"),
                        }
                    )
                elif event.type == "typing":
                    await sock.send({"type": "typing"})
                if event.type == "message" or sub.lagged:
                    sub.lagged = False
                    last = await self._flush(hub, sock, last)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "webchat.stream_failed", extra={"channel": self.name, "session_key": key}
            )
            await sock.ws.close(code=1011, message=b"stream failed")

    @staticmethod
    async def _flush(hub: HubAPI, sock: _Socket, last: int) -> int:
        """Send the stored messages after ``last``; return the new last seq."""
        while True:
            batch = await hub.store.messages(sock.session_key, after_seq=last, limit=PAGE_LIMIT)
            for msg in batch:
                if customer_visible(msg):
                    await sock.send(message_frame(msg))
                last = max(last, msg.seq)
            if len(batch) < PAGE_LIMIT:
                return last


def _after(raw: str | None) -> int:
    """The ``after`` query parameter (a non-negative integer; 0 when absent).

    Raises:
        PayloadInvalid: when it is not a non-negative integer.
    """
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise PayloadInvalid("after must be a non-negative integer", field="after") from None
    if value < 0:
        raise PayloadInvalid("after must be a non-negative integer", field="after")
    return value
