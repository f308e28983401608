"""The Slack channel plugin (``slack``) on slack-bolt's ``AsyncApp``: lifecycle and wiring.

Inbound, over HTTP (``POST /slack/events`` for events and interactivity) or Socket Mode
(``SWITCHBOARD_SLACK_APP_TOKEN``): :mod:`channels.slack.receive` (verification, ingest before
the ack). Outbound, replies and streamed answers: :mod:`channels.slack.send`. Both share the
sessions' reply addresses (:mod:`channels.slack.address`) and, once started, one Web API client
with the workspaces' bot tokens (:mod:`channels.slack.web_api`).

The agents' channel (``slack_agents_channel``) is :mod:`channels.slack.desk`. The OAuth install
flow is served at ``/slack/install`` and ``/slack/oauth_redirect`` when ``slack_client_id`` and
``slack_client_secret`` are set (:mod:`channels.slack.oauth`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channel import HubAPI, ParseResult
from bot.config import Settings
from bot.envelope import Attachment, OutboundMessage, SessionKey
from bot.errors import ChannelUnavailable, PayloadInvalid
from channels.slack import translate
from channels.slack.address import SlackAddress, SlackAddressBook
from channels.slack.desk import SlackDesk
from channels.slack.oauth import BOT_SCOPES, ResolverAuthorize, TokenResolver, parse_bot_tokens
from channels.slack.receive import INSTALL_PATH, REDIRECT_PATH, SlackReceiver
from channels.slack.send import SlackSender
from channels.slack.web_api import MAX_FILE_BYTES, SlackApiFailed, SlackWebApi, api_url

log = logging.getLogger(__name__)

OAUTH_STATE_TTL_S = 600


class SlackChannel:
    """The Slack channel plugin (``slack``): see the module docstring.

    Public API beyond :class:`~bot.channel.ChannelPlugin`: :attr:`app` (the bolt ``AsyncApp``
    once started), :attr:`web` (:class:`~channels.slack.web_api.SlackWebApi` once started),
    :meth:`stream` and :meth:`discard_stream` (:class:`~bot.channel.StreamingChannel`),
    :meth:`fetch_attachment`, :meth:`address_of`, :attr:`desk`.
    """

    name: ClassVar[str] = "slack"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = parse_bot_tokens(settings.slack_bot_token)
        self.web: SlackWebApi | None = None
        self.addresses = SlackAddressBook()
        self.sender = SlackSender(self.addresses)
        self.receiver = SlackReceiver(settings, self.addresses)
        self._http: aiohttp.ClientSession | None = None
        self._own_engine: AsyncEngine | None = None
        self._socket: Any = None

    @property
    def app(self) -> AsyncApp | None:
        """The bolt app once started."""
        return self.receiver.app

    @property
    def desk(self) -> SlackDesk | None:
        """The agents' channel, when ``slack_agents_channel`` is set and the channel started."""
        return self.receiver.desk

    # --- plugin protocol ------------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """True with a way in and a way to answer.

        A way in: the signing secret (HTTP) or an app token (Socket Mode). A way to answer: a
        bot token, or the OAuth client id and secret (installations in the database).
        """
        way_in = settings.slack_signing_secret is not None or settings.slack_app_token is not None
        oauth = bool(settings.slack_client_id) and settings.slack_client_secret is not None
        return way_in and (settings.slack_bot_token is not None or oauth)

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded Slack body (JSON or form-encoded) with :func:`translate.parse_payload`.

        Raises:
            PayloadInvalid: the body is not a Slack payload.
        """
        return translate.parse_payload(translate.decode_body(data), settings)

    def routes(self) -> Sequence[web.RouteDef]:
        """``POST /slack/events`` and the OAuth install routes."""
        return self.receiver.routes()

    async def start(self, hub: HubAPI) -> None:
        """Build the bolt app and open the installation store.

        Socket Mode is a pull receiver: :meth:`start_receiving`, one process at a time.

        Raises:
            ConfigError: the configuration cannot work (no signing secret for HTTP...).
        """
        self.addresses.hub = self.sender.hub = self.receiver.hub = hub
        settings = self.settings
        self._http = aiohttp.ClientSession()
        client = AsyncWebClient(base_url=api_url(settings), session=self._http)
        installation_store = None
        oauth_settings = None
        if settings.slack_client_id and settings.slack_client_secret is not None:
            engine = getattr(hub.store, "engine", None)
            if not isinstance(engine, AsyncEngine):
                from bot.store.sql import make_engine

                engine = self._own_engine = make_engine(settings.resolved_database_url)
            installation_store = AsyncSQLAlchemyInstallationStore(
                settings.slack_client_id, engine, logger=log
            )
            state_store = AsyncSQLAlchemyOAuthStateStore(OAUTH_STATE_TTL_S, engine, logger=log)
            await installation_store.create_tables()  # type: ignore[no-untyped-call]
            await state_store.create_tables()  # type: ignore[no-untyped-call]
            redirect = (
                settings.public_url.rstrip("/") + REDIRECT_PATH if settings.public_url else None
            )
            oauth_settings = AsyncOAuthSettings(
                client_id=settings.slack_client_id,
                client_secret=settings.slack_client_secret.get_secret_value(),
                scopes=list(BOT_SCOPES),
                installation_store=installation_store,
                state_store=state_store,
                install_path=INSTALL_PATH,
                redirect_uri_path=REDIRECT_PATH,
                redirect_uri=redirect,
            )
        resolver = TokenResolver(self.tokens, client, installation_store)
        self.web = self.sender.web = SlackWebApi(client, resolver, self._http)
        secret = settings.slack_signing_secret
        app = AsyncApp(
            name="switchboard",
            logger=log,
            signing_secret=secret.get_secret_value() if secret is not None else "socket-mode",
            client=client,
            authorize=ResolverAuthorize(resolver),  # type: ignore[arg-type]
            installation_store=installation_store,
            oauth_settings=oauth_settings,
            request_verification_enabled=secret is not None,
        )
        app.use(self.receiver.on_request)
        self.receiver.app = app
        if settings.slack_agents_channel:
            desk = SlackDesk(self.web, hub, settings.slack_agents_channel)
            self.receiver.desk = desk
            await desk.start()

    def receiver_account(self) -> str | None:
        """With Socket Mode, the app id of the app-level token (``xapp-1-{APP}-...``)."""
        token = self.settings.slack_app_token
        if token is None:
            return None
        parts = token.get_secret_value().split("-")
        if len(parts) > 2 and parts[0] == "xapp":
            return parts[2]
        return hashlib.sha256(token.get_secret_value().encode()).hexdigest()[:16]

    async def start_receiving(self) -> None:
        """Connect Socket Mode (when an app token is set): one process at a time."""
        token = self.settings.slack_app_token
        if token is None or self._socket is not None or self.app is None:
            return
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        self._socket = AsyncSocketModeHandler(
            self.app,
            app_token=token.get_secret_value(),
            web_client=AsyncWebClient(base_url=api_url(self.settings), session=self._http),
        )
        await self._socket.connect_async()
        log.info("slack.socket_mode_connected", extra={"channel": self.name})

    async def stop_receiving(self) -> None:
        """Close Socket Mode; an envelope not acked yet is redelivered by Slack."""
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close_async()

    async def stop(self) -> None:
        """Close Socket Mode, the desk, the HTTP session and an engine of our own."""
        await self.stop_receiving()
        if self.desk is not None:
            await self.desk.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._own_engine is not None:
            await self._own_engine.dispose()
            self._own_engine = None

    async def send(self, out: OutboundMessage) -> None:
        """Post a reply into the customer's DM or thread: :meth:`SlackSender.send`.

        Raises:
            RateLimited, ChannelUnavailable, SlackApiFailed, ConfigError: as
                :meth:`channels.slack.send.SlackSender.send`.
        """
        await self.sender.send(out)

    # --- streaming (bot.channel.StreamingChannel) ---------------------------------------------
    async def stream(self, out: OutboundMessage) -> None:
        """Show a partial answer (post once, then edit): :meth:`SlackSender.stream`.

        Raises:
            ValueError, RateLimited, ChannelUnavailable, SlackApiFailed, ConfigError: as
                :meth:`channels.slack.send.SlackSender.stream`.
        """
        await self.sender.stream(out)

    async def discard_stream(self, out: OutboundMessage) -> None:
        """Delete the partial message of a streamed answer: :meth:`SlackSender.discard_stream`.

        Raises:
            RateLimited, ChannelUnavailable, SlackApiFailed: as :meth:`stream`.
        """
        await self.sender.discard_stream(out)

    # --- public helpers -------------------------------------------------------------------------
    async def fetch_attachment(
        self, account: str, attachment: Attachment, *, max_bytes: int = MAX_FILE_BYTES
    ) -> bytes:
        """Download a file a customer shared (``url_private_download``) with the bot token.

        Args:
            account: the workspace id (the envelope's ``account``).
            attachment: an attachment of an inbound envelope.
            max_bytes: refuse larger files (bytes).

        Raises:
            PayloadTooLarge: the file is larger than ``max_bytes``.
            PayloadInvalid: the attachment has no URL.
            ChannelUnavailable: the download failed, or the channel is not started.
        """
        if not attachment.url:
            raise PayloadInvalid("the attachment has no URL", field="url")
        if self.web is None:
            raise ChannelUnavailable("the Slack channel is not started")
        return await self.web.fetch_file(attachment.url, team_id=account, max_bytes=max_bytes)

    async def address_of(self, session_key: SessionKey) -> SlackAddress:
        """Where replies of a session go (:meth:`SlackAddressBook.address_of`)."""
        return await self.addresses.address_of(session_key)


__all__ = ["SlackAddress", "SlackApiFailed", "SlackChannel"]
