"""The Telegram Bot API as the channel calls it: PTB's ``Bot``, its errors, the webhook.

:func:`call` turns python-telegram-bot's errors into :mod:`bot.errors` (``RetryAfter`` becomes
:class:`~bot.errors.RateLimited`, network errors :class:`~bot.errors.ChannelUnavailable`, the
rest :class:`TelegramRejected`); ``ChatMigrated`` is left to the caller, which follows the new
chat id. :func:`set_webhook` / :func:`delete_webhook` register or remove
``{public_url}/telegram/{bot_name}``.

Sources: https://core.telegram.org/bots/api (``setWebhook``, ``deleteWebhook``, error
``parameters``), https://docs.python-telegram-bot.org/en/stable/telegram.error.html
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from telegram import Bot
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot.config import Settings
from bot.errors import ChannelUnavailable, ConfigError, RateLimited, SwitchboardError
from channels.telegram.polling import ALLOWED_UPDATES, retry_after_seconds
from channels.telegram.translate import CHANNEL
from channels.telegram.verify import webhook_secret

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_URL = "https://api.telegram.org"


class TelegramRejected(SwitchboardError):
    """Telegram refused a request for good (bot blocked, chat not found, bad request).

    Not retried by the hub: sending it again would fail the same way.
    """


def api_urls(settings: Settings) -> tuple[str, str]:
    """PTB's ``base_url`` and ``base_file_url`` for ``SWITCHBOARD_TELEGRAM_API_URL``.

    The setting is the Bot API server root (default ``https://api.telegram.org``); methods
    are called at ``{root}/bot{token}/{method}`` and files fetched from
    ``{root}/file/bot{token}/{file_path}``.
    """
    root = (settings.telegram_api_url or DEFAULT_API_URL).rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


def make_bot(settings: Settings) -> Bot:
    """A PTB ``Bot`` for the configured token and API URL (not initialized).

    Raises:
        ConfigError: when ``SWITCHBOARD_TELEGRAM_BOT_TOKEN`` is not set.
    """
    if settings.telegram_bot_token is None:
        raise ConfigError("SWITCHBOARD_TELEGRAM_BOT_TOKEN is not set")
    base_url, base_file_url = api_urls(settings)
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=base_url,
        base_file_url=base_file_url,
    )


async def call(request: Awaitable[T]) -> T:
    """Await a Bot API call, converting PTB errors to :mod:`bot.errors`.

    Raises:
        RateLimited: ``RetryAfter`` (``retry_after`` seconds).
        TelegramRejected: ``BadRequest``, ``Forbidden``, ``InvalidToken`` and other refusals.
        ChannelUnavailable: network errors and time-outs.
        telegram.error.ChatMigrated: left to the caller, which follows the new chat id.
    """
    try:
        return await request
    except RetryAfter as exc:
        raise RateLimited(str(exc), retry_after=retry_after_seconds(exc)) from exc
    except ChatMigrated:
        raise
    except (BadRequest, Forbidden, InvalidToken) as exc:
        raise TelegramRejected(f"telegram refused: {exc.message}") from exc
    except NetworkError as exc:
        raise ChannelUnavailable(f"telegram unreachable: {exc.message}") from exc
    except TelegramError as exc:
        raise TelegramRejected(f"telegram refused: {exc.message}") from exc


def webhook_url(settings: Settings) -> str:
    """``{public_url}/telegram/{bot_name}``.

    Raises:
        ConfigError: when ``SWITCHBOARD_PUBLIC_URL`` is not set.
    """
    if not settings.public_url:
        raise ConfigError("SWITCHBOARD_PUBLIC_URL is not set")
    return f"{settings.public_url.rstrip('/')}/telegram/{settings.telegram_bot_name}"


async def set_webhook(settings: Settings, bot: Bot | None = None) -> str:
    """Register the hub's webhook with Telegram (``setWebhook`` with the secret token).

    For a ``switchboard telegram set-webhook`` command. Returns the URL registered.

    Raises:
        ConfigError: missing token or public URL.
        ChannelUnavailable: Telegram cannot be reached.
        RateLimited: Telegram asked to wait.
        TelegramRejected: Telegram refused the URL (e.g. not HTTPS).
    """
    url = webhook_url(settings)
    own = bot is None
    b = bot or make_bot(settings)
    try:
        await call(
            b.set_webhook(
                url=url,
                secret_token=webhook_secret(settings),
                allowed_updates=list(ALLOWED_UPDATES),
            )
        )
    finally:
        if own:
            await b.shutdown()
    log.info("telegram.webhook_set", extra={"channel": CHANNEL, "url": url})
    return url


async def delete_webhook(settings: Settings, bot: Bot | None = None) -> None:
    """Remove the webhook (``deleteWebhook``), e.g. before long polling.

    Raises:
        ConfigError: missing token.
        ChannelUnavailable: Telegram cannot be reached.
        RateLimited: Telegram asked to wait.
    """
    own = bot is None
    b = bot or make_bot(settings)
    try:
        await call(b.delete_webhook())
    finally:
        if own:
            await b.shutdown()
