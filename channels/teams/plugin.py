"""The Microsoft Teams channel: Bot Framework activities through botbuilder's ``CloudAdapter``.

Routes: ``POST /api/messages`` and ``POST /teams/messages`` (the bot's messaging endpoint).

This module is the lifecycle: it builds the SDK's adapter, the token source and the verifier
from the settings and wires them to the inbound side (:mod:`channels.teams.receive`: verify,
ingest before the answer, store the conversation reference, welcome on install) and the
outbound side (:mod:`channels.teams.send`: proactive turns through the Bot Connector, typing
indicators, throttling as :class:`~bot.errors.RateLimited`). Both share the sessions'
conversation references (:mod:`channels.teams.references`). Activities ↔ envelopes are pure
functions in :mod:`channels.teams.translate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar

import aiohttp
from aiohttp import web
from botbuilder.integration.aiohttp import CloudAdapter  # type: ignore[import-untyped]

from bot.channel import HubAPI, Ignored, ParseResult
from bot.config import Settings
from bot.envelope import OutboundMessage
from bot.errors import ConfigError
from bot.payload import decode_json
from channels.teams.credentials import TokenCredentialsFactory, TokenSource
from channels.teams.receive import TeamsReceiver
from channels.teams.references import ConversationReferences
from channels.teams.send import TeamsSender
from channels.teams.translate import CHANNEL, activity_object, to_result
from channels.teams.verify import (
    BOT_CONNECTOR_SCOPE,
    BOT_FRAMEWORK_ISSUER,
    DEFAULT_OPENID_METADATA_URL,
    BotFrameworkVerifier,
    SdkConfiguration,
    build_authentication,
    default_login_url,
)

logger = logging.getLogger(__name__)


class TeamsChannel:
    """The Microsoft Teams channel plugin (``teams``).

    Args:
        settings: ``teams_app_id``, ``teams_app_password`` (enable it), ``teams_tenant_id``
            (single-tenant app: token authority and the only tenant served) and
            ``teams_openid_metadata_url``.
        login_url: authority of the outbound token (default
            ``https://login.microsoftonline.com/{tenant or botframework.com}``); tests point it
            at a loopback token endpoint.
    """

    name: ClassVar[str] = CHANNEL

    def __init__(self, settings: Settings, *, login_url: str | None = None) -> None:
        self.settings = settings
        self.app_id = settings.teams_app_id or ""
        self.login_url = login_url or default_login_url(settings.teams_tenant_id)
        self.refs = ConversationReferences()
        self.sender = TeamsSender(
            settings, self.refs, app_id=self.app_id, login_url=self.login_url
        )
        self.receiver = TeamsReceiver(settings, self.refs)
        self._http: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None

    # --- plugin protocol ---------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """True when ``teams_app_id`` and ``teams_app_password`` are set."""
        return bool(settings.teams_app_id and settings.teams_app_password)

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse one recorded activity (JSON object) into an envelope or an Ignored.

        A JSON scalar (such as a recorded attachment's content) is ignored: it is no activity.

        Raises:
            PayloadInvalid: malformed JSON, a JSON array (parse a ``.transcript``'s activities
                one by one), or a message missing ``id``/``conversation.id``/``from.id``.
        """
        decoded = decode_json(data)
        if not isinstance(decoded, dict | list):
            return Ignored(f"not an activity: a JSON {type(decoded).__name__}")
        doc = activity_object(decoded)
        return to_result(
            doc,
            default_tenant=settings.teams_tenant_id,
            max_message_bytes=settings.max_message_bytes,
            verified=False,
        )

    def routes(self) -> Sequence[web.RouteDef]:
        """The messaging endpoint, at ``/api/messages`` and ``/teams/messages``."""
        return self.receiver.routes()

    async def start(self, hub: HubAPI) -> None:
        """Build the SDK adapter and the token source; follow the hub's typing events.

        Raises:
            ConfigError: app id or password missing.
        """
        password = self.settings.teams_app_password
        if not self.app_id or password is None:
            raise ConfigError("teams needs SWITCHBOARD_TEAMS_APP_ID and _APP_PASSWORD")
        self._http = aiohttp.ClientSession()
        tokens = TokenSource(app_id=self.app_id, password=password, session=self._http)
        tenant = self.settings.teams_tenant_id
        config = SdkConfiguration(
            APP_ID=self.app_id,
            APP_PASSWORD=password.get_secret_value(),
            APP_TYPE="SingleTenant" if tenant else "MultiTenant",
            APP_TENANTID=tenant,
            TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=(
                self.settings.teams_openid_metadata_url or DEFAULT_OPENID_METADATA_URL
            ),
            TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=BOT_FRAMEWORK_ISSUER,
            TO_CHANNEL_FROM_BOT_LOGIN_URL=self.login_url,
            TO_CHANNEL_FROM_BOT_OAUTH_SCOPE=BOT_CONNECTOR_SCOPE,
            TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL=(
                self.settings.teams_openid_metadata_url or DEFAULT_OPENID_METADATA_URL
            ),
            OAUTH_URL=BOT_FRAMEWORK_ISSUER,
        )
        authentication = build_authentication(
            config, TokenCredentialsFactory(tokens, self.login_url)
        )
        adapter = CloudAdapter(authentication)
        self.sender.tokens = tokens
        self.sender.adapter = self.receiver.adapter = adapter
        self.receiver.verifier = BotFrameworkVerifier(authentication)
        self.refs.hub = self.receiver.hub = hub
        self._watcher = asyncio.create_task(self.sender.follow_typing(hub))

    async def stop(self) -> None:
        """Stop typing indicators and pending welcomes; close the HTTP session."""
        if self._watcher is not None:
            self._watcher.cancel()
        await self.receiver.close()
        await self.sender.typing.close()
        if self._watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._http is not None:
            await self._http.close()

    async def send(self, out: OutboundMessage) -> None:
        """Post a reply into the customer's Teams conversation (a proactive turn).

        Raises:
            NotFound, RateLimited, ChannelUnavailable, Forbidden: as
                :meth:`channels.teams.send.TeamsSender.send`.
        """
        await self.sender.send(out)
