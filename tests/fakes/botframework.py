"""A fake Bot Framework for tests: OpenID metadata + JWKS, token endpoint, Bot Connector.

One aiohttp server on 127.0.0.1, port 0, serving what a Teams bot talks to:

- ``GET /{nonce}/v1/.well-known/openidconfiguration`` → OpenID metadata whose ``jwks_uri`` is
  ``GET /{nonce}/v1/.well-known/keys`` (RSA keys with ``endorsements``), as
  ``login.botframework.com`` serves them. The nonce makes the URL unique per fake, because
  botframework-connector caches metadata per URL for a day, process-wide.
- ``POST /{tenant}/oauth2/v2.0/token``: client credentials grant (RFC 6749 §4.4); checks
  ``client_id``/``client_secret``/``scope`` and issues opaque bearer tokens.
- ``POST /teams/v3/conversations/{conversationId}/activities[/{activityId}]``: the Bot
  Connector's "Send to conversation" and "Reply to activity" (Bot Connector REST API
  reference); requires a token it issued; records every activity; answers ``{"id": ...}``.
  Scripted failures (``fail_next``) answer e.g. 429 with ``Retry-After``.

:meth:`FakeBotFramework.channel_token` signs inbound tokens as the Bot Framework would
(``iss`` ``https://api.botframework.com``, ``aud`` = app id, ``serviceurl``), with knobs to
forge, expire, or mis-address them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://api.botframework.com"
SCOPE = "https://api.botframework.com/.default"


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key per name (generated once per test session)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True, slots=True)
class Posted:
    """One activity the bot posted to the fake Bot Connector.

    Attributes:
        conversation_id: from the URL (decoded).
        reply_to: the ``{activityId}`` of "Reply to activity", None for "Send to conversation".
        body: the activity JSON.
        authorization: the request's Authorization header.
    """

    conversation_id: str
    reply_to: str | None
    body: dict[str, Any]
    authorization: str

    @property
    def type(self) -> str:
        return str(self.body.get("type"))


@dataclass(slots=True)
class _Failure:
    status: int
    headers: dict[str, str]
    times: int


@dataclass(slots=True)
class FakeBotFramework:
    """The fake (an async context manager).

    Attributes:
        app_id, app_password: the bot's credentials the token endpoint accepts.
        endorsements: channel ids the signing key is endorsed for.
        posted: activities received by the Bot Connector, in order.
        token_requests: form fields of every token request.
        metadata_fetches: how many times the OpenID metadata was read.
    """

    app_id: str = "00000000-0000-0000-0000-0000000000a1"
    app_password: str = "test-app-secret"
    endorsements: Sequence[str] = ("msteams",)
    posted: list[Posted] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    metadata_fetches: int = 0
    kid: str = field(default_factory=lambda: f"kid-{uuid.uuid4().hex[:8]}")
    _nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    _issued: set[str] = field(default_factory=set)
    _failures: deque[_Failure] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _port: int = 0
    _changed: asyncio.Condition | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/{nonce}/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/{nonce}/v1/.well-known/keys", self._keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        base = "/teams/v3/conversations/{conversation_id}/activities"
        app.router.add_post(base, self._activity)
        app.router.add_post(base + "/{activity_id}", self._activity)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._changed = asyncio.Condition()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- addresses ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def openid_url(self) -> str:
        """Value of ``SWITCHBOARD_TEAMS_OPENID_METADATA_URL``."""
        return f"{self.base_url}/{self._nonce}/v1/.well-known/openidconfiguration"

    @property
    def login_url(self) -> str:
        """Authority of the bot's token (``{login_url}/oauth2/v2.0/token``)."""
        return f"{self.base_url}/botframework.com"

    @property
    def service_url(self) -> str:
        """The ``serviceUrl`` of activities (Teams': ``https://smba.trafficmanager.net/.../``)."""
        return f"{self.base_url}/teams/"

    # --- tokens -------------------------------------------------------------------------------
    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """A JWT of ``claims`` signed with the fake's key (or ``key``); ``algorithm="none"``
        makes an unsigned token."""
        headers = {"kid": kid or self.kid, "typ": "JWT"}
        if algorithm == "none":
            return jwt.encode(claims, "", algorithm="none", headers=headers)
        return jwt.encode(
            claims, key or rsa_key("bot-framework"), algorithm=algorithm, headers=headers
        )

    def channel_token(
        self,
        *,
        service_url: str | None = None,
        audience: str | None = None,
        issuer: str = ISSUER,
        expires_in_s: float = 3600.0,
        key: rsa.RSAPrivateKey | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """A Bot Framework channel token as the Bot Connector sends it to the bot."""
        now = int(time.time())
        claims = {
            "serviceurl": service_url or self.service_url,
            "nbf": now - 60,
            "exp": int(now + expires_in_s),
            "iss": issuer,
            "aud": audience or self.app_id,
        }
        return self.sign(claims, key=key, algorithm=algorithm)

    # --- scripting ----------------------------------------------------------------------------
    def fail_next(
        self, status: int, *, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` Bot Connector posts with ``status`` (not recorded)."""
        self._failures.append(_Failure(status, dict(headers or {}), times))

    async def wait_for(
        self, predicate: Callable[[Posted], bool], *, after: int = 0, timeout_s: float = 5.0
    ) -> tuple[int, Posted]:
        """The first posted activity at index >= ``after`` that matches, and its index.

        Raises:
            TimeoutError: none arrived within ``timeout_s`` seconds.
        """
        assert self._changed is not None

        def find() -> tuple[int, Posted] | None:
            for i in range(after, len(self.posted)):
                if predicate(self.posted[i]):
                    return i, self.posted[i]
            return None

        async with self._changed:
            found = find()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while found is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError("no matching activity reached the Bot Connector")
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    raise TimeoutError("no matching activity reached the Bot Connector") from None
                found = find()
            return found

    # --- handlers -----------------------------------------------------------------------------
    async def _metadata(self, request: web.Request) -> web.Response:
        if request.match_info["nonce"] != self._nonce:
            raise web.HTTPNotFound()
        self.metadata_fetches += 1
        base = f"{self.base_url}/{self._nonce}/v1"
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{base}/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        if request.match_info["nonce"] != self._nonce:
            raise web.HTTPNotFound()
        jwk = RSAAlgorithm.to_jwk(rsa_key("bot-framework").public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "endorsements": list(self.endorsements)})
        return web.json_response({"keys": [jwk]})

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.app_id
            or form.get("client_secret") != self.app_password
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("scope") != SCOPE:
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = f"bot-token-{next(self._ids)}"
        self._issued.add(token)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }
        )

    async def _activity(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or token not in self._issued:
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        if self._failures:
            failure = self._failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self._failures.popleft()
            return web.json_response(
                {"error": {"code": "Throttled", "message": "slow down"}},
                status=failure.status,
                headers=failure.headers,
            )
        body = await request.json()
        posted = Posted(
            conversation_id=request.match_info["conversation_id"],
            reply_to=request.match_info.get("activity_id"),
            body=body,
            authorization=auth,
        )
        assert self._changed is not None
        async with self._changed:
            self.posted.append(posted)
            self._changed.notify_all()
        return web.json_response({"id": f"bot-activity-{next(self._ids)}"})
