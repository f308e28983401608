"""Inbound from Slack: ``POST /slack/events``, the OAuth install routes and bolt's middleware.

Over HTTP (``POST /slack/events`` for events and interactivity) the body is size-checked, its
signature verified (:mod:`channels.slack.verify`) and decoded before bolt sees it; bolt's own
middleware then runs (request verification again, ``ssl_check``, ``url_verification``,
authorization per workspace, ignoring the bot's own events), and one global middleware of ours
(:meth:`SlackReceiver.on_request`, Socket Mode envelopes end there too) parses the payload
(:mod:`channels.slack.translate`), awaits ``hub.ingest`` and only then acks Slack with 200 —
the turn itself runs later on the session's lane, so the ack stays well inside Slack's 3 s.
Retries (``X-Slack-Retry-Num``) carry the same ``event_id`` and are answered once by the hub's
dedupe. A draining hub or a failing store answers 503 so Slack retries.

Sources: https://docs.slack.dev/apis/events-api/ (the 3-second rule, retries),
https://docs.slack.dev/authentication/installing-with-oauth/
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.channel import HubAPI, Ignored, Parsed
from bot.config import Settings
from bot.envelope import InboundMessage
from bot.errors import BackendUnavailable, Draining, PayloadInvalid, PayloadTooLarge
from channels.slack import translate
from channels.slack.address import SlackAddressBook, address_from
from channels.slack.translate import CHANNEL
from channels.slack.verify import verify_request

if TYPE_CHECKING:
    from channels.slack.desk import SlackDesk

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted on ``/slack/events`` (Slack's payloads are far smaller)."""
EVENTS_PATH = "/slack/events"
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"


def bolt_to_aiohttp(resp: BoltResponse) -> web.Response:
    """An aiohttp response carrying bolt's status, body, headers and cookies (HTTP-only)."""
    headers = {k: v for k, v in resp.first_headers_without_set_cookie().items()}
    content_type = headers.pop("content-type", None) or (
        "application/json" if resp.body.startswith("{") else "text/plain"
    )
    out = web.Response(
        status=resp.status,
        text=resp.body,
        headers=headers,
        content_type=content_type.split(";")[0].strip(),
    )
    for cookie in resp.cookies():
        for name, c in cookie.items():
            out.set_cookie(
                name,
                c.value,
                max_age=c.get("max-age") or None,
                path=c.get("path") or "/",
                secure=bool(c.get("secure")),
                httponly=True,
            )
    return out


class SlackReceiver:
    """Slack's requests to the hub (see the module docstring).

    Args:
        settings: the signing secret and body limits.
        addresses: where the reply address of each accepted message is remembered.

    Attributes:
        app: the bolt app once the channel started (None answers 503).
        hub: the hub messages are ingested into (None answers 503).
        desk: the agents' channel, which takes its own payloads, when configured.
    """

    def __init__(self, settings: Settings, addresses: SlackAddressBook) -> None:
        self.settings = settings
        self.addresses = addresses
        self.app: AsyncApp | None = None
        self.hub: HubAPI | None = None
        self.desk: SlackDesk | None = None

    def routes(self) -> Sequence[web.RouteDef]:
        """``POST /slack/events`` and the OAuth install routes."""
        return [
            web.post(EVENTS_PATH, self._events),
            web.get(INSTALL_PATH, self._install),
            web.get(REDIRECT_PATH, self._oauth_redirect),
        ]

    async def _events(self, request: web.Request) -> web.StreamResponse:
        app = self.app
        if app is None:
            raise web.HTTPServiceUnavailable(reason="the Slack channel is not started")
        limit = min(MAX_BODY_BYTES, self.settings.max_body_bytes)
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"request body is {request.content_length} bytes; the limit is {limit}",
                limit_bytes=limit,
            )
        body = await request.read()
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes", limit_bytes=limit)
        secret = self.settings.slack_signing_secret
        if secret is None:
            raise web.HTTPNotFound(reason="HTTP events are off (Socket Mode only)")
        verify_request(secret.get_secret_value(), body, request.headers)
        translate.decode_body(body)  # 400 for a malformed body, before bolt parses it
        try:
            bolt_request = AsyncBoltRequest(
                body=body.decode("utf-8"),
                query=request.query_string,
                headers={k: v for k, v in request.headers.items()},
            )
        except ValueError as exc:
            raise PayloadInvalid(f"malformed Slack payload: {exc}") from exc
        retry = request.headers.get("X-Slack-Retry-Num")
        if retry is not None:
            log.info(
                "slack.retry_received",
                extra={
                    "channel": CHANNEL,
                    "retry_num": retry,
                    "retry_reason": request.headers.get("X-Slack-Retry-Reason"),
                },
            )
        return bolt_to_aiohttp(await app.async_dispatch(bolt_request))

    async def _oauth_get(self, request: web.Request, *, install: bool) -> web.StreamResponse:
        flow = self.app.oauth_flow if self.app is not None else None
        if flow is None:
            raise web.HTTPNotFound(reason="the Slack OAuth install flow is not configured")
        bolt_request = AsyncBoltRequest(
            body="",
            query=request.query_string,
            headers={k: v for k, v in request.headers.items()},
        )
        if install:
            response = await flow.handle_installation(bolt_request)
        else:
            response = await flow.handle_callback(bolt_request)
        return bolt_to_aiohttp(response)

    async def _install(self, request: web.Request) -> web.StreamResponse:
        return await self._oauth_get(request, install=True)

    async def _oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        return await self._oauth_get(request, install=False)

    async def on_request(
        self,
        req: AsyncBoltRequest,
        body: dict[str, Any],
        context: AsyncBoltContext,
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse:
        """Bolt global middleware: every authorized request ends here (never calls ``next``).

        Returns:
            200 once ingested (or ignored, or taken by the desk); 400 for a malformed
            payload; 503 (``Retry-After: 5``) when the hub cannot keep it now.
        """
        hub = self.hub
        if hub is None:
            return BoltResponse(status=503, body="")
        if self.desk is not None and self.desk.owns(body):
            self.desk.handle(body, context)
            return BoltResponse(status=200, body="")
        try:
            result = translate.parse_payload(body, self.settings, bot_user_id=context.bot_user_id)
        except PayloadInvalid as exc:
            log.warning("slack.payload_invalid", extra={"channel": CHANNEL, "error": str(exc)})
            return BoltResponse(status=400, body="")
        if isinstance(result, Ignored):
            log.debug("slack.ignored", extra={"channel": CHANNEL, "reason": result.reason})
            return BoltResponse(status=200, body="")
        return await self._ingest(hub, result, body)

    async def _ingest(self, hub: HubAPI, result: Parsed, body: dict[str, Any]) -> BoltResponse:
        msg: InboundMessage = result.envelope
        # A thread reply without a mention counts only in threads that already are sessions.
        unmentioned = not msg.is_direct and not msg.mentioned and msg.action is None
        if unmentioned and await hub.store.conversation(msg.session_key) is None:
            return BoltResponse(status=200, body="")
        address = address_from(msg, body)
        self.addresses.note(msg.session_key, address)
        try:
            receipt = await hub.ingest(msg)
        except (Draining, BackendUnavailable) as exc:
            log.warning(
                "slack.ingest_refused",
                extra={"channel": CHANNEL, "event_id": msg.event_id, "error": repr(exc)},
            )
            return BoltResponse(status=503, body="", headers={"Retry-After": "5"})
        if not receipt.duplicate:
            await self.addresses.remember(msg.session_key, address)
        log.info(
            "slack.accepted",
            extra={
                "channel": CHANNEL,
                "session_key": receipt.session_key,
                "event_id": receipt.event_id,
                "duplicate": receipt.duplicate,
            },
        )
        return BoltResponse(status=200, body="")
