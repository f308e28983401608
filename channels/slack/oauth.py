"""Workspaces and their bot tokens: configured tokens and the OAuth install flow.

Two sources, looked up in this order for a workspace (team) id:

1. ``SWITCHBOARD_SLACK_BOT_TOKEN``: one ``xoxb-`` token (a single-workspace app: it answers every
   team), or several as ``T0001=xoxb-...,T0002=xoxb-...`` (one per team; a bare token in the
   list is the fallback for other teams).
2. Installations saved by the OAuth v2 install flow (``/slack/install`` →
   ``/slack/oauth_redirect``, bolt's ``AsyncOAuthFlow``) in the hub's database, through
   slack-sdk's ``AsyncSQLAlchemyInstallationStore`` (tables ``slack_installations``,
   ``slack_bots``) and ``AsyncSQLAlchemyOAuthStateStore`` (``slack_oauth_states``).

Source: https://docs.slack.dev/authentication/installing-with-oauth/
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError

log = logging.getLogger(__name__)

ANY_TEAM = "*"
"""Key of the token that answers teams without a token of their own."""

BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "files:read",
    "groups:history",
    "im:history",
    "im:write",
    "mpim:history",
    "users:read",
)
"""The bot token scopes the app asks for (also in ``deploy/slack-app-manifest.yaml``)."""


def parse_bot_tokens(secret: SecretStr | None) -> dict[str, str]:
    """The configured bot tokens by team id (:data:`ANY_TEAM` for the fallback token).

    Args:
        secret: ``SWITCHBOARD_SLACK_BOT_TOKEN``: ``xoxb-...`` or ``T1=xoxb-...,T2=xoxb-...``.

    Returns:
        ``{team_id or "*": token}`` (empty when unset).

    Raises:
        ConfigError: an entry is empty or names a team twice.
    """
    if secret is None:
        return {}
    tokens: dict[str, str] = {}
    for raw in secret.get_secret_value().split(","):
        entry = raw.strip()
        if not entry:
            continue
        team, sep, token = entry.partition("=")
        if not sep:
            team, token = ANY_TEAM, entry
        team, token = team.strip(), token.strip()
        if not team or not token:
            raise ConfigError("SWITCHBOARD_SLACK_BOT_TOKEN has an empty team or token")
        if team in tokens:
            raise ConfigError(f"SWITCHBOARD_SLACK_BOT_TOKEN names team {team} twice")
        tokens[team] = token
    return tokens


class TokenResolver:
    """Finds a team's bot token and identity (configured tokens first, then installations).

    Args:
        tokens: from :func:`parse_bot_tokens`.
        client: a web client (its ``base_url``) for ``auth.test`` on configured tokens.
        installation_store: OAuth installations, when the install flow is configured.
    """

    def __init__(
        self,
        tokens: dict[str, str],
        client: AsyncWebClient,
        installation_store: AsyncInstallationStore | None = None,
    ) -> None:
        self.tokens = tokens
        self.client = client
        self.installation_store = installation_store
        self._auth: dict[str, AuthorizeResult] = {}

    async def authorize(
        self, *, enterprise_id: str | None, team_id: str | None
    ) -> AuthorizeResult | None:
        """The bot token and bot user of a workspace, or None when the app is not installed.

        Configured tokens are checked once with ``auth.test`` (cached); installations carry
        their bot user id already.

        Raises:
            slack_sdk.errors.SlackApiError: ``auth.test`` failed for a configured token.
        """
        token = self.tokens.get(team_id or "") or self.tokens.get(enterprise_id or "")
        token = token or self.tokens.get(ANY_TEAM)
        if token is not None:
            cached = self._auth.get(token)
            if cached is None:
                response = await self.client.auth_test(token=token)
                cached = AuthorizeResult.from_auth_test_response(
                    bot_token=token, auth_test_response=response
                )
                self._auth[token] = cached
            return cached
        if self.installation_store is None:
            return None
        bot = await self.installation_store.async_find_bot(
            enterprise_id=enterprise_id, team_id=team_id
        )
        if bot is None and enterprise_id is not None:
            bot = await self.installation_store.async_find_bot(
                enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True
            )
        if bot is None or not bot.bot_token:
            return None
        return AuthorizeResult(
            enterprise_id=bot.enterprise_id,
            team_id=bot.team_id,
            bot_user_id=bot.bot_user_id,
            bot_id=bot.bot_id,
            bot_token=bot.bot_token,
            bot_scopes=bot.bot_scopes,
        )

    async def bot_token(self, *, team_id: str | None, enterprise_id: str | None = None) -> str:
        """The bot token to call the Web API with for a team.

        Raises:
            ConfigError: no configured token and no installation for this team.
        """
        token = self.tokens.get(team_id or "") or self.tokens.get(ANY_TEAM)
        if token is not None:
            return token
        try:
            result = await self.authorize(enterprise_id=enterprise_id, team_id=team_id)
        except SlackApiError as exc:
            raise ConfigError(f"the Slack token of team {team_id} is not valid: {exc}") from exc
        if result is None or result.bot_token is None:
            raise ConfigError(f"the Slack app is not installed in team {team_id}")
        return str(result.bot_token)


class ResolverAuthorize(AsyncAuthorize):
    """bolt's authorize step backed by a :class:`TokenResolver` (works with the OAuth flow)."""

    def __init__(self, resolver: TokenResolver) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.resolver = resolver

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **_: Any,
    ) -> AuthorizeResult | None:
        """The workspace's bot token for one request; None makes bolt refuse the request."""
        try:
            return await self.resolver.authorize(enterprise_id=enterprise_id, team_id=team_id)
        except SlackApiError as exc:
            log.warning(
                "slack.authorize_failed",
                extra={
                    "channel": "slack",
                    "team": team_id,
                    "error": str(exc.response.get("error")),
                },
            )
            return None
