"""The Microsoft Teams channel: Bot Framework activities through botbuilder's ``CloudAdapter``.

Routes: ``POST /api/messages`` and ``POST /teams/messages`` (the bot's messaging endpoint).

Inbound, per request: the bearer token is required before the body is read; the body is
decoded (400 when malformed, 413 over ``max_body_bytes``), the token is verified against the
activity (:mod:`channels.teams.verify`, 401), and only then the SDK's
``CloudAdapter.process_activity`` runs the turn: messages (and Adaptive Card submits) become
envelopes and are ingested before the answer ``200`` (503 when the hub cannot keep them); the
``ConversationReference`` is stored on the conversation (``meta["teams_ref"]``) for proactive
replies. ``conversationUpdate`` that adds the bot sends one welcome per conversation (an
idempotency key per conversation id); reactions, typing, installation updates, edits,
deletions and invokes are acknowledged and ignored on purpose.

Outbound (:meth:`TeamsChannel.send`): proactive turns (``CloudAdapter.continue_conversation``
with the stored reference) post through the SDK's ``ConnectorClient`` to the reference's
``serviceUrl``: ``POST /v3/conversations/{id}/activities/{replyToId}`` for answers to a
message, ``POST /v3/conversations/{id}/activities`` otherwise (Bot Connector REST API,
https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-api-reference).
A typing activity is repeated every 3 s while a turn runs (hub ``typing`` events). Throttling
(429 with ``Retry-After``) raises :class:`~bot.errors.RateLimited`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from azure.core.exceptions import DeserializationError as AzureDeserializationError
from botbuilder.core import TurnContext  # type: ignore[import-untyped]
from botbuilder.integration.aiohttp import CloudAdapter  # type: ignore[import-untyped]
from botbuilder.schema import Activity, ConversationReference  # type: ignore[import-untyped]
from cachetools import LRUCache
from msrest.exceptions import ClientRequestError, HttpOperationError

from bot.channel import HubAPI, Ignored, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import (
    TALK_TO_HUMAN,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    channel_of,
    utcnow,
)
from bot.errors import (
    ChannelUnavailable,
    ConfigError,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
    SignatureInvalid,
    SwitchboardError,
)
from channels.teams.credentials import TokenCredentialsFactory, TokenSource
from channels.teams.translate import (
    CHANNEL,
    activity_object,
    bot_was_added,
    conversation_kind,
    decode_json,
    load_activity,
    outbound_activities,
    teams_session_key,
    tenant_of,
    thread_root,
    to_result,
)
from channels.teams.verify import (
    BOT_CONNECTOR_SCOPE,
    BOT_FRAMEWORK_ISSUER,
    DEFAULT_OPENID_METADATA_URL,
    BotFrameworkVerifier,
    SdkConfiguration,
    bearer_token,
    build_authentication,
    default_login_url,
)

logger = logging.getLogger(__name__)

REF_META_KEY = "teams_ref"
"""Conversation meta key of the stored ``ConversationReference`` (JSON, camelCase)."""
REF_CACHE_SIZE = 10_000
TYPING_INTERVAL_S = 3.0
"""Teams shows a typing indicator for about three seconds; it is renewed this often."""
SEND_TIMEOUT_S = 30.0
DEFAULT_RETRY_AFTER_S = 1.0


def retry_after_seconds(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date, RFC 9110)."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    return max(0.0, (when - utcnow()).total_seconds())


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
        self._hub: HubAPI | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tokens: TokenSource | None = None
        self._verifier: BotFrameworkVerifier | None = None
        self._adapter: Any = None
        self._refs: LRUCache[SessionKey, dict[str, Any]] = LRUCache(maxsize=REF_CACHE_SIZE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._typing: dict[SessionKey, asyncio.Task[None]] = {}
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
        return [
            web.post("/api/messages", self._on_request),
            web.post("/teams/messages", self._on_request),
        ]

    async def start(self, hub: HubAPI) -> None:
        """Build the SDK adapter and the token source; follow the hub's typing events.

        Raises:
            ConfigError: app id or password missing.
        """
        password = self.settings.teams_app_password
        if not self.app_id or password is None:
            raise ConfigError("teams needs SWITCHBOARD_TEAMS_APP_ID and _APP_PASSWORD")
        self._http = aiohttp.ClientSession()
        self._tokens = TokenSource(app_id=self.app_id, password=password, session=self._http)
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
            config, TokenCredentialsFactory(self._tokens, self.login_url)
        )
        self._verifier = BotFrameworkVerifier(authentication)
        self._adapter = CloudAdapter(authentication)
        self._hub = hub
        self._watcher = asyncio.create_task(self._watch_typing(hub))

    async def stop(self) -> None:
        """Stop typing indicators and pending welcomes; close the HTTP session."""
        tasks = [*self._tasks, *self._typing.values()]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._typing.clear()
        if self._http is not None:
            await self._http.close()

    async def send(self, out: OutboundMessage) -> None:
        """Post a reply into the customer's Teams conversation (a proactive turn).

        Raises:
            NotFound: no ConversationReference is known for the session.
            RateLimited: Teams throttled the bot (429, ``retry_after`` from ``Retry-After``).
            ChannelUnavailable: the Bot Connector or the login service is unreachable or 5xx.
            Forbidden: the bot is no longer a member of the conversation (401/403).
        """
        ref = await self._reference(out.session_key)
        if ref is None:
            raise NotFound(f"no Teams conversation reference for {out.session_key}")
        if out.kind != OutboundKind.TYPING:
            self._stop_typing(out.session_key)
        await self._post(ref, outbound_activities(out), reply_to=out.reply_to)

    # --- inbound -----------------------------------------------------------------------------
    def _require_hub(self) -> HubAPI:
        if self._hub is None or self._verifier is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        return self._hub

    async def _on_request(self, request: web.Request) -> web.StreamResponse:
        hub = self._require_hub()
        assert self._verifier is not None
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
            auth = await self._verifier.authenticate(activity, auth_header)
        except SignatureInvalid as exc:
            logger.info(
                "teams.rejected",
                extra={"channel": CHANNEL, "event_id": doc.get("id"), "reason": str(exc)},
            )
            raise
        answer: list[web.StreamResponse] = []

        async def turn(ctx: Any) -> None:
            answer.append(await self._handle(hub, doc, ctx))

        invoke = await self._adapter.process_activity(auth, activity, turn)
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
        ref = self._reference_of(doc, ctx.activity)
        if key is not None:
            self._refs[key] = ref
        if isinstance(result, Parsed):
            msg = result.envelope
            receipt = await hub.ingest(msg)
            await self._save_reference(hub, msg.session_key, ref)
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
            await self._save_reference(hub, key, ref)
            if bot_was_added(doc):
                conversation_id = str(doc["conversation"]["id"])
                self._spawn(self._welcome(hub, key, conversation_id))
        logger.info(
            "teams.ignored",
            extra={"channel": CHANNEL, "event_id": doc.get("id"), "reason": result.reason},
        )
        return web.Response(status=200)

    def _reference_of(self, doc: dict[str, Any], activity: Any) -> dict[str, Any]:
        """The activity's ConversationReference as JSON.

        In a channel, the conversation id always names the reply chain
        (``{channel};messageid={root}``), so proactive posts land in the thread.
        """
        ref: dict[str, Any] = TurnContext.get_conversation_reference(activity).serialize()
        if conversation_kind(doc) == "channel":
            root = thread_root(doc)
            conversation = dict(ref.get("conversation") or {})
            channel_id = str(conversation.get("id", "")).partition(";messageid=")[0]
            if root and channel_id:
                conversation["id"] = f"{channel_id};messageid={root}"
                ref["conversation"] = conversation
        return ref

    async def _save_reference(self, hub: HubAPI, key: SessionKey, ref: dict[str, Any]) -> None:
        with contextlib.suppress(NotFound):  # no conversation yet (e.g. a conversationUpdate)
            await hub.store.set_meta(key, REF_META_KEY, ref)

    async def _reference(self, key: SessionKey) -> dict[str, Any] | None:
        ref = self._refs.get(key)
        if ref is not None:
            return ref
        hub = self._hub
        if hub is None:
            return None
        conv = await hub.store.conversation(key)
        stored = conv.meta.get(REF_META_KEY) if conv is not None else None
        if isinstance(stored, dict):
            self._refs[key] = stored
            return stored
        return None

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

    # --- typing ------------------------------------------------------------------------------
    async def _watch_typing(self, hub: HubAPI) -> None:
        async with hub.events.subscribe() as sub:
            async for event in sub:
                if event.type == "typing" and channel_of(event.session_key) == CHANNEL:
                    self._start_typing(event.session_key)

    def _start_typing(self, key: SessionKey) -> None:
        running = self._typing.get(key)
        if running is not None and not running.done():
            return
        self._typing[key] = asyncio.create_task(self._typing_loop(key))

    def _stop_typing(self, key: SessionKey) -> None:
        task = self._typing.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _typing_loop(self, key: SessionKey) -> None:
        """Renew the typing indicator until the reply is sent or the turn times out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.turn_timeout_s
        try:
            while loop.time() < deadline:
                ref = await self._reference(key)
                if ref is None:
                    return
                await self._post(ref, [{"type": "typing"}], reply_to=None)
                await asyncio.sleep(TYPING_INTERVAL_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning(
                "teams.typing_failed",
                exc_info=True,
                extra={"channel": CHANNEL, "session_key": key},
            )
        finally:
            if self._typing.get(key) is asyncio.current_task():
                del self._typing[key]

    # --- outbound ----------------------------------------------------------------------------
    async def _post(
        self, ref_json: dict[str, Any], activities: list[dict[str, Any]], *, reply_to: str | None
    ) -> None:
        """Send activities into the referenced conversation through the SDK's connector client.

        Raises:
            RateLimited, ChannelUnavailable, Forbidden, NotFound, PayloadInvalid: see
                :func:`connector_error`; ConfigError when the login service refuses the app.
        """
        if self._tokens is None or self._adapter is None:
            raise ChannelUnavailable("the Teams channel is not started")
        await self._tokens.token(self.login_url, BOT_CONNECTOR_SCOPE)
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
            await self._adapter.continue_conversation(reference, callback, bot_app_id=self.app_id)
        except HttpOperationError as exc:
            raise connector_error(exc) from exc
        except ClientRequestError as exc:
            raise ChannelUnavailable(f"Bot Connector unreachable: {exc}") from exc
        except PermissionError as exc:
            raise ChannelUnavailable(f"no Bot Connector token: {exc}") from exc
