"""Webhook authentication: the ``X-Telegram-Bot-Api-Secret-Token`` header.

Telegram sends the ``secret_token`` given to ``setWebhook`` in this header with every update
(https://core.telegram.org/bots/api#setwebhook). The hub compares it in constant time before it
reads the body. When ``SWITCHBOARD_TELEGRAM_SECRET_TOKEN`` is not set, the secret is derived
from the bot token (so every hub process with the same token agrees on it without sharing
another value), and ``switchboard`` registers it with ``setWebhook`` itself.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from bot.config import Settings
from bot.errors import ConfigError, SignatureInvalid

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def webhook_secret(settings: Settings) -> str:
    """The webhook secret: the configured one, or 64 hex characters derived from the token.

    Raises:
        ConfigError: when no bot token is set, or the configured secret is not 1-256 characters
            of ``A-Z a-z 0-9 _ -`` (Telegram's rule).
    """
    if settings.telegram_secret_token is not None:
        secret = settings.telegram_secret_token.get_secret_value()
        if not 1 <= len(secret) <= 256 or not set(secret) <= _ALLOWED:
            raise ConfigError(
                "SWITCHBOARD_TELEGRAM_SECRET_TOKEN must be 1-256 characters of A-Z a-z 0-9 _ -"
            )
        return secret
    if settings.telegram_bot_token is None:
        raise ConfigError("SWITCHBOARD_TELEGRAM_BOT_TOKEN is not set")
    token = settings.telegram_bot_token.get_secret_value().encode()
    return hmac.new(token, b"switchboard-telegram-webhook", hashlib.sha256).hexdigest()


def verify_secret_token(presented: str | None, expected: str) -> None:
    """Check the header value against the secret in constant time (``hmac.compare_digest``).

    Raises:
        SignatureInvalid: when the header is missing or differs (answer 401).
    """
    if presented is None:
        raise SignatureInvalid(f"missing {SECRET_HEADER} header")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise SignatureInvalid(f"wrong {SECRET_HEADER} header")
