"""The Slack channel plugin (``slack``) on slack-bolt's ``AsyncApp``.

Inbound, over HTTP (``POST /slack/events`` for events and interactivity) or Socket Mode
(``SWITCHBOARD_SLACK_APP_TOKEN``): the body is size-checked, its signature verified
(:mod:`channels.slack.verify`) and decoded before bolt sees it; bolt's own middleware then runs
(request verification again, ``ssl_check``, ``url_verification``, authorization per workspace,
ignoring the bot's own events), and one global middleware of ours parses the payload
(:mod:`channels.slack.translate`), awaits ``hub.ingest`` and only then acks Slack with 200 —
the turn itself runs later on the session's lane, so the ack stays well inside Slack's 3 s.
Retries (``X-Slack-Retry-Num``) carry the same ``event_id`` and are answered once by the hub's
dedupe. A draining hub or a failing store answers 503 so Slack retries.

Outbound, :meth:`SlackChannel.send` renders CommonMark as mrkdwn (:mod:`channels.slack.render`)
and posts with ``chat.postMessage`` into the customer's DM or thread; a 429 becomes
:class:`~bot.errors.RateLimited` with Slack's ``Retry-After`` so the hub waits and retries,
resuming a split message after the parts already posted.

Streamed answers (:class:`~bot.channel.StreamingChannel`): :meth:`SlackChannel.stream` posts the
partial answer once (``chat.postMessage``) and then edits that message (``chat.update``); the
final :meth:`SlackChannel.send` of the same idempotency key edits it into the final answer
(citations and buttons included) and posts only the further parts of a long answer. The
idempotency key → message ``ts`` mapping is kept in a bounded in-process cache and in the
conversation's meta (``slack_stream``: the session's latest streamed answer), so a turn resumed
by another process (a dead worker's lease taken over) edits the same message instead of posting
a second one. Only a process that dies between posting the partial message and writing that
meta leaves an orphan partial message behind. After a 429 on ``chat.update`` partial edits of
the workspace pause for ``Retry-After``; final answers keep the hub's retries.

The agents' channel (``slack_agents_channel``) is :mod:`channels.slack.desk`. The OAuth install
flow is served at ``/slack/install`` and ``/slack/oauth_redirect`` when ``slack_client_id`` and
``slack_client_secret`` are set (:mod:`channels.slack.oauth`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from cachetools import LRUCache
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channel import HubAPI, Ignored, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import Attachment, InboundMessage, OutboundKind, OutboundMessage, SessionKey
from bot.errors import (
    BackendUnavailable,
    ChannelUnavailable,
    Draining,
    PayloadInvalid,
    PayloadTooLarge,
    RateLimited,
    SwitchboardError,
)
from channels.slack import translate
from channels.slack.oauth import BOT_SCOPES, ResolverAuthorize, TokenResolver, parse_bot_tokens
from channels.slack.render import SlackMessage, build_messages, build_partial
from channels.slack.verify import verify_request

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted on ``/slack/events`` (Slack's payloads are far smaller)."""
EVENTS_PATH = "/slack/events"
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
OAUTH_STATE_TTL_S = 600
DEFAULT_RETRY_AFTER_S = 1.0
META_KEY = "slack"
"""Conversation meta key holding the reply address (:class:`SlackAddress` as a dict)."""
STREAM_META_KEY = "slack_stream"
"""Conversation meta key holding the session's latest streamed answer (:class:`_Streamed`)."""
_MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
"""``chat.update`` errors after which the final answer is posted as a new message."""


class SlackApiFailed(SwitchboardError):
    """The Slack Web API refused a call for good (not retried).

    Attributes:
        method: the API method (``chat.postMessage``...).
        error: Slack's ``error`` code (``channel_not_found``, ``not_in_channel``...).
    """

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error

    def __repr__(self) -> str:
        return f"SlackApiFailed(method={self.method!r}, error={self.error!r})"


@dataclass(frozen=True, slots=True)
class SlackAddress:
    """Where a session's replies go.

    Attributes:
        team: workspace id.
        channel: conversation id (``D...`` for a DM; a user id works too, it opens the DM).
        thread_ts: the thread to reply in (None for DMs).
        enterprise: Enterprise Grid organization id, when any.
    """

    team: str
    channel: str
    thread_ts: str | None = None
    enterprise: str | None = None


def api_url(settings: Settings) -> str:
    """The Web API base URL (``SWITCHBOARD_SLACK_API_URL``, default Slack's), ending in ``/``."""
    url = settings.slack_api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def _retry_after(exc: SlackApiError) -> float:
    headers = exc.response.headers or {}
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else DEFAULT_RETRY_AFTER_S
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S


async def call_api(
    method: str, call: Callable[..., Awaitable[AsyncSlackResponse]], **kwargs: Any
) -> AsyncSlackResponse:
    """Call a slack-sdk Web API method and convert its errors to :mod:`bot.errors`.

    Args:
        method: the API method's name (for errors and logs).
        call: the bound client method (``client.chat_postMessage``).
        **kwargs: its arguments (``token=`` included).

    Raises:
        RateLimited: HTTP 429; ``retry_after`` is Slack's ``Retry-After`` (seconds).
        ChannelUnavailable: network failure, timeout, or an HTTP 5xx.
        SlackApiFailed: any other ``ok: false`` answer.
    """
    try:
        return await call(**kwargs)
    except SlackApiError as exc:
        status = exc.response.status_code
        if status == 429 or exc.response.get("error") == "ratelimited":
            raise RateLimited(
                f"Slack {method} is rate limited", retry_after=_retry_after(exc)
            ) from exc
        if status >= 500:
            raise ChannelUnavailable(f"Slack {method} answered HTTP {status}") from exc
        raise SlackApiFailed(method, str(exc.response.get("error") or status)) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ChannelUnavailable(f"Slack {method} unreachable: {exc!r}") from exc


async def _post(
    client: AsyncWebClient, token: str, address: SlackAddress, message: SlackMessage
) -> AsyncSlackResponse:
    """``chat.postMessage`` of one rendered message to the session's channel (and thread).

    https://api.slack.com/methods/chat.postMessage; link and media unfurling off.

    Raises:
        As :func:`call_api`.
    """
    return await call_api(
        "chat.postMessage",
        client.chat_postMessage,
        token=token,
        channel=address.channel,
        thread_ts=address.thread_ts,
        text=message.text,
        blocks=message.blocks,
        metadata=message.metadata,
        unfurl_links=False,
        unfurl_media=False,
    )


async def _update(
    client: AsyncWebClient, token: str, streamed: _Streamed, message: SlackMessage
) -> AsyncSlackResponse:
    """``chat.update`` of a streamed message with a new rendering.

    https://api.slack.com/methods/chat.update

    Raises:
        As :func:`call_api`.
    """
    return await call_api(
        "chat.update",
        client.chat_update,
        token=token,
        channel=streamed.channel,
        ts=streamed.ts,
        text=message.text,
        blocks=message.blocks,
        metadata=message.metadata,
    )


def _bolt_to_aiohttp(resp: BoltResponse) -> web.Response:
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


@dataclass(slots=True)
class _Streamed:
    """The Slack message of one streamed answer.

    Attributes:
        key: the answer's idempotency key.
        channel: the conversation id Slack answered ``chat.postMessage`` with (``D...`` even
            when the post named a user).
        ts: the message's timestamp (its id).
        final: True once the final answer was sent into it (later partial edits are ignored).
        shown: the partial text last sent (an unchanged rendering is not sent again).
    """

    key: str
    channel: str
    ts: str
    final: bool = False
    shown: str = ""

    def as_meta(self) -> dict[str, Any]:
        return {"key": self.key, "channel": self.channel, "ts": self.ts, "final": self.final}


class SlackChannel:
    """The Slack channel plugin (``slack``): see the module docstring.

    Public API beyond :class:`~bot.channel.ChannelPlugin`: :attr:`app` (the bolt ``AsyncApp``
    once started), :meth:`stream` and :meth:`discard_stream`
    (:class:`~bot.channel.StreamingChannel`), :meth:`fetch_attachment`, :meth:`update_message`,
    :attr:`desk`.
    """

    name: ClassVar[str] = "slack"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = parse_bot_tokens(settings.slack_bot_token)
        self.app: AsyncApp | None = None
        self.client: AsyncWebClient | None = None
        self.resolver: TokenResolver | None = None
        self.desk: Any = None
        self._hub: HubAPI | None = None
        self._http: aiohttp.ClientSession | None = None
        self._own_engine: AsyncEngine | None = None
        self._socket: Any = None
        self._addresses: LRUCache[SessionKey, SlackAddress] = LRUCache(50_000)
        self._progress: LRUCache[str, int] = LRUCache(10_000)
        self._streams: LRUCache[str, _Streamed] = LRUCache(10_000)
        self._stream_paused_until: dict[str, float] = {}

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
        return [
            web.post(EVENTS_PATH, self._events),
            web.get(INSTALL_PATH, self._install),
            web.get(REDIRECT_PATH, self._oauth_redirect),
        ]

    async def start(self, hub: HubAPI) -> None:
        """Build the bolt app and open the installation store.

        Socket Mode is a pull receiver: :meth:`start_receiving`, one process at a time.

        Raises:
            ConfigError: the configuration cannot work (no signing secret for HTTP...).
        """
        self._hub = hub
        settings = self.settings
        self._http = aiohttp.ClientSession()
        self.client = AsyncWebClient(base_url=api_url(settings), session=self._http)
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
        self.resolver = TokenResolver(self.tokens, self.client, installation_store)
        secret = settings.slack_signing_secret
        self.app = AsyncApp(
            name="switchboard",
            logger=log,
            signing_secret=secret.get_secret_value() if secret is not None else "socket-mode",
            client=self.client,
            authorize=ResolverAuthorize(self.resolver),  # type: ignore[arg-type]
            installation_store=installation_store,
            oauth_settings=oauth_settings,
            request_verification_enabled=secret is not None,
        )
        self.app.use(self._on_request)
        if settings.slack_agents_channel:
            from channels.slack.desk import SlackDesk

            self.desk = SlackDesk(self, hub, settings.slack_agents_channel)
            await self.desk.start()

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
        """Post a reply into the customer's DM or thread (``chat.postMessage``).

        ``typing`` is not sent (Slack has no typing indicator for bots in conversations). A
        message longer than a section block is posted as several messages; when a part fails
        the hub retries and the parts already posted are not posted again. When the answer was
        streamed (:meth:`stream`, same idempotency key), its first part edits the streamed
        message (``chat.update``) instead of being posted; a streamed message that is gone
        (deleted, too old to edit) is replaced by a new post.

        Raises:
            RateLimited: Slack answered 429 (``retry_after`` from ``Retry-After``).
            ChannelUnavailable: Slack is unreachable or failing (5xx).
            SlackApiFailed: Slack refused the message (e.g. ``channel_not_found``).
            ConfigError: no bot token for the session's workspace.
        """
        if out.kind == OutboundKind.TYPING:
            return
        client, resolver = self._require_client()
        address = await self.address_of(out.session_key)
        token = await resolver.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        messages = build_messages(out)
        progress_key = (
            out.idempotency_key or hashlib.sha256(out.model_dump_json().encode()).hexdigest()
        )
        done = self._progress.get(progress_key, 0)
        streamed = None
        if out.idempotency_key and out.kind == OutboundKind.ANSWER:  # only answers are streamed
            streamed = await self._stream_of(out.session_key, out.idempotency_key)
        for i in range(done, len(messages)):
            message = messages[i]
            if i == 0 and streamed is not None:
                edited = await self._finish_stream(
                    client, token, streamed, message, out.session_key
                )
                await self._save_stream(out.session_key, streamed)  # final: no partial edits
                if edited:
                    self._progress[progress_key] = 1
                    continue
            await _post(client, token, address, message)
            self._progress[progress_key] = i + 1
        log.info(
            "slack.sent",
            extra={
                "channel": self.name,
                "session_key": out.session_key,
                "parts": len(messages),
                "streamed": streamed is not None,
            },
        )

    # --- streaming (bot.channel.StreamingChannel) ---------------------------------------------
    async def stream(self, out: OutboundMessage) -> None:
        """Show a partial answer: post it once, then edit that message (``chat.update``).

        The message shows the first part of the text so far and a "writing…" note
        (:func:`channels.slack.render.build_partial`). Does nothing once the final answer of
        the key was sent, or when the rendering did not change. After a 429 every partial edit
        of the workspace is refused locally (``RateLimited``) until ``Retry-After`` passed.

        Raises:
            ValueError: ``out.idempotency_key`` is None.
            RateLimited: Slack answered 429, or an earlier 429's wait is not over.
            ChannelUnavailable: Slack is unreachable or failing (5xx).
            SlackApiFailed: Slack refused the call.
            ConfigError: no bot token for the session's workspace.
        """
        key = out.idempotency_key
        if key is None:
            raise ValueError("a streamed message needs an idempotency_key")
        streamed = await self._stream_of(out.session_key, key)
        if streamed is not None and streamed.final:
            return
        message = build_partial(out)
        if streamed is not None and streamed.shown == message.text:
            return
        client, resolver = self._require_client()
        address = await self.address_of(out.session_key)
        paused = self._stream_paused_until.get(address.team, 0.0) - time.monotonic()
        if paused > 0:
            raise RateLimited("Slack partial edits are paused", retry_after=paused)
        token = await resolver.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        try:
            if streamed is None:
                resp = await _post(client, token, address, message)
                streamed = _Streamed(
                    key=key, channel=str(resp.get("channel") or address.channel), ts=resp["ts"]
                )
                streamed.shown = message.text
                self._streams[key] = streamed
                await self._save_stream(out.session_key, streamed)
            else:
                await _update(client, token, streamed, message)
                streamed.shown = message.text
        except RateLimited as exc:
            self._stream_paused_until[address.team] = time.monotonic() + exc.retry_after
            raise

    async def discard_stream(self, out: OutboundMessage) -> None:
        """Delete the partial message of ``out.idempotency_key`` (``chat.delete``).

        Does nothing when nothing was streamed under the key or its final answer was sent; a
        message already gone counts as deleted.

        Raises:
            RateLimited, ChannelUnavailable, SlackApiFailed: as :meth:`stream`.
        """
        key = out.idempotency_key
        if key is None:
            return
        streamed = await self._stream_of(out.session_key, key)
        if streamed is None or streamed.final:
            return
        client, resolver = self._require_client()
        address = await self.address_of(out.session_key)
        token = await resolver.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        try:
            await call_api(
                "chat.delete",
                client.chat_delete,
                token=token,
                channel=streamed.channel,
                ts=streamed.ts,
            )
        except SlackApiFailed as exc:
            if exc.error != "message_not_found":
                raise
        self._streams.pop(key, None)
        await self._forget_stream(out.session_key)
        log.info(
            "slack.stream_discarded",
            extra={"channel": self.name, "session_key": out.session_key, "idempotency_key": key},
        )

    async def _finish_stream(
        self,
        client: AsyncWebClient,
        token: str,
        streamed: _Streamed,
        message: SlackMessage,
        session_key: SessionKey,
    ) -> bool:
        """Edit a streamed message into the final answer's first part; False when it is gone."""
        streamed.final = True  # from now on partial edits of this key change nothing
        try:
            await _update(client, token, streamed, message)
        except SlackApiFailed as exc:
            if exc.error not in _MESSAGE_GONE:
                raise
            log.warning(
                "slack.stream_gone",
                extra={"channel": self.name, "session_key": session_key, "error": exc.error},
            )
            return False
        return True

    async def _stream_of(self, session_key: SessionKey, key: str) -> _Streamed | None:
        """The streamed message of ``key``: cached, else from the conversation's meta."""
        streamed = self._streams.get(key)
        if streamed is not None or self._hub is None:
            return streamed
        conv = await self._hub.store.conversation(session_key)
        stored = conv.meta.get(STREAM_META_KEY) if conv is not None else None
        if not isinstance(stored, dict) or stored.get("key") != key:
            return None
        try:
            streamed = _Streamed(
                key=key,
                channel=str(stored["channel"]),
                ts=str(stored["ts"]),
                final=bool(stored.get("final")),
            )
        except KeyError:
            return None
        self._streams[key] = streamed
        return streamed

    async def _save_stream(self, session_key: SessionKey, streamed: _Streamed) -> None:
        if self._hub is None:
            return
        try:
            await self._hub.store.set_meta(session_key, STREAM_META_KEY, streamed.as_meta())
        except SwitchboardError:
            log.warning("slack.meta_failed", exc_info=True, extra={"session_key": session_key})

    async def _forget_stream(self, session_key: SessionKey) -> None:
        if self._hub is None:
            return
        try:
            await self._hub.store.set_meta(session_key, STREAM_META_KEY, None)
        except SwitchboardError:
            log.warning("slack.meta_failed", exc_info=True, extra={"session_key": session_key})

    # --- public helpers -------------------------------------------------------------------------
    async def update_message(self, session_key: SessionKey, ts: str, markdown: str) -> None:
        """Replace the text of a message the bot posted (``chat.update``).

        The hub streams answers with :meth:`stream`; this is for other edits of a known
        message.

        Raises:
            RateLimited, ChannelUnavailable, SlackApiFailed: as :meth:`send`.
        """
        client, resolver = self._require_client()
        address = await self.address_of(session_key)
        token = await resolver.bot_token(team_id=address.team, enterprise_id=address.enterprise)
        [message] = build_messages(OutboundMessage(session_key=session_key, text=markdown))[-1:]
        await call_api(
            "chat.update",
            client.chat_update,
            token=token,
            channel=address.channel,
            ts=ts,
            text=message.text,
            blocks=message.blocks,
        )

    async def fetch_attachment(
        self, account: str, attachment: Attachment, *, max_bytes: int = 25 * 1024 * 1024
    ) -> bytes:
        """Download a file a customer shared (``url_private_download``) with the bot token.

        Args:
            account: the workspace id (the envelope's ``account``).
            attachment: an attachment of an inbound envelope.
            max_bytes: refuse larger files (bytes).

        Raises:
            PayloadTooLarge: the file is larger than ``max_bytes``.
            PayloadInvalid: the attachment has no URL.
            ChannelUnavailable: the download failed.
        """
        if not attachment.url:
            raise PayloadInvalid("the attachment has no URL", field="url")
        _, resolver = self._require_client()
        assert self._http is not None
        token = await resolver.bot_token(team_id=account)
        try:
            async with self._http.get(
                attachment.url, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                if resp.status != 200:
                    raise ChannelUnavailable(f"file download answered HTTP {resp.status}")
                data = await resp.content.read(max_bytes + 1)
        except aiohttp.ClientError as exc:
            raise ChannelUnavailable(f"file download failed: {exc!r}") from exc
        if len(data) > max_bytes:
            raise PayloadTooLarge("the file is too large", limit_bytes=max_bytes)
        return data

    async def address_of(self, session_key: SessionKey) -> SlackAddress:
        """Where replies of a session go.

        Remembered, else stored in the conversation's meta, else derived from the key itself
        (a DM key names the user; a thread key its channel and thread).
        """
        cached = self._addresses.get(session_key)
        if cached is not None:
            return cached
        hub = self._hub
        if hub is not None:
            conv = await hub.store.conversation(session_key)
            stored = conv.meta.get(META_KEY) if conv is not None else None
            if isinstance(stored, dict):
                try:
                    address = SlackAddress(**stored)
                except TypeError:
                    address = None
                if address is not None:
                    self._addresses[session_key] = address
                    return address
        team, channel, thread, user = translate.address_of(session_key)
        target = channel or user
        assert target is not None
        return SlackAddress(team=team, channel=target, thread_ts=thread)

    # --- inbound --------------------------------------------------------------------------------
    def _require_client(self) -> tuple[AsyncWebClient, TokenResolver]:
        if self.client is None or self.resolver is None:
            raise ChannelUnavailable("the Slack channel is not started")
        return self.client, self.resolver

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
                    "channel": self.name,
                    "retry_num": retry,
                    "retry_reason": request.headers.get("X-Slack-Retry-Reason"),
                },
            )
        return _bolt_to_aiohttp(await app.async_dispatch(bolt_request))

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
        return _bolt_to_aiohttp(response)

    async def _install(self, request: web.Request) -> web.StreamResponse:
        return await self._oauth_get(request, install=True)

    async def _oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        return await self._oauth_get(request, install=False)

    async def _on_request(
        self,
        req: AsyncBoltRequest,
        body: dict[str, Any],
        context: AsyncBoltContext,
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse:
        """Bolt global middleware: every authorized request ends here (never calls ``next``)."""
        hub = self._hub
        if hub is None:
            return BoltResponse(status=503, body="")
        if self.desk is not None and self.desk.owns(body):
            self.desk.handle(body, context)
            return BoltResponse(status=200, body="")
        try:
            result = translate.parse_payload(body, self.settings, bot_user_id=context.bot_user_id)
        except PayloadInvalid as exc:
            log.warning("slack.payload_invalid", extra={"channel": self.name, "error": str(exc)})
            return BoltResponse(status=400, body="")
        if isinstance(result, Ignored):
            log.debug("slack.ignored", extra={"channel": self.name, "reason": result.reason})
            return BoltResponse(status=200, body="")
        return await self._ingest(hub, result, body)

    async def _ingest(self, hub: HubAPI, result: Parsed, body: dict[str, Any]) -> BoltResponse:
        msg: InboundMessage = result.envelope
        # A thread reply without a mention counts only in threads that already are sessions.
        unmentioned = not msg.is_direct and not msg.mentioned and msg.action is None
        if unmentioned and await hub.store.conversation(msg.session_key) is None:
            return BoltResponse(status=200, body="")
        address = self._address_from(msg, body)
        self._addresses[msg.session_key] = address
        try:
            receipt = await hub.ingest(msg)
        except (Draining, BackendUnavailable) as exc:
            log.warning(
                "slack.ingest_refused",
                extra={"channel": self.name, "event_id": msg.event_id, "error": repr(exc)},
            )
            return BoltResponse(status=503, body="", headers={"Retry-After": "5"})
        if not receipt.duplicate:
            await self._remember(msg.session_key, address)
        log.info(
            "slack.accepted",
            extra={
                "channel": self.name,
                "session_key": receipt.session_key,
                "event_id": receipt.event_id,
                "duplicate": receipt.duplicate,
            },
        )
        return BoltResponse(status=200, body="")

    @staticmethod
    def _address_from(msg: InboundMessage, body: dict[str, Any]) -> SlackAddress:
        event = body.get("event") if isinstance(body.get("event"), dict) else None
        channel: str | None = None
        if event is not None:
            channel = event.get("channel")
        else:
            container = body.get("container") or {}
            channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        return SlackAddress(
            team=msg.account,
            channel=channel or msg.sender.id,
            thread_ts=None if msg.is_direct else msg.thread_id,
            enterprise=translate.enterprise_of(body),
        )

    async def _remember(self, key: SessionKey, address: SlackAddress) -> None:
        hub = self._hub
        if hub is None:
            return
        conv = await hub.store.conversation(key)
        if conv is not None and conv.meta.get(META_KEY) == asdict(address):
            return
        try:
            await hub.store.set_meta(key, META_KEY, asdict(address))
        except SwitchboardError:
            log.warning("slack.meta_failed", exc_info=True, extra={"session_key": key})


__all__ = ["SlackAddress", "SlackApiFailed", "SlackChannel", "api_url", "call_api"]
