"""The web surface's browser defences: security headers, cookie flags and console CSRF checks.

Three pieces, installed by :func:`bot.server.make_app` and :mod:`bot.console`:

- :func:`install_security_headers`: an ``on_response_prepare`` hook, so it reaches every
  answer of the application and its sub-applications, streamed ones (SSE, WebSocket) and
  errors included. It sets ``Content-Security-Policy`` (W3C CSP Level 3; no ``'unsafe-inline'``
  anywhere, ``frame-ancestors 'none'`` except on the web chat's embed page, whose allowed
  origins are ``webchat_frame_ancestors``), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy``, a minimal ``Permissions-Policy``, and ``Strict-Transport-Security``
  (RFC 6797) on HTTPS answers.
- :func:`cookie_flags_middleware`: every cookie the hub sets gets ``HttpOnly``,
  ``SameSite=Lax`` unless stricter, and ``Secure`` over HTTPS.
- :func:`csrf_middleware`: inside the console's sub-application (after its session
  middleware), every state-changing request (POST, PUT, PATCH, DELETE) under ``/console``
  whose ``Sec-Fetch-Site`` (W3C Fetch Metadata) is not ``same-origin``/``none``, or whose
  ``Origin`` (RFC 6454) is not the hub's own, answers 403 before any handler runs; and it
  needs the session's synchronizer token in ``X-Switchboard-CSRF``
  (:func:`bot.auth.check_csrf`), login excepted (there is no session yet; the origin check
  still applies).

"Over HTTPS" means: the connection itself is TLS, or ``public_url`` starts with ``https://``
(the hub sits behind a TLS-terminating proxy), or the peer is one of ``trusted_proxies`` and
sent ``X-Forwarded-Proto: https``. The API (``/api/v1/*``, Bearer keys) sends no cookies and
is not subject to the CSRF checks.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import aiohttp_session
from aiohttp import web

from bot import auth
from bot.config import Settings
from bot.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONSOLE_PREFIX = "/console"
LOGIN_PATH = "/console/api/login"
WEBCHAT_PAGES = frozenset({"/"})
"""The web chat's embed page (the demo page), which customers' sites may frame."""

PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
_DOCS_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data: https:; "
    "base-uri 'none'; form-action 'none'"
)
_INSTALLED_KEY = web.AppKey("switchboard_security_headers", bool)
_API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'"


def trusted_networks(settings: Settings) -> tuple[Network, ...]:
    """``settings.trusted_proxies`` parsed (IP addresses are /32 or /128 networks).

    Raises:
        ValueError: an entry is neither an IP address nor a CIDR network.
    """
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in settings.trusted_proxies)


def is_https(request: web.Request, settings: Settings, trusted: Sequence[Network]) -> bool:
    """Whether the browser reached the hub over HTTPS (see the module docstring)."""
    if request.secure:
        return True
    if settings.public_url and settings.public_url.lower().startswith("https://"):
        return True
    proto = request.headers.get("X-Forwarded-Proto", "")
    if not proto or not trusted or request.remote is None:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    first = proto.split(",")[0].strip().lower()  # the client-facing hop comes first
    return first == "https" and any(peer in net for net in trusted)


def content_security_policy(path: str, settings: Settings) -> str:
    """The CSP of the answer at ``path`` (one header value).

    Console, docs and API forbid framing; the web chat's embed page may be framed by
    ``webchat_frame_ancestors`` (``'self'`` when empty).
    """
    if path in WEBCHAT_PAGES:
        origins = " ".join(settings.webchat_frame_ancestors) or "'self'"
        return f"{_PAGE_CSP}; frame-ancestors {origins}"
    if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
        return f"{_PAGE_CSP}; frame-ancestors 'none'"
    if path.startswith("/docs/"):
        return f"{_DOCS_CSP}; frame-ancestors 'none'"
    return f"{_API_CSP}; frame-ancestors 'none'"


def install_security_headers(app: web.Application, settings: Settings) -> None:
    """Add the security headers and cookie flags to every answer of ``app`` (and sub-apps).

    Idempotent: the server and the console both call it on the server's application.

    Raises:
        ValueError: ``trusted_proxies`` holds something that is not an IP address or network.
    """
    if app.get(_INSTALLED_KEY):
        return
    app[_INSTALLED_KEY] = True
    trusted = trusted_networks(settings)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        https = is_https(request, settings, trusted)
        headers = response.headers
        csp = content_security_policy(request.path, settings)
        headers["Content-Security-Policy"] = csp
        if csp.endswith("frame-ancestors 'none'"):
            headers["X-Frame-Options"] = "DENY"  # the same rule for browsers before CSP 2
        else:
            headers.pop("X-Frame-Options", None)  # frame-ancestors decides
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Permissions-Policy"] = PERMISSIONS_POLICY
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        if https and settings.hsts_max_age_s > 0:
            headers["Strict-Transport-Security"] = f"max-age={settings.hsts_max_age_s}"

    app.on_response_prepare.append(on_prepare)


def cookie_flags_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Flag every cookie an answer sets (RFC 6265bis §4.1.2).

    ``HttpOnly`` always, ``SameSite=Lax`` unless already ``Strict``/``Lax``, ``Secure`` over
    HTTPS.

    A middleware rather than a prepare hook: aiohttp serializes cookies before the hook runs.
    Answers prepared inside the handler (streams) set no cookies.
    """
    trusted = trusted_networks(settings)

    @web.middleware
    async def cookie_flags(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if response.prepared or not response.cookies:
            return response
        https = is_https(request, settings, trusted)
        for morsel in response.cookies.values():
            morsel["httponly"] = True
            if str(morsel["samesite"]).lower() not in ("strict", "lax"):
                morsel["samesite"] = "Lax"
            if https:
                morsel["secure"] = True
        return response

    return cookie_flags


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_same_origin(
    request: web.Request, settings: Settings, trusted: Sequence[Network]
) -> None:
    """Refuse a cross-site request (W3C Fetch Metadata, RFC 6454 ``Origin``).

    Allowed: ``Sec-Fetch-Site`` absent, ``same-origin`` or ``none``; ``Origin`` absent or equal
    to ``{scheme}://{Host}`` of the request, or to the origin of ``public_url``. Non-browser
    clients send neither header; they still need the session's CSRF token.

    Raises:
        Forbidden: the request comes from another site (HTTP 403).
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        log.warning("http.cross_site_refused", extra={"path": request.path, "site": site})
        raise Forbidden("cross-site request refused")
    origin = request.headers.get("Origin")
    if origin is None:
        return
    scheme = "https" if is_https(request, settings, trusted) else "http"
    allowed = {f"{scheme}://{request.host}".lower()}
    if settings.public_url:
        allowed.add(_origin(settings.public_url))
    if origin.lower() not in allowed:
        log.warning("http.cross_origin_refused", extra={"path": request.path})
        raise Forbidden("cross-origin request refused")


def csrf_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The console's CSRF defence, for its sub-application (after the session middleware).

    Every state-changing request (POST, PUT, PATCH, DELETE) must be same-origin
    (:func:`check_same_origin`) and, except login, carry the session's synchronizer token in
    ``X-Switchboard-CSRF`` (:func:`bot.auth.check_csrf`).

    Raises:
        Forbidden: cross-site request (403).
        Unauthorized: no logged-in session (401).
        auth.CsrfFailed: the token is missing or wrong (403).
    """
    trusted = trusted_networks(settings)

    @web.middleware
    async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in UNSAFE_METHODS:
            check_same_origin(request, settings, trusted)
            if request.path != LOGIN_PATH:
                session = await aiohttp_session.get_session(request)
                if "csrf" not in session:
                    raise Unauthorized("log in first")
                auth.check_csrf(request, session)
        return await handler(request)

    return csrf


__all__ = [
    "check_same_origin",
    "content_security_policy",
    "cookie_flags_middleware",
    "csrf_middleware",
    "install_security_headers",
    "is_https",
    "trusted_networks",
]
