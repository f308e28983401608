"""Two-way sync: a human's work on the Zendesk ticket or Jira request reaches the conversation.

Routes (mounted through the ``switchboard.http`` entry point by :func:`setup`, only for the
configured backend):

- ``POST /webhooks/zendesk``: verified with ``zendesk_webhook_secret``.
- ``POST /webhooks/jira``: verified with ``jira_webhook_secret``.

Each request is verified before it is parsed (401 otherwise; 403 while no secret is set),
parsed (400 for a malformed body), deduplicated by the product's event id (durably, in
``ticket_sync_events``) and applied:

- an agent's public reply is delivered to the customer through the customer's own channel
  (kind ``agent``, the agent's name as author) and the session becomes ``human``-owned
  (``zendesk:<name>`` / ``jira:<name>``), so the bot stays silent while that human works;
- a ticket solved there hands the session back to the bot, or closes it
  (``ticket_solved_action``), and the customer is told.

Answers: 200 ``{"status": "applied" | "duplicate" | "ignored"}``; 503 when applying failed (the
product retries; the event id is forgotten so the retry is applied).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.envelope import OutboundKind, OutboundMessage, SessionKey
from bot.errors import Conflict, Forbidden, SwitchboardError
from bot.events import mode_event
from bot.store.base import Conversation, SessionMode
from plugins.ticketing.synced import SyncedTicketBackend
from plugins.ticketing.webhooks import (
    JIRA_DELIVERY,
    TicketEvent,
    parse_jira,
    parse_zendesk,
    verify_jira,
    verify_zendesk,
)

if TYPE_CHECKING:
    from bot.hub import Hub

log = logging.getLogger(__name__)

ZENDESK_PATH = "/webhooks/zendesk"
JIRA_PATH = "/webhooks/jira"


def setup(app: web.Application, hub: Hub) -> None:
    """Mount the webhook of the configured external ticket backend and start its sync loop.

    Nothing is mounted for ``ticket_backend: local`` (or a hub built with another backend).
    """
    backend = hub.tickets
    if not isinstance(backend, SyncedTicketBackend):
        return
    sync = TicketSync(hub, backend)
    path = ZENDESK_PATH if backend.name == "zendesk" else JIRA_PATH
    app.add_routes([web.post(path, sync.receive)])

    async def start(_: web.Application) -> None:
        backend.start()

    app.on_startup.append(start)


class TicketSync:
    """Receives the product's webhooks and applies them to the hub (see the module)."""

    def __init__(self, hub: Hub, backend: SyncedTicketBackend) -> None:
        self.hub = hub
        self.backend = backend

    def _verify(self, request: web.Request, body: bytes) -> TicketEvent | None:
        settings = self.hub.settings
        if self.backend.name == "zendesk":
            if settings.zendesk_webhook_secret is None:
                raise Forbidden("zendesk_webhook_secret is not set: webhooks are refused")
            verify_zendesk(
                settings.zendesk_webhook_secret.get_secret_value(), request.headers, body
            )
            return parse_zendesk(body)
        if settings.jira_webhook_secret is None:
            raise Forbidden("jira_webhook_secret is not set: webhooks are refused")
        verify_jira(settings.jira_webhook_secret.get_secret_value(), request.headers, body)
        return parse_jira(body, request.headers.get(JIRA_DELIVERY))

    async def receive(self, request: web.Request) -> web.Response:
        """The webhook route: verify, parse, dedupe, apply.

        Raises:
            bot.errors.SignatureInvalid: 401 (the server's error middleware answers).
            bot.errors.Forbidden: 403 while no secret is configured.
            bot.errors.PayloadInvalid: 400.
        """
        body = await request.read()
        try:
            event = self._verify(request, body)
        except SwitchboardError as exc:
            log.warning(
                "tickets.webhook_refused",
                extra={"backend": self.backend.name, "error": type(exc).__name__},
            )
            raise
        if event is None:
            return web.json_response({"status": "ignored"})
        found = await self.backend.session_of(event.ticket_id)
        if found is None:
            log.info(
                "tickets.webhook_unlinked",
                extra={"backend": event.backend, "ticket_id": event.ticket_id},
            )
            return web.json_response({"status": "ignored"})
        session_key, ref = found
        if not await self.backend.first_delivery(event.event_id):
            return web.json_response({"status": "duplicate"})
        try:
            await self.apply(event, session_key, ref)
        except Exception:  # the product retries: forget the id so the retry is applied
            await self.backend.forget_delivery(event.event_id)
            log.exception(
                "tickets.webhook_failed",
                extra={"backend": event.backend, "session_key": session_key},
            )
            return web.json_response({"error": "could not apply the event"}, status=503)
        return web.json_response({"status": "applied"})

    async def apply(self, event: TicketEvent, session_key: SessionKey, ref: str) -> None:
        """Apply one verified, first-seen event to its session."""
        conv = await self.hub.store.conversation(session_key)
        if conv is None:
            return
        if event.kind == "reply":
            await self._reply(event, conv, ref)
        else:
            await self._solved(event, conv)

    async def _reply(self, event: TicketEvent, conv: Conversation, ref: str) -> None:
        owner = f"{event.backend}:{event.author}"
        if conv.mode != SessionMode.HUMAN or conv.assigned_agent != owner:
            conv = await self._set_mode(
                conv,
                SessionMode.HUMAN,
                agent=owner,
                reason=conv.escalation_reason or "ticket_reply",
                ticket_id=conv.ticket_id or ref,
            )
        stored = await self.hub.deliver(
            OutboundMessage(
                session_key=conv.session_key,
                text=event.text or "",
                kind=OutboundKind.AGENT,
                author=event.author,
                idempotency_key=f"{event.backend}:{event.event_id}",
            )
        )
        await self.hub.store.audit(
            owner, "reply", conv.session_key, {"source": event.backend, "seq": stored.seq}
        )
        log.info(
            "tickets.reply_delivered",
            extra={
                "backend": event.backend,
                "session_key": conv.session_key,
                "channel": conv.channel,
                "ticket_id": event.ticket_id,
            },
        )

    async def _solved(self, event: TicketEvent, conv: Conversation) -> None:
        close = self.hub.settings.ticket_solved_action == "close"
        target = SessionMode.CLOSED if close else SessionMode.BOT
        if conv.mode in (target, SessionMode.CLOSED) or (
            conv.mode == SessionMode.BOT and not close
        ):
            return
        actor = conv.assigned_agent or event.backend
        conv = await self._set_mode(
            conv, target, agent=None, reason=conv.escalation_reason, ticket_id=conv.ticket_id
        )
        await self.hub.store.audit(
            actor, "close" if close else "resolve", conv.session_key, {"source": event.backend}
        )
        text = (
            "Our team marked your request as solved and closed this conversation."
            " Thank you for contacting us."
            if close
            else "Our team marked your request as solved; our assistant is back with you."
            " Write any time if there is anything else."
        )
        await self.hub.deliver(
            OutboundMessage(
                session_key=conv.session_key,
                text=text,
                kind=OutboundKind.NOTICE,
                idempotency_key=f"{event.backend}:{event.event_id}",
            )
        )
        log.info(
            "tickets.solved_applied",
            extra={"backend": event.backend, "session_key": conv.session_key, "mode": target},
        )

    async def _set_mode(self, conv: Conversation, mode: SessionMode, **kw: Any) -> Conversation:
        """Compare-and-set the mode (once more on a race), then publish it like the handoff."""
        try:
            conv = await self.hub.store.set_mode(conv.session_key, mode, expect=[conv.mode], **kw)
        except Conflict:
            fresh = await self.hub.store.conversation(conv.session_key)
            assert fresh is not None
            conv = await self.hub.store.set_mode(conv.session_key, mode, expect=[fresh.mode], **kw)
        self.hub.events.publish(mode_event(conv))
        return conv
