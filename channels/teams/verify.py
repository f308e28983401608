"""Bot Framework authentication of inbound activities (botframework-connector's validation).

Spec: "Authenticate requests from the Bot Connector service to your bot"
(https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication).
A request is accepted only when its ``Authorization: Bearer JWT``:

1. is issued by the Bot Framework (``iss`` = ``https://api.botframework.com``); Emulator and
   skill tokens (Entra ID issuers) are refused before any key is fetched;
2. is signed (RS256/384/512) by a key of the JWKS named by the OpenID metadata document
   (``SWITCHBOARD_TEAMS_OPENID_METADATA_URL``, default Bot Framework's), whose
   ``endorsements`` include the activity's ``channelId``;
3. is within its validity period (5 minutes of clock skew);
4. has ``aud`` = our app id (``SWITCHBOARD_TEAMS_APP_ID``);
5. has a ``serviceurl`` claim equal to the activity's ``serviceUrl``.

Steps 2-5 are botframework-connector's own checks (``ConfigurationBotFrameworkAuthentication``
in its parameterized form, which takes the metadata URL). The SDK fetches the metadata with
blocking ``requests`` calls without a timeout, and raises bare ``Exception``, ``IndexError`` or
PyJWT errors next to ``PermissionError``; :class:`BotFrameworkVerifier` therefore runs it on a
worker thread under a timeout and maps every rejection to :class:`~bot.errors.SignatureInvalid`
(401) and an unreachable metadata endpoint to :class:`~bot.errors.BackendUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from botbuilder.integration.aiohttp import (  # type: ignore[import-untyped]
    ConfigurationBotFrameworkAuthentication,
)
from botbuilder.schema import Activity  # type: ignore[import-untyped]
from botframework.connector.auth import (  # type: ignore[import-untyped]
    AuthenticateRequestResult,
    AuthenticationConstants,
    ServiceClientCredentialsFactory,
)

from bot.errors import BackendUnavailable, SignatureInvalid

logger = logging.getLogger(__name__)

BOT_FRAMEWORK_ISSUER: str = AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
"""``https://api.botframework.com``: the only issuer accepted."""
DEFAULT_OPENID_METADATA_URL: str = AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL
"""``https://login.botframework.com/v1/.well-known/openidconfiguration``."""
BOT_CONNECTOR_SCOPE: str = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
"""``https://api.botframework.com``: audience of the bot's outbound token."""
LOGIN_URL_PREFIX = "https://login.microsoftonline.com/"
MULTI_TENANT_AUTHORITY = "botframework.com"
AUTH_TIMEOUT_S = 10.0


def default_login_url(tenant_id: str | None) -> str:
    """The authority of the bot's outbound token.

    ``https://login.microsoftonline.com/{tenant}`` for a single-tenant app, else
    ``https://login.microsoftonline.com/botframework.com`` (multi-tenant).
    """
    return LOGIN_URL_PREFIX + (tenant_id or MULTI_TENANT_AUTHORITY)


@dataclass(frozen=True, slots=True)
class SdkConfiguration:
    """The configuration object ``ConfigurationBotFrameworkAuthentication`` reads (by name)."""

    APP_ID: str
    APP_PASSWORD: str
    APP_TYPE: str
    APP_TENANTID: str | None
    TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL: str
    TO_BOT_FROM_CHANNEL_TOKEN_ISSUER: str
    TO_CHANNEL_FROM_BOT_LOGIN_URL: str
    TO_CHANNEL_FROM_BOT_OAUTH_SCOPE: str
    TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL: str
    OAUTH_URL: str
    VALIDATE_AUTHORITY: bool = True


def build_authentication(
    config: SdkConfiguration, credentials: ServiceClientCredentialsFactory
) -> Any:
    """The SDK's ``BotFrameworkAuthentication`` (parameterized: it honours the metadata URL).

    Args:
        config: app id, password and endpoints.
        credentials: the factory of outbound credentials (see :mod:`channels.teams.credentials`).
    """
    return ConfigurationBotFrameworkAuthentication(config, credentials_factory=credentials)


def bearer_token(auth_header: str) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header.

    Raises:
        SignatureInvalid: no header, another scheme, or an empty token.
    """
    scheme, _, token = auth_header.strip().partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise SignatureInvalid("a Bot Framework bearer token is required")
    return token.strip()


class BotFrameworkVerifier:
    """Authenticates inbound activities with the SDK, off the event loop.

    Args:
        authentication: from :func:`build_authentication`.
        timeout_s: seconds allowed for one check (including a metadata/JWKS fetch).
    """

    def __init__(self, authentication: Any, *, timeout_s: float = AUTH_TIMEOUT_S) -> None:
        self.authentication = authentication
        self.timeout_s = timeout_s

    async def authenticate(self, activity: Activity, auth_header: str) -> Any:
        """Verify the request's token for ``activity``.

        Returns:
            The SDK's ``AuthenticateRequestResult`` (claims, connector factory, audience).

        Raises:
            SignatureInvalid: the token is missing, malformed, unsigned, forged, expired, for
                another audience or issuer, or its ``serviceurl`` differs (HTTP 401).
            BackendUnavailable: the OpenID metadata or JWKS could not be fetched in time (503).
        """
        token = bearer_token(auth_header)
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise SignatureInvalid(f"malformed token: {exc}") from None
        if unverified.get("iss") != BOT_FRAMEWORK_ISSUER:
            raise SignatureInvalid("the token is not issued by the Bot Framework")
        header = f"Bearer {token}"
        try:
            result: AuthenticateRequestResult = await asyncio.wait_for(
                asyncio.to_thread(
                    asyncio.run, self.authentication.authenticate_request(activity, header)
                ),
                self.timeout_s,
            )
        except TimeoutError:
            raise BackendUnavailable("Bot Framework OpenID metadata timed out") from None
        except requests.RequestException as exc:
            logger.warning("teams.openid_unavailable", extra={"channel": "teams"}, exc_info=True)
            raise BackendUnavailable(f"Bot Framework OpenID metadata unavailable: {exc}") from None
        except LookupError:  # the SDK indexes the JWKS by kid
            raise SignatureInvalid("token rejected: signed by an unknown key") from None
        except (PermissionError, jwt.PyJWTError, ValueError, TypeError) as exc:
            raise SignatureInvalid(f"token rejected: {exc or type(exc).__name__}") from None
        except Exception as exc:
            if type(exc) is Exception:  # the SDK raises bare Exception for alg/endorsements
                raise SignatureInvalid(f"token rejected: {exc}") from None
            raise
        return result
