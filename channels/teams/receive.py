"""Inbound from Teams: the bot's messaging endpoint (``POST /api/messages``, ``/teams/messages``).

Per request: the bearer token is required before the body is read; the body is decoded (400
when malformed, 413 over ``max_body_bytes``), the token is verified against the activity
(:mod:`channels.teams.verify`, 401), and only then the SDK's ``CloudAdapter.process_activity``
runs the turn: messages (and Adaptive Card submits) become envelopes and are ingested before the
answer ``200`` (503 when the hub cannot keep them); the ``ConversationReference`` is stored on
the conversation (:mod:`channels.teams.references`) for proactive replies.
``conversationUpdate`` that adds the bot sends one welcome per conversation (an idempotency key
per conversation id); reactions, typing, installation updates, edits, deletions and invokes are
acknowledged and ignored on purpose.

Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from azure.core.exceptions import DeserializationError as AzureDeserializationError
from botbuilder.schema import Activity  # type: ignore[import-untyped]

from bot.channel import HubAPI, Ignored, Parsed
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN, OutboundKind, OutboundMessage, SessionKey
from bot.errors import PayloadInvalid, SignatureInvalid
from channels.teams.references import ConversationReferences, reference_of
from channels.teams.translate import (
    CHANNEL,
    bot_was_added,
    load_activity,
    teams_session_key,
    tenant_of,
    to_result,
)
from channels.teams.verify import BotFrameworkVerifier, bearer_token

logger = logging.getLogger(__name__)


class TeamsReceiver:
    """The messaging endpoint (see the module docstring).

    Args:
        settings: tenant, limits and the welcome's bot and company names.
        refs: where each activity's conversation reference is kept.

    Attributes:
        hub: the hub once the channel started (None answers 503).
        verifier: the bearer-token verifier once the channel started.
        adapter: the SDK's ``CloudAdapter`` once the channel started.
    """

    def __init__(self, settings: Settings, refs: ConversationReferences) -> None:
        self.settings = settings
        self.refs = refs
        self.hub: HubAPI | None = None
        self.verifier: BotFrameworkVerifier | None = None
        self.adapter: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> Sequence[web.RouteDef]:
        """The messaging endpoint, at ``/api/messages`` and ``/teams/messages``."""
        return [
            web.post("/api/messages", self._on_request),
            web.post("/teams/messages", self._on_request),
        ]

    async def close(self) -> None:
        """Cancel pending welcomes and wait until they ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _on_request(self, request: web.Request) -> web.StreamResponse:
        hub, verifier = self.hub, self.verifier
        if hub is None or verifier is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        auth_header = request.headers.get("Authorization", "")
        try:
            bearer_token(auth_header)
        except SignatureInvalid:
            logger.info("teams.rejected", extra={"channel": CHANNEL, "reason": "no token"})
            raise
        doc = load_activity(await request.read())
        if not isinstance(doc.get("serviceUrl"), str) or not doc["serviceUrl"]:
            raise PayloadInvalid("serviceUrl is required", field="serviceUrl")
        try:
            activity = Activity().deserialize(doc)
        except (
            AzureDeserializationError,
            ValueError,
            TypeError,
        ) as exc:
            raise PayloadInvalid(f"not a Bot Framework activity: {exc}") from None
        try:
            auth = await verifier.authenticate(activity, auth_header)
        except SignatureInvalid as exc:
            logger.info(
                "teams.rejected",
                extra={"channel": CHANNEL, "event_id": doc.get("id"), "reason": str(exc)},
            )
            raise
        answer: list[web.StreamResponse] = []

        async def turn(ctx: Any) -> None:
            answer.append(await self._handle(hub, doc, ctx))

        invoke = await self.adapter.process_activity(auth, activity, turn)
        if invoke is not None and doc.get("type") == "invoke":
            return web.json_response(invoke.body, status=int(invoke.status))
        return answer[0] if answer else web.Response(status=200)

    async def _handle(self, hub: HubAPI, doc: dict[str, Any], ctx: Any) -> web.StreamResponse:
        """One verified activity: ingest a message, welcome on install, ignore the rest."""
        configured = self.settings.teams_tenant_id
        tenant = tenant_of(doc, configured)
        if configured and tenant != configured:
            logger.warning(
                "teams.foreign_tenant",
                extra={"channel": CHANNEL, "event_id": doc.get("id"), "tenant": tenant},
            )
            return web.Response(status=200)
        result = to_result(
            doc, default_tenant=configured, max_message_bytes=self.settings.max_message_bytes
        )
        key: SessionKey | None
        try:
            key = teams_session_key(doc, tenant=tenant)
        except PayloadInvalid:
            key = None
        ref = reference_of(doc, ctx.activity)
        if key is not None:
            self.refs.note(key, ref)
        if isinstance(result, Parsed):
            msg = result.envelope
            receipt = await hub.ingest(msg)
            await self.refs.save(hub, msg.session_key, ref)
            logger.info(
                "teams.accepted",
                extra={
                    "channel": CHANNEL,
                    "session_key": receipt.session_key,
                    "event_id": receipt.event_id,
                    "duplicate": receipt.duplicate,
                },
            )
            return web.json_response(
                {
                    "event_id": receipt.event_id,
                    "session_key": receipt.session_key,
                    "duplicate": receipt.duplicate,
                }
            )
        assert isinstance(result, Ignored)
        if key is not None:
            await self.refs.save(hub, key, ref)
            if bot_was_added(doc):
                conversation_id = str(doc["conversation"]["id"])
                self._spawn(self._welcome(hub, key, conversation_id))
        logger.info(
            "teams.ignored",
            extra={"channel": CHANNEL, "event_id": doc.get("id"), "reason": result.reason},
        )
        return web.Response(status=200)

    async def _welcome(self, hub: HubAPI, key: SessionKey, conversation_id: str) -> None:
        """Send the welcome once per conversation (idempotency key per conversation id)."""
        deliver: Callable[[OutboundMessage], Awaitable[Any]] | None = getattr(hub, "deliver", None)
        if deliver is None:
            return
        text = (
            f"Hi, I'm {self.settings.bot_name}, the {self.settings.company_name} support"
            " assistant. Ask me anything here; choose **Talk to a person** at any time to"
            " reach our team."
        )
        await deliver(
            OutboundMessage(
                session_key=key,
                text=text,
                kind=OutboundKind.NOTICE,
                actions=(TALK_TO_HUMAN,),
                idempotency_key=f"teams-welcome:{conversation_id}",
            )
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("teams.background_failed", extra={"channel": CHANNEL})

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
