"""The REST channel: a JSON API for systems that talk to the hub directly.

Routes (the contract of issue 2; the document is served at ``/api/v1/openapi.json``):

- ``POST /api/v1/conversations/{conversation_id}/messages`` → 202 once the message is stored.
- ``GET /api/v1/conversations/{conversation_id}/messages?after=SEQ&wait=SECONDS`` → 200.

Authentication (``Authorization: Bearer KEY``) is enforced by the server middleware
(:mod:`bot.server`), which marks the request with :data:`bot.server.AUTHENTICATED`. Replies are
not pushed: every reply is stored by ``hub.deliver`` and clients read it with GET, so
:meth:`send` does nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Sequence
from typing import ClassVar

from aiohttp import web

from bot.channel import HubAPI, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import OutboundMessage, SessionKey
from bot.errors import Draining, NotFound, PayloadInvalid
from bot.events import HubEvent, Subscription
from bot.server import AUTHENTICATED
from bot.store.base import SessionMode, StoredMessage
from channels.rest.openapi import MAX_WAIT_S, openapi_document
from channels.rest.translate import (
    MessageAccepted,
    MessagePage,
    customer_visible,
    derived_event_id,
    message_out,
    parse_post,
    rest_session_key,
    to_envelope,
)

logger = logging.getLogger(__name__)

PARSE_CONVERSATION = "parsed"
"""Conversation id given to envelopes built by ``switchboard parse rest``."""

PAGE_LIMIT = 200


class RestChannel:
    """The REST channel plugin (``rest``)."""

    name: ClassVar[str] = "rest"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hub: HubAPI | None = None
        self._stopping = asyncio.Event()

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Always enabled (API keys are optional; without them the server binds loopback)."""
        return True

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded ``POST .../messages`` body (conversation id ``parsed``).

        Without an ``event_id`` the envelope gets one derived from the bytes, so the output is
        deterministic.

        Raises:
            PayloadInvalid: malformed JSON, a schema violation, or text over
                ``settings.max_message_bytes``.
        """
        body = parse_post(data, max_message_bytes=settings.max_message_bytes)
        return Parsed(
            to_envelope(
                body,
                conversation_id=PARSE_CONVERSATION,
                event_id=body.event_id or derived_event_id(data),
                verified=False,
                raw=json.loads(data),
            )
        )

    def routes(self) -> Sequence[web.RouteDef]:
        """The two message routes and the OpenAPI document."""
        path = "/api/v1/conversations/{conversation_id}/messages"
        return [
            web.post(path, self._post_message),
            web.get(path, self._get_messages),
            web.get("/api/v1/openapi.json", self._openapi),
        ]

    async def start(self, hub: HubAPI) -> None:
        """Remember the hub the routes feed."""
        self._hub = hub

    async def stop(self) -> None:
        """End open long polls now (they answer 503 with Retry-After; clients poll again)."""
        self._stopping.set()

    async def send(self, out: OutboundMessage) -> None:
        """Nothing to push: ``hub.deliver`` stored the message and clients poll for it."""

    # --- handlers -----------------------------------------------------------------------------
    def _require_hub(self) -> HubAPI:
        if self._hub is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        return self._hub

    async def _post_message(self, request: web.Request) -> web.Response:
        hub = self._require_hub()
        conversation_id = request.match_info["conversation_id"]
        data = await request.read()
        body = parse_post(data, max_message_bytes=self.settings.max_message_bytes)
        event_id = body.event_id or uuid.uuid4().hex
        msg = to_envelope(
            body,
            conversation_id=conversation_id,
            event_id=event_id,
            verified=request.get(AUTHENTICATED) is not None,
            raw=body.model_dump(mode="json", exclude_none=True),
        )
        receipt = await hub.ingest(msg)
        logger.info(
            "rest.accepted",
            extra={
                "channel": self.name,
                "session_key": receipt.session_key,
                "event_id": receipt.event_id,
                "duplicate": receipt.duplicate,
            },
        )
        answer = MessageAccepted(
            event_id=receipt.event_id,
            session_key=receipt.session_key,
            duplicate=receipt.duplicate,
        )
        return web.json_response(answer.model_dump(mode="json"), status=202)

    async def _get_messages(self, request: web.Request) -> web.Response:
        hub = self._require_hub()
        key = rest_session_key(request.match_info["conversation_id"])
        after = _query_number(request, "after", 0, integer=True)
        wait_s = min(_query_number(request, "wait", 0, integer=False), MAX_WAIT_S)
        if await hub.store.conversation(key) is None:
            raise NotFound(f"no conversation {request.match_info['conversation_id']!r}")
        messages = await self._wait_for_messages(hub, key, int(after), wait_s)
        conv = await hub.store.conversation(key)
        mode = conv.mode if conv is not None else SessionMode.BOT
        page = MessagePage(mode=mode.value, messages=[message_out(m) for m in messages])
        return web.json_response(page.model_dump(mode="json"))

    async def _wait_for_messages(
        self, hub: HubAPI, key: SessionKey, after: int, wait_s: float
    ) -> list[StoredMessage]:
        """Visible messages after ``after``; when none, wait up to ``wait_s`` seconds for one.

        Subscribes before reading the store, so a message stored between the read and the
        wait still wakes the poll.

        Raises:
            Draining: the channel stopped while waiting (the hub is shutting down).
        """

        async def read() -> list[StoredMessage]:
            stored = await hub.store.messages(key, after_seq=after, limit=PAGE_LIMIT)
            return [m for m in stored if customer_visible(m)]

        if wait_s <= 0:
            return await read()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        async with hub.events.subscribe(key) as sub:
            found = await read()
            while not found:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                event = await self._next_event(sub, remaining)
                if event is None:
                    break
                if event.type == "message" and (event.seq is None or event.seq > after):
                    found = await read()
            return found

    async def _next_event(self, sub: Subscription, timeout_s: float) -> HubEvent | None:
        """The next event within ``timeout_s`` seconds (None on timeout).

        Raises:
            Draining: when :meth:`stop` is called meanwhile.
        """
        if self._stopping.is_set():
            raise Draining("the hub is shutting down; poll again")
        getter = asyncio.ensure_future(sub.get(timeout_s))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, stopper):
                task.cancel()
        if not getter.cancelled() and getter.done():
            return getter.result()
        raise Draining("the hub is shutting down; poll again")

    async def _openapi(self, request: web.Request) -> web.Response:
        doc = openapi_document(
            server_url=self.settings.public_url, auth=bool(self.settings.api_keys)
        )
        return web.json_response(doc)


def _query_number(request: web.Request, name: str, default: float, *, integer: bool) -> float:
    """A non-negative number from the query string.

    Raises:
        PayloadInvalid: when it is not a (finite, non-negative) number (field = ``name``).
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise PayloadInvalid(
            f"{name} must be a {'non-negative integer' if integer else 'number'}", field=name
        ) from None
    if not math.isfinite(value) or value < 0:
        raise PayloadInvalid(f"{name} must be a non-negative number", field=name)
    return value
