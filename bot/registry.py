"""Plugin discovery through entry points (``switchboard.channels``, ``switchboard.tools``).

A third party adds a channel or a tool as its own package by declaring an entry point; the
built-in ones are declared in ``pyproject.toml``. When the project runs from a source tree that
is not installed, the built-ins are found by their module paths instead.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from bot.channel import ChannelPlugin

log = logging.getLogger(__name__)

BUILTIN_CHANNELS = {
    "memory": "channels.memory.plugin:MemoryChannel",
    "rest": "channels.rest.plugin:RestChannel",
    "webchat": "channels.webchat.plugin:WebchatChannel",
    "slack": "channels.slack.plugin:SlackChannel",
    "teams": "channels.teams.plugin:TeamsChannel",
    "telegram": "channels.telegram.plugin:TelegramChannel",
    "discord": "channels.discord.plugin:DiscordChannel",
    "email": "channels.email.plugin:EmailChannel",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_channels() -> list[type[ChannelPlugin]]:
    """Every channel plugin class: entry points first, then missing built-ins.

    A plugin that fails to import is logged (``registry.load_failed``) and skipped, so one
    broken third-party package cannot stop the hub.
    """
    found: dict[str, type[ChannelPlugin]] = {}
    for ep in entry_points(group="switchboard.channels"):
        try:
            found[ep.name] = ep.load()
        except Exception:
            log.exception("registry.load_failed", extra={"plugin": ep.name})
    for name, target in BUILTIN_CHANNELS.items():
        if name not in found:
            try:
                found[name] = _load(target)
            except ImportError:
                log.debug("registry.not_available", extra={"plugin": name})
    return list(found.values())


def channel_class(name: str) -> type[ChannelPlugin]:
    """The channel plugin class called ``name``.

    Raises:
        KeyError: when no such channel is installed.
    """
    for cls in load_channels():
        if cls.name == name:
            return cls
    raise KeyError(name)
