"""The HTTP server (aiohttp): health, metrics, every channel's routes and the console.

Routes of the server itself:

- ``GET /healthz``: 200 while the process runs (liveness).
- ``GET /readyz``: 200 when the hub is started and the store (and Redis, with shared lanes)
  answers; 503 otherwise.
- ``GET /metrics``: Prometheus text exposition (lane gauges are sampled at scrape time).

Channels add theirs (``/api/v1/...`` for REST with its OpenAPI document, ``/webchat/...`` and the
demo page ``/``); the console adds ``/console`` when :mod:`bot.console` is installed.

Middlewares, outermost first: a structured access log (``http.request``), JSON error answers for
:mod:`bot.errors` and aiohttp's HTTP errors, cookie flags (:mod:`bot.web_security`: HttpOnly,
SameSite, Secure over HTTPS), the request body cap (``max_body_bytes``, 413), and
API-key authentication of ``/api/v1/*`` (``Authorization: Bearer KEY``, RFC 6750) when keys are
configured. Without keys, :func:`run_server` binds to loopback only. Every answer carries the
security headers of :func:`bot.web_security.install_security_headers` (CSP, nosniff, HSTS over
HTTPS...).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bot.envelope import SessionKey
from bot.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    Draining,
    Forbidden,
    NotFound,
    PayloadInvalid,
    PayloadTooLarge,
    RateLimited,
    SignatureInvalid,
    SwitchboardError,
    Unauthorized,
)
from bot.payload import OWN_BODY_LIMIT
from bot.web_security import cookie_flags_middleware, install_security_headers

if TYPE_CHECKING:
    from bot.hub import Hub

logger = logging.getLogger(__name__)

HUB_KEY: web.AppKey[Hub] = web.AppKey("switchboard.hub")
"""Where the application keeps its hub (``request.app[HUB_KEY]``)."""

AUTHENTICATED: web.RequestKey[int] = web.RequestKey("switchboard.authenticated", int)
"""Request key set to the matching API key's index once ``Authorization`` verified (channels
read it to mark the sender as verified)."""

API_PREFIX = "/api/v1/"
PUBLIC_API_PATHS = frozenset({"/api/v1/openapi.json"})
ADMIN_API_PREFIX = "/api/v1/admin/"
"""Routes that check admin keys and body sizes themselves (:mod:`knowledge.http`)."""
RETRY_AFTER_S = 5
READY_PROBE_TIMEOUT_S = 2.0
CONNECTION_CLOSE_TIMEOUT_S = 5.0
"""Seconds open requests (long polls) get to finish once the hub has drained."""
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- errors --------------------------------------------------------------------------------------
def _error(
    status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status, headers=headers)


def error_response(exc: SwitchboardError) -> web.Response | None:
    """The JSON answer of a Switchboard error, or None when it has no HTTP meaning.

    ``{"error": message, "field"?: path}`` with: PayloadInvalid → its ``status`` (400/413);
    Unauthorized, SignatureInvalid → 401; Forbidden → 403; NotFound → 404; Conflict → 409;
    RateLimited → 429; Draining, BackendUnavailable → 503. 429 and 503 carry ``Retry-After``
    (seconds, RFC 9110 §10.2.3).
    """
    if isinstance(exc, PayloadInvalid):
        return _error(exc.status, str(exc), field=exc.field)
    if isinstance(exc, Unauthorized | SignatureInvalid):
        return _error(401, str(exc) or "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, Forbidden):
        return _error(403, str(exc) or "forbidden")
    if isinstance(exc, NotFound):
        return _error(404, str(exc) or "not found")
    if isinstance(exc, Conflict):
        return _error(409, str(exc) or "conflict")
    if isinstance(exc, RateLimited):
        retry = str(max(1, round(exc.retry_after)))
        return _error(429, str(exc), headers={"Retry-After": retry})
    if isinstance(exc, Draining | BackendUnavailable):
        return _error(
            503,
            str(exc) or "service unavailable",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer errors as JSON.

    Covers :mod:`bot.errors`, aiohttp's HTTP errors (404, 405, 413...) and, as the request
    task's boundary, anything unexpected (500, logged with its traceback).
    """
    try:
        return await handler(request)
    except SwitchboardError as exc:
        answer = error_response(exc)
        if answer is None:
            logger.exception("http.unhandled_error", extra={"path": request.path})
            return _error(500, "internal error")
        return answer
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = (
            exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _ENTITY_HEADERS}
        return _error(exc.status, message or exc.reason, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        logger.exception("http.unhandled_error", extra={"path": request.path})
        return _error(500, "internal error")


_ENTITY_HEADERS = frozenset({"content-type", "content-length"})


def body_limit_middleware(max_body_bytes: int) -> Any:
    """Reject a declared body over ``max_body_bytes`` before reading it (413).

    Chunked bodies are bounded by the application's ``client_max_size`` as they are read.
    ``/api/v1/admin/`` and handlers marked with :func:`bot.payload.bounds_own_body` (uploads,
    also in the console's sub-application) bound their bodies themselves.
    """

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if request.path.startswith(ADMIN_API_PREFIX) or getattr(
            request.match_info.handler, OWN_BODY_LIMIT, False
        ):
            return await handler(request)  # uploads: their handlers bound them
        if length is not None and length > max_body_bytes:
            raise PayloadTooLarge(
                f"request body is {length} bytes; the limit is {max_body_bytes}",
                limit_bytes=max_body_bytes,
            )
        return await handler(request)

    return body_limit


def auth_middleware(keys: list[bytes]) -> Any:
    """Require ``Authorization: Bearer KEY`` on ``/api/v1/*`` (except the OpenAPI document).

    Every configured key is compared in constant time (``hmac.compare_digest``), all of them on
    every request, so timing reveals neither a key nor which key matched.
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if (
            keys
            and path.startswith(API_PREFIX)
            and path not in PUBLIC_API_PATHS
            and not path.startswith(ADMIN_API_PREFIX)
        ):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            presented = token.strip().encode()
            matched: int | None = None
            for i, key in enumerate(keys):
                if hmac.compare_digest(presented, key) and matched is None:
                    matched = i
            if scheme.lower() != "bearer" or not presented or matched is None:
                raise Unauthorized("a valid API key is required (Authorization: Bearer KEY)")
            request[AUTHENTICATED] = matched
        return await handler(request)

    return authenticate


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log each request as one ``http.request`` event (method, path, status, duration)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        status = exc.status
        raise
    else:
        status = response.status
        return response
    finally:
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        logger.log(
            level,
            "http.request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "remote": request.remote,
            },
        )


# --- handlers ------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the hub is started (not draining) and the store answers a read.

    With shared lanes the body also says whether Redis answers (``"redis": "up"|"down"``), but
    a Redis outage does not make the process unready: every ingress would leave the load
    balancer at once and the console, which shows the outage to agents and still serves
    their work, would be unreachable. Message intake answers 503 by itself meanwhile.
    """
    hub = request.app[HUB_KEY]
    if not hub.ready:
        return _error(503, "not ready", headers={"Retry-After": str(RETRY_AFTER_S)})
    try:
        async with asyncio.timeout(READY_PROBE_TIMEOUT_S):
            await hub.store.conversation(SessionKey("readyz:probe:probe"))
    except Exception as exc:  # a probe: any failure means not ready
        logger.warning("http.store_unreachable", extra={"error": repr(exc)})
        return _error(503, "store unreachable", headers={"Retry-After": str(RETRY_AFTER_S)})
    body = {"status": "ready"}
    ping = getattr(hub.lanes, "ping", None)  # shared lanes: say whether Redis answers
    if ping is not None:
        try:
            async with asyncio.timeout(READY_PROBE_TIMEOUT_S):
                await ping()
            body["redis"] = "up"
        except Exception as exc:  # a probe: any failure means down
            logger.warning("http.redis_unreachable", extra={"error": repr(exc)})
            body["redis"] = "down"
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition; lane gauges are sampled from ``hub.lanes.stats()`` now."""
    hub = request.app[HUB_KEY]
    stats = hub.lanes.stats()
    hub.metrics.lane_depth.set(stats.queued)
    hub.metrics.lanes.set(stats.lanes)
    hub.metrics.active_turns.set(stats.active_turns)
    return web.Response(
        body=hub.metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
    )


def freeze_startup_heap() -> None:
    """Exclude everything alive after start from future cyclic garbage collections.

    A started hub holds millions of long-lived objects (modules, the embedding model, litellm's
    tables, caches). CPython's full (generation 2) collection walks all of them: 250-350 ms
    here, several times a minute under load, each one a pause of every turn and webhook in the
    process (it showed as a p99 of 55-110 ms at 1,000 messages/s in ``switchboard bench``).
    ``gc.freeze()`` moves them to a permanent generation the collector skips; objects created
    later are collected as usual. Call once per process, after the hub started. Process entry
    points only (``serve``, ``worker``, the bench): frozen objects are never reclaimed if they
    later become cyclic garbage, which a test process creating many hubs would accumulate.
    """
    gc.collect()
    gc.freeze()
    logger.info("server.heap_frozen", extra={"objects": gc.get_freeze_count()})


# --- application ---------------------------------------------------------------------------------
def make_app(hub: Hub) -> web.Application:
    """Build the aiohttp application of ``hub`` (not started; the hub is not started either).

    Args:
        hub: the hub whose channels, store and metrics the routes use.

    Returns:
        The application: health, readiness and metrics routes, every channel's ``routes()``,
        the console when :mod:`bot.console` is importable, and the routes of every
        ``switchboard.http`` entry point (a ``setup(app, hub)`` callable).
    """
    settings = hub.settings
    keys = [k.get_secret_value().encode() for k in settings.api_keys]
    app = web.Application(
        middlewares=[
            access_log_middleware,
            error_middleware,
            cookie_flags_middleware(settings),
            body_limit_middleware(settings.max_body_bytes),
            auth_middleware(keys),
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[HUB_KEY] = hub
    install_security_headers(app, settings)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
        ]
    )
    for channel in hub.channels.values():
        app.add_routes(channel.routes())
    _add_console(app, hub)
    for extension in entry_points(group="switchboard.http"):
        # Plugin packages' routes (e.g. knowledge.http's admin API): setup(app, hub).
        extension.load()(app, hub)
    if settings.sample_kb and settings.sample_kb_dir.is_dir():
        from bot.docs_site import docs_routes

        app.add_routes(docs_routes(settings.sample_kb_dir))
    return app


def _add_console(app: web.Application, hub: Hub) -> None:
    """Mount the human agents' console when :mod:`bot.console` exists.

    Uses ``setup_console(app, hub)`` when the module offers it (session middleware and routes),
    else adds ``console_routes(hub)``.
    """
    try:
        import bot.console as console
    except ImportError:
        logger.info("server.no_console")
        return
    setup = getattr(console, "setup_console", None)
    if setup is not None:
        setup(app, hub)
        return
    routes = getattr(console, "console_routes", None)
    if routes is not None:
        app.add_routes(routes(hub))


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (what may be served without API keys)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, api_keys_configured: bool) -> None:
    """Refuse to expose an unauthenticated API beyond this machine.

    The REST channel is always enabled and the admin API (``/api/v1/admin/*``) only exists
    with ``admin_api_keys``, so "no API keys" means an open REST API. ``switchboard serve``
    calls this before anything starts (exit code 2 with the message).

    Raises:
        ConfigError: when no API key is configured and ``host`` is not a loopback address.
    """
    if not api_keys_configured and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r} without API keys: the REST API (/api/v1) would "
            "take messages from anyone who reaches this address. Set SWITCHBOARD_API_KEYS "
            "(or api_keys: in switchboard.yaml) to serve beyond loopback, or use "
            "--host 127.0.0.1"
        )


async def run_server(
    hub: Hub,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Start ``hub``, serve HTTP until SIGTERM/SIGINT (or ``stop``), then drain and return.

    Shutdown order: close the listening socket (no new connections), ``await hub.stop()``
    (running turns finish within ``drain_timeout_s``, queued messages stay stored), then
    close open connections.

    Args:
        hub: a built, not yet started hub.
        host: address to bind (loopback only unless API keys are configured).
        port: TCP port (0 picks a free one).
        stop: an event that also triggers shutdown (tests, embedding).
        on_listening: called with the bound port once the server accepts connections.

    Raises:
        ConfigError: binding beyond loopback without API keys (checked before anything starts).
        OSError: when the address cannot be bound (the hub is stopped again).
    """
    check_bind(host, api_keys_configured=bool(hub.settings.api_keys))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    app = make_app(hub)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=CONNECTION_CLOSE_TIMEOUT_S
    )
    await hub.start()
    freeze_startup_heap()
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = bound_port(runner, port)
        logger.info("server.listening", extra={"host": host, "port": bound})
        if on_listening is not None:
            on_listening(bound)
        await stop.wait()
        logger.info("server.stopping")
        await site.stop()
    finally:
        await hub.stop()
        await runner.cleanup()
        for sig in installed:
            loop.remove_signal_handler(sig)
        logger.info("server.stopped")


def bound_port(runner: web.AppRunner, default: int) -> int:
    """The TCP port ``runner`` listens on (``default`` when it has no TCP address)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default
