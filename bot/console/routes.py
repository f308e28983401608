"""The human agents' console: a page, its static assets, a JSON API and a live event stream.

Mounted at ``/console`` as an aiohttp sub-application (it has its own session and error
middlewares, which touch nothing else of the server):

- ``GET /console/``: the single-page console (HTML); ``GET /console/static/{file}``: its JS, CSS.
- ``POST /console/api/login`` ``{"name", "password"}`` → ``{"agent", "permissions", "csrf",
  "extensions"}`` (the ``switchboard.console`` extensions loaded, e.g. ``["knowledge"]``);
  401 when wrong, 429 (``Retry-After``) after too many failures.
- ``POST /console/api/logout`` → 204. ``GET /console/api/me`` → ``{"agent", "permissions", "csrf",
  "capacity", "extensions"}``; 401 when logged out. ``agent`` is ``{"name", "display_name", "role",
  "active"}``; ``permissions`` lists ``read``, ``act``, ``manage`` as the role grants
  (:data:`bot.auth.ROLE_PERMISSIONS`). Every call below checks them on the server: reading needs
  ``read``; claim, reply, note and resolve need ``act`` (403 for a viewer).
- ``/console/api/agents``: account administration (``manage``, admins): :mod:`bot.console.admin`.
- canned replies, search, copilot, analytics: :mod:`bot.console.desk_routes`.
- the audit log and customer export/erase (admins): :mod:`bot.console.privacy_routes`.
- ``GET /console/api/openapi.json``: this API's OpenAPI document (:mod:`bot.console.openapi`).
- ``GET /console/api/conversations/{key}/customer``: the CRM panel, :mod:`bot.console.customer`.
- ``GET /console/api/queue`` → ``{"conversations": [...]}`` (queued first, longest wait first).
- ``GET /console/api/conversations/{key}/messages?after=SEQ`` → ``{"conversation",
  "messages"}`` (internal notes included).
- ``POST /console/api/conversations/{key}/claim`` → ``{"conversation"}``;
  ``.../reply`` and ``.../note`` ``{"text"}`` → ``{"message"}``;
  ``.../resolve`` ``{"close"?: bool}`` → ``{"conversation"}``.
- ``GET /console/api/health`` → ``{"redis": "up"|"down"|null, "since": ISO 8601|null}``: whether
  this process reaches Redis (null: no Redis in this deployment) and since when.
- ``GET /console/api/events``: Server-Sent Events ``ready`` (with the ``health`` fields),
  ``message``, ``mode``, ``backend`` (the ``health`` fields, when Redis reachability changes),
  ``sla`` (a breach: ``kind``, ``policy``, ``due``, ``priority``) and ``presence`` (``agent``,
  ``presence``). An open stream is the agent's console session for presence.
- Teams, presence, capacity, transfer: :mod:`bot.console.assignment`; SLA policies:
  :mod:`bot.console.sla`.
- Plugin packages add their own calls through the ``switchboard.console`` entry point group: a
  ``setup(app, hub)`` callable that adds routes (and signal handlers) to the console
  application before it is mounted, e.g. the knowledge base's ``/console/api/knowledge/...``
  (``knowledge.console``). Their handlers check the session, CSRF and role as these do
  (:func:`bot.console.context.actor`); their docstrings feed the OpenAPI document.

``{key}`` is the session key, percent-encoded (``encodeURIComponent``). Every POST except login
needs the ``X-Switchboard-CSRF`` header; every POST needs a JSON body. Errors are
``{"error": message, "field"?: name}`` with 400, 401, 403, 404, 409, 413 or 429.

The event stream follows the WHATWG HTML "Server-sent events" format: ``event: NAME`` and one
``data: JSON`` line per event, a comment line as heartbeat every 15 seconds, and a ``retry:``
hint. Events are hints: the page re-reads messages by ``seq``, so nothing is lost when it lags.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

import aiohttp_session
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from bot import auth, web_security
from bot.auth import Permission
from bot.console import admin, assignment, customer, desk_routes, privacy_routes, sla
from bot.console.context import (
    HUB_KEY,
    ConsoleHub,
    actor,
    agent_json,
    hub_of,
    json_body,
    text_field,
)
from bot.console.openapi import openapi_json
from bot.console.views import conversation_json, iso, message_json
from bot.envelope import SessionKey
from bot.errors import NotFound, PayloadInvalid, RateLimited, SwitchboardError
from bot.rate_limits import counter_storage
from bot.store.routing_records import Presence

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
"""Seconds between SSE heartbeat comments (keeps proxies from closing the stream)."""

MAX_TEXT_BYTES_DEFAULT = 32 * 1024

EXTENSIONS = "switchboard.console"
"""Entry point group of plugin packages' console routes: ``setup(app, hub)`` callables."""


LIMITER_KEY = web.AppKey("switchboard_console_limiter", auth.LoginLimiter)
EXTENSIONS_KEY: web.AppKey[list[str]] = web.AppKey("switchboard_console_extensions")
"""Names of the ``switchboard.console`` extensions loaded (the page shows only their parts)."""
STREAMS_KEY: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("switchboard_console_streams")

_STATUS = {
    "Unauthorized": 401,
    "CsrfFailed": 403,
    "Forbidden": 403,
    "NotFound": 404,
    "Conflict": 409,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- serialization ------------------------------------------------------------------------------


# --- middleware ---------------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`SwitchboardError` into JSON error answers."""
    try:
        return await handler(request)
    except RateLimited as exc:
        return web.json_response(
            {"error": str(exc)},
            status=429,
            headers={"Retry-After": str(int(exc.retry_after + 0.999))},
        )
    except PayloadInvalid as exc:
        body: dict[str, Any] = {"error": str(exc)}
        if exc.field:
            body["field"] = exc.field
        return web.json_response(body, status=exc.status)
    except SwitchboardError as exc:
        status = next(
            (_STATUS[c.__name__] for c in type(exc).__mro__ if c.__name__ in _STATUS), 500
        )
        if status == 500:
            raise
        return web.json_response({"error": str(exc)}, status=status)


@web.middleware
async def _no_store(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API answers and the page are never cached (CSP and the rest: :mod:`bot.web_security`)."""
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


# --- helpers ------------------------------------------------------------------------------------


def _key(request: web.Request) -> SessionKey:
    # aiohttp percent-decodes path parameters once (the page encodes with encodeURIComponent).
    return SessionKey(request.match_info["session_key"])


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


# --- handlers -----------------------------------------------------------------------------------


async def page(request: web.Request) -> web.StreamResponse:
    """The console page."""
    html = resources.files("bot.console").joinpath("static/index.html").read_text("utf-8")
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def login(request: web.Request) -> web.StreamResponse:
    """Log in: starts a new session; answers the agent and the CSRF token."""
    data = await json_body(request)
    name, password = data.get("name"), data.get("password")
    if not isinstance(name, str) or not name:
        raise PayloadInvalid("name is required", field="name")
    if not isinstance(password, str) or not password:
        raise PayloadInvalid("password is required", field="password")
    limiter = request.app[LIMITER_KEY]
    await limiter.check(name, _address(request))
    try:
        account = await auth.authenticate(hub_of(request).store, name, password)
    except SwitchboardError:
        await limiter.failed(name, _address(request))
        log.warning("console.login_failed", extra={"agent": name, "remote": _address(request)})
        raise
    await limiter.succeeded(name)
    token = await auth.start_session(request, account)
    await hub_of(request).store.audit(account.name, "login", None, {"remote": _address(request)})
    log.info("console.login", extra={"agent": account.name})
    return web.json_response(
        {
            "agent": agent_json(account),
            "permissions": sorted(p.value for p in auth.permissions(account)),
            "csrf": token,
            "extensions": request.app[EXTENSIONS_KEY],
        }
    )


async def logout(request: web.Request) -> web.StreamResponse:
    """Log out (needs the CSRF header)."""
    account = await actor(request, Permission.READ)
    await auth.end_session(request)
    await hub_of(request).handoff.assignment.set_presence(
        account.name, Presence.OFFLINE, actor=account.name
    )
    log.info("console.logout", extra={"agent": account.name})
    return web.Response(status=204)


async def me(request: web.Request) -> web.StreamResponse:
    """The logged-in agent, its permissions, the CSRF token and the agent's capacity."""
    account, session = await auth.session_agent(request, hub_of(request).store)
    return web.json_response(
        {
            "agent": agent_json(account),
            "permissions": sorted(p.value for p in auth.permissions(account)),
            "csrf": session.get("csrf"),
            "capacity": hub_of(request).settings.agent_capacity,
            "extensions": request.app[EXTENSIONS_KEY],
        }
    )


async def queue(request: web.Request) -> web.StreamResponse:
    """Queued conversations (longest waiting first), then human-owned ones."""
    await actor(request, Permission.READ)
    convs = await hub_of(request).handoff.queue()
    return web.json_response({"conversations": [conversation_json(c) for c in convs]})


async def messages(request: web.Request) -> web.StreamResponse:
    """A conversation and its messages after ``?after=SEQ`` (notes included)."""
    await actor(request, Permission.READ)
    hub = hub_of(request)
    key = _key(request)
    try:
        after = int(request.query.get("after", "0"))
        limit = min(500, max(1, int(request.query.get("limit", "500"))))
    except ValueError as exc:
        raise PayloadInvalid("after and limit must be integers", field="after") from exc
    conv = await hub.store.conversation(key)
    if conv is None:
        raise NotFound(f"no conversation {key!r}")
    msgs = await hub.store.messages(key, after_seq=after, limit=limit, include_internal=True)
    return web.json_response(
        {"conversation": conversation_json(conv), "messages": [message_json(m) for m in msgs]}
    )


async def claim(request: web.Request) -> web.StreamResponse:
    """Claim a conversation for the logged-in agent."""
    account = await actor(request, Permission.ACT)
    await json_body(request)
    conv = await hub_of(request).handoff.claim(_key(request), account)
    return web.json_response({"conversation": conversation_json(conv)})


async def reply(request: web.Request) -> web.StreamResponse:
    """Send the agent's reply to the customer."""
    account = await actor(request, Permission.ACT)
    text = text_field(request, await json_body(request))
    msg = await hub_of(request).handoff.reply(_key(request), account, text)
    return web.json_response({"message": message_json(msg)})


async def note(request: web.Request) -> web.StreamResponse:
    """Add an internal note."""
    account = await actor(request, Permission.ACT)
    text = text_field(request, await json_body(request))
    msg = await hub_of(request).handoff.note(_key(request), account, text)
    return web.json_response({"message": message_json(msg)})


async def resolve(request: web.Request) -> web.StreamResponse:
    """Hand the conversation back to the bot, or close it with ``{"close": true}``."""
    account = await actor(request, Permission.ACT)
    data = await json_body(request)
    close = data.get("close", False)
    if not isinstance(close, bool):
        raise PayloadInvalid("close must be a boolean", field="close")
    conv = await hub_of(request).handoff.resolve(_key(request), account, close=close)
    return web.json_response({"conversation": conversation_json(conv)})


def backend_health(hub: ConsoleHub) -> dict[str, Any]:
    """Redis reachability as the hub's event feed sees it: ``{"redis", "since"}``.

    ``redis`` is ``"up"``, ``"down"`` or None when the feed does not use Redis (one process,
    memory lanes); ``since`` is when it last changed (ISO 8601, UTC) or None.
    """
    connected = getattr(hub.events, "connected", None)  # RedisEventBus
    if not isinstance(connected, bool):
        return {"redis": None, "since": None}
    changed_at = getattr(hub.events, "changed_at", None)
    since = iso(changed_at) if isinstance(changed_at, datetime) else None
    return {"redis": "up" if connected else "down", "since": since}


async def health(request: web.Request) -> web.StreamResponse:
    """Redis reachability of this process (see :func:`backend_health`)."""
    await actor(request, Permission.READ)
    return web.json_response(backend_health(hub_of(request)))


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``ready``, then the hub's ``message``, ``mode``, ``backend`` events."""
    account = await actor(request, Permission.READ)
    hub = hub_of(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    task = asyncio.current_task()
    streams = request.app[STREAMS_KEY]
    if task is not None:
        streams.add(task)
    try:
        async with hub.events.subscribe() as sub:
            await response.prepare(request)
            ready = {"agent": account.name, **backend_health(hub)}
            await response.write(b"retry: 2000\n" + _sse("ready", ready))
            seen_at = float("-inf")
            # Presence: the open stream is the console session; it is reported well within
            # presence_timeout_s (and the heartbeat comment goes out at least as often).
            wake_s = min(HEARTBEAT_S, hub.settings.presence_timeout_s / 3)
            while True:
                now = asyncio.get_running_loop().time()
                if now >= seen_at + wake_s:
                    seen_at = now
                    await hub.handoff.assignment.seen([account.name])
                event = await sub.get(wake_s)
                if event is None:
                    await response.write(b": ping\n\n")
                    continue
                if sub.lagged:
                    sub.lagged = False
                    await response.write(_sse("lagged", {}))
                if event.type == "backend":
                    await response.write(_sse("backend", dict(event.data)))
                    continue
                if event.type not in ("message", "mode", "sla", "presence"):
                    continue
                payload = {"session_key": event.session_key, "seq": event.seq, **event.data}
                await response.write(_sse(event.type, payload))
    except ConnectionResetError:
        log.debug("console.events_closed", extra={"agent": account.name})
    finally:
        if task is not None:
            streams.discard(task)
    return response


async def _close_streams(app: web.Application) -> None:
    """On shutdown, end open event streams so the server does not wait for them."""
    streams: set[asyncio.Task[Any]] = app[STREAMS_KEY]
    for task in tuple(streams):
        task.cancel()


# --- mounting -----------------------------------------------------------------------------------


def console_app(hub: ConsoleHub) -> web.Application:
    """The console as an aiohttp sub-application (mount it at ``/console``)."""
    settings = hub.settings
    secure = bool(settings.public_url and settings.public_url.startswith("https://"))
    storage = EncryptedCookieStorage(
        auth.session_key_bytes(settings),
        cookie_name=auth.SESSION_COOKIE,
        max_age=auth.SESSION_MAX_AGE_S,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    app = web.Application(
        middlewares=[
            _no_store,
            _errors,
            aiohttp_session.session_middleware(storage),
            web_security.csrf_middleware(settings),
        ]
    )
    app[HUB_KEY] = hub
    app[LIMITER_KEY] = auth.LoginLimiter(storage=counter_storage(hub.settings))
    app[STREAMS_KEY] = set()
    app.on_shutdown.append(_close_streams)
    static = resources.files("bot.console").joinpath("static")
    app.add_routes(
        [
            web.get("/", page),
            web.static("/static", str(static), append_version=False),
            web.post("/api/login", login),
            web.post("/api/logout", logout),
            web.get("/api/me", me),
            web.get("/api/queue", queue),
            web.get("/api/events", events),
            web.get("/api/health", health),
            web.get("/api/openapi.json", openapi_json),
            desk_routes.COPILOT_ROUTE,
            web.get("/api/conversations/{session_key:.+}/messages", messages),
            web.post("/api/conversations/{session_key:.+}/claim", claim),
            web.post("/api/conversations/{session_key:.+}/reply", reply),
            web.post("/api/conversations/{session_key:.+}/note", note),
            web.post("/api/conversations/{session_key:.+}/resolve", resolve),
            *admin.ROUTES,
            *assignment.ROUTES,
            *sla.ROUTES,
            *desk_routes.ROUTES,
            *privacy_routes.ROUTES,
            *customer.ROUTES,
        ]
    )
    loaded: list[str] = []
    for extension in entry_points(group=EXTENSIONS):
        # Before the console is mounted: aiohttp freezes a mounted application's routes.
        extension.load()(app, hub)
        loaded.append(extension.name)
    app[EXTENSIONS_KEY] = sorted(loaded)
    return app


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def setup_console(app: web.Application, hub: ConsoleHub) -> None:
    """Mount the console at ``/console`` on the server's application.

    Call once while building the application (before it starts). Adds a sub-application with
    its own cookie-session, error and CSRF middlewares, a redirect from ``/console`` to
    ``/console/``, and the security headers (:mod:`bot.web_security`) on ``app``.
    """
    web_security.install_security_headers(app, hub.settings)
    app.router.add_get("/console", _to_console)
    app.add_subapp("/console", console_app(hub))
