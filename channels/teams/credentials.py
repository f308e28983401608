"""The bot's outbound token for the Bot Connector, plugged into botframework-connector.

Spec: "Authenticate requests from your bot to the Bot Connector service", step 1
(https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication):
an OAuth 2.0 client credentials grant (RFC 6749 §4.4) ``POST {login url}/oauth2/v2.0/token``
with ``grant_type=client_credentials``, ``client_id``, ``client_secret`` and
``scope=https://api.botframework.com/.default``; the answer's ``access_token`` is sent as
``Authorization: Bearer`` to the Bot Connector for ``expires_in`` seconds.

Why not the SDK's own ``MicrosoftAppCredentials``: it asks MSAL for the token synchronously
inside msrest's request signing, on the event loop, and MSAL accepts only an ``https``
authority and first calls Microsoft's instance discovery, so it can be pointed neither at a
non-blocking client nor at a loopback test server. :class:`TokenSource` fetches the token with
aiohttp before a send; :class:`TokenCredentialsFactory` is the SDK's documented extension point
(``ServiceClientCredentialsFactory``) and hands the cached token to the SDK's connector client.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from botframework.connector.auth import (  # type: ignore[import-untyped]
    AppCredentials,
    ServiceClientCredentialsFactory,
)
from pydantic import SecretStr

from bot.errors import ChannelUnavailable, ConfigError

REFRESH_MARGIN_S = 300.0
"""Renew a token this many seconds before it expires."""
TOKEN_TIMEOUT_S = 10.0


def token_url(login_url: str) -> str:
    """``{login_url}/oauth2/v2.0/token`` (Microsoft identity platform v2 token endpoint)."""
    return login_url.rstrip("/") + "/oauth2/v2.0/token"


def default_scope(scope: str) -> str:
    """``{resource}/.default``: the client credentials scope of a resource."""
    return scope if scope.endswith("/.default") else scope.rstrip("/") + "/.default"


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic() seconds


class TokenSource:
    """Client credentials tokens, cached per ``(login url, scope)`` until shortly before expiry.

    Args:
        app_id: the bot's Microsoft app id (``client_id``).
        password: its client secret.
        session: the aiohttp session used for token requests (owned by the caller).
        timeout_s: seconds allowed for one token request.
    """

    def __init__(
        self,
        *,
        app_id: str,
        password: SecretStr,
        session: aiohttp.ClientSession,
        timeout_s: float = TOKEN_TIMEOUT_S,
    ) -> None:
        self.app_id = app_id
        self._password = password
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def cached(self, login_url: str, scope: str) -> str | None:
        """The cached, still valid token (no I/O), or None."""
        tok = self._tokens.get((login_url, default_scope(scope)))
        if tok is None or tok.expires_at - REFRESH_MARGIN_S <= time.monotonic():
            return None
        return tok.value

    async def token(self, login_url: str, scope: str) -> str:
        """A valid token, requested when none is cached.

        Raises:
            ChannelUnavailable: the login service is unreachable or failed (5xx, timeout).
            ConfigError: it refused the app id or secret (4xx).
        """
        key = (login_url, default_scope(scope))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            value = self.cached(*key)
            if value is not None:
                return value
            form = {
                "grant_type": "client_credentials",
                "client_id": self.app_id,
                "client_secret": self._password.get_secret_value(),
                "scope": key[1],
            }
            try:
                async with self._session.post(
                    token_url(login_url), data=form, timeout=self._timeout
                ) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise ChannelUnavailable(f"token request failed: {exc!r}") from exc
            if status >= 500 or status == 429:
                raise ChannelUnavailable(f"token endpoint answered {status}")
            if status != 200 or not isinstance(body, dict) or "access_token" not in body:
                error = body.get("error") if isinstance(body, dict) else None
                raise ConfigError(f"token request refused ({status}, {error}): check the app id")
            lifetime = float(body.get("expires_in") or 3600)
            self._tokens[key] = _Token(str(body["access_token"]), time.monotonic() + lifetime)
            return str(body["access_token"])


class CachedTokenCredentials(AppCredentials):  # type: ignore[misc]
    """msrest credentials that sign connector requests with a token from a :class:`TokenSource`.

    ``get_access_token`` does no I/O: the channel awaits :meth:`TokenSource.token` before it
    sends, so the token is cached when the SDK signs the request.
    """

    def __init__(self, app_id: str, source: TokenSource, login_url: str, scope: str) -> None:
        super().__init__(app_id=app_id, oauth_scope=scope)
        self._source = source
        self._login_url = login_url
        self._scope = scope

    def get_access_token(self, force_refresh: bool = False) -> str:
        """The cached token.

        Raises:
            PermissionError: none is cached (the channel did not fetch one first).
        """
        value = self._source.cached(self._login_url, self._scope)
        if value is None:
            raise PermissionError("no Bot Connector token is cached")
        return value


class TokenCredentialsFactory(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """The SDK's credentials factory for one app id, backed by a :class:`TokenSource`."""

    def __init__(self, source: TokenSource, login_url: str) -> None:
        self.source = source
        self.login_url = login_url

    async def is_valid_app_id(self, app_id: str) -> bool:
        """True for our app id (the ``aud`` an inbound token must carry)."""
        return bool(app_id) and app_id == self.source.app_id

    async def is_authentication_disabled(self) -> bool:
        """Never: an app id is always configured."""
        return False

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> CachedTokenCredentials:
        """Credentials for the connector client (login endpoint from the SDK configuration).

        Raises:
            PermissionError: for another app id.
        """
        if not await self.is_valid_app_id(app_id):
            raise PermissionError("invalid app id")
        return CachedTokenCredentials(
            app_id, self.source, login_endpoint or self.login_url, oauth_scope
        )
