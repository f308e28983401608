"""Outbound to Teams: proactive turns through the Bot Connector, and typing indicators.

:meth:`TeamsSender.send` continues the conversation of the stored reference
(``CloudAdapter.continue_conversation``) and posts through the SDK's ``ConnectorClient`` to the
reference's ``serviceUrl``: ``POST /v3/conversations/{id}/activities/{replyToId}`` for answers
to a message, ``POST /v3/conversations/{id}/activities`` otherwise. A typing activity is
repeated every :data:`TYPING_INTERVAL_S` while a turn runs (hub ``typing`` events). Throttling
(429 with ``Retry-After``) raises :class:`~bot.errors.RateLimited`; the SDK's own retries are
off (the hub retries).

Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-api-reference
"""

from __future__ import annotations

from typing import Any

from botbuilder.schema import Activity, ConversationReference  # type: ignore[import-untyped]
from msrest.exceptions import ClientRequestError, HttpOperationError

from bot.channel import HubAPI
from bot.config import Settings
from bot.envelope import OutboundKind, OutboundMessage, SessionKey, channel_of
from bot.errors import (
    ChannelUnavailable,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
    SwitchboardError,
    parse_retry_after,
)
from channels.teams.credentials import TokenSource
from channels.teams.references import ConversationReferences
from channels.teams.translate import CHANNEL, outbound_activities
from channels.teams.verify import BOT_CONNECTOR_SCOPE
from channels.typing_indicator import TypingIndicators

TYPING_INTERVAL_S = 3.0
"""Teams shows a typing indicator for about three seconds; it is renewed this often."""
SEND_TIMEOUT_S = 30.0
DEFAULT_RETRY_AFTER_S = 1.0


def retry_after_seconds(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (:func:`bot.errors.parse_retry_after`)."""
    return parse_retry_after(value, default=DEFAULT_RETRY_AFTER_S)


def connector_error(exc: HttpOperationError) -> SwitchboardError:
    """The Switchboard error of a Bot Connector error answer.

    429 → RateLimited (``Retry-After``); 408 and 5xx → ChannelUnavailable; 401/403 →
    Forbidden (the bot is not in the conversation any more); 404 → NotFound; other 4xx →
    PayloadInvalid.
    """
    response = getattr(exc, "response", None)
    status = int(getattr(response, "status_code", 0) or 0)
    message = f"Bot Connector answered {status}: {exc}"
    if status == 429:
        headers = getattr(response, "headers", None) or {}
        return RateLimited(message, retry_after=retry_after_seconds(headers.get("Retry-After")))
    if status == 408 or status >= 500 or status == 0:
        return ChannelUnavailable(message)
    if status in (401, 403):
        return Forbidden(message)
    if status == 404:
        return NotFound(message)
    return PayloadInvalid(message, status=status)


class TeamsSender:
    """Posts into Teams conversations (see the module docstring).

    Args:
        settings: ``turn_timeout_s`` bounds a typing indicator.
        refs: the sessions' conversation references.
        app_id: the bot's Microsoft app id.
        login_url: authority of the outbound token.

    Attributes:
        tokens: the outbound token source once the channel started.
        adapter: the SDK's ``CloudAdapter`` once the channel started.
        typing: the sessions' typing indicators.
    """

    def __init__(
        self, settings: Settings, refs: ConversationReferences, *, app_id: str, login_url: str
    ) -> None:
        self.refs = refs
        self.app_id = app_id
        self.login_url = login_url
        self.tokens: TokenSource | None = None
        self.adapter: Any = None
        self.typing = TypingIndicators(
            self._show_typing,
            interval_s=TYPING_INTERVAL_S,
            timeout_s=settings.turn_timeout_s,
            channel=CHANNEL,
        )

    async def send(self, out: OutboundMessage) -> None:
        """Post a reply into the customer's Teams conversation (a proactive turn).

        Raises:
            NotFound: no ConversationReference is known for the session.
            RateLimited: Teams throttled the bot (429, ``retry_after`` from ``Retry-After``).
            ChannelUnavailable: the Bot Connector or the login service is unreachable or 5xx.
            Forbidden: the bot is no longer a member of the conversation (401/403).
        """
        ref = await self.refs.get(out.session_key)
        if ref is None:
            raise NotFound(f"no Teams conversation reference for {out.session_key}")
        if out.kind != OutboundKind.TYPING:
            self.typing.stop(out.session_key)
        await self.post(ref, outbound_activities(out), reply_to=out.reply_to)

    async def follow_typing(self, hub: HubAPI) -> None:
        """Show typing in Teams sessions while the hub composes a reply (``typing`` events)."""
        async with hub.events.subscribe() as sub:
            async for event in sub:
                if event.type == "typing" and channel_of(event.session_key) == CHANNEL:
                    self.typing.start(event.session_key)

    async def _show_typing(self, key: SessionKey) -> bool:
        ref = await self.refs.get(key)
        if ref is None:
            return False
        await self.post(ref, [{"type": "typing"}], reply_to=None)
        return True

    async def post(
        self, ref_json: dict[str, Any], activities: list[dict[str, Any]], *, reply_to: str | None
    ) -> None:
        """Send activities into the referenced conversation through the SDK's connector client.

        Args:
            ref_json: the conversation's reference (JSON).
            activities: the activities to send, in order (JSON).
            reply_to: the activity a ``message`` answers (None posts into the conversation).

        Raises:
            RateLimited, ChannelUnavailable, Forbidden, NotFound, PayloadInvalid: see
                :func:`connector_error`; ConfigError when the login service refuses the app.
        """
        if self.tokens is None or self.adapter is None:
            raise ChannelUnavailable("the Teams channel is not started")
        await self.tokens.token(self.login_url, BOT_CONNECTOR_SCOPE)
        reference = ConversationReference().deserialize(ref_json)

        async def callback(ctx: Any) -> None:
            client = ctx.turn_state[ctx.adapter.BOT_CONNECTOR_CLIENT_KEY]
            client.config.retry_policy.retries = 0  # the hub retries (honouring Retry-After)
            client.config.connection.timeout = SEND_TIMEOUT_S
            conversation_id = reference.conversation.id
            for doc in activities:
                act = Activity().deserialize(doc)
                act.channel_id = reference.channel_id
                act.service_url = reference.service_url
                act.conversation = reference.conversation
                act.from_property = reference.bot
                act.recipient = reference.user
                if reply_to and act.type == "message":
                    act.reply_to_id = reply_to
                    await client.conversations.reply_to_activity(conversation_id, reply_to, act)
                else:
                    await client.conversations.send_to_conversation(conversation_id, act)

        try:
            await self.adapter.continue_conversation(reference, callback, bot_app_id=self.app_id)
        except HttpOperationError as exc:
            raise connector_error(exc) from exc
        except ClientRequestError as exc:
            raise ChannelUnavailable(f"Bot Connector unreachable: {exc}") from exc
        except PermissionError as exc:
            raise ChannelUnavailable(f"no Bot Connector token: {exc}") from exc
