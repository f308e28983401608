"""Discord's JSON objects as pydantic models: only the fields the hub reads.

Wire formats (Discord API v10):

- Message objects: https://discord.com/developers/docs/resources/message#message-object
- Interaction objects (slash commands, buttons):
  https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
- Channel objects (threads: types 10, 11, 12; ``parent_id``, ``owner_id``):
  https://discord.com/developers/docs/resources/channel#channel-object
- User and guild member objects: https://discord.com/developers/docs/resources/user#user-object

Unknown fields are ignored; a missing or mistyped field the hub needs is a
:class:`~bot.errors.PayloadInvalid` naming it (``d.author.id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.errors import PayloadInvalid
from bot.payload import rejects_malformed

_M = TypeVar("_M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DiscordUser(_Model):
    """A user object (resources/user#user-object); only the fields the hub uses."""

    id: str
    username: str = ""
    global_name: str | None = None
    bot: bool = False
    system: bool = False

    @property
    def display_name(self) -> str:
        """``global_name`` when set, else ``username``."""
        return self.global_name or self.username or self.id


class DiscordMember(_Model):
    """A guild member (``nick`` and, in interactions, ``user``)."""

    user: DiscordUser | None = None
    nick: str | None = None


class DiscordAttachment(_Model):
    """An attachment object (``size`` in bytes)."""

    id: str
    filename: str
    size: int | None = None
    url: str | None = None
    content_type: str | None = None


class DiscordMessage(_Model):
    """A message object as sent in ``MESSAGE_CREATE`` (with ``guild_id`` for guild messages)."""

    id: str
    channel_id: str
    guild_id: str | None = None
    author: DiscordUser
    member: DiscordMember | None = None
    content: str = ""
    timestamp: datetime
    type: int = 0
    flags: int = 0
    webhook_id: str | None = None
    mentions: list[DiscordUser] = []
    mention_roles: list[str] = []
    attachments: list[DiscordAttachment] = []
    message_reference: dict[str, Any] | None = None


class PartialChannel(_Model):
    """The partial channel of an interaction, or a full channel object."""

    id: str
    type: int
    guild_id: str | None = None
    parent_id: str | None = None
    owner_id: str | None = None
    name: str | None = None


class InteractionData(_Model):
    """``data`` of an application command (``name``, ``options``) or component (``custom_id``)."""

    name: str | None = None
    type: int | None = None
    options: list[dict[str, Any]] = []
    custom_id: str | None = None
    component_type: int | None = None


class DiscordInteraction(_Model):
    """An interaction object (``member`` in guilds, ``user`` in DMs)."""

    id: str
    application_id: str | None = None
    type: int
    token: str
    guild_id: str | None = None
    channel_id: str | None = None
    channel: PartialChannel | None = None
    member: DiscordMember | None = None
    user: DiscordUser | None = None
    data: InteractionData | None = None
    locale: str | None = None

    @property
    def invoker(self) -> DiscordUser | None:
        """Who pressed or typed it: ``member.user`` in guilds, ``user`` in DMs."""
        if self.member is not None and self.member.user is not None:
            return self.member.user
        return self.user

    def option(self, name: str) -> str | None:
        """The string value of a top-level command option, if given."""
        for opt in self.data.options if self.data else []:
            if opt.get("name") == name and isinstance(opt.get("value"), str):
                return str(opt["value"])
        return None


@rejects_malformed("discord")
def parse_message(data: Mapping[str, Any]) -> DiscordMessage:
    """Validate a message object.

    Raises:
        PayloadInvalid: a required field is missing or has the wrong type (``field`` names it).
    """
    return _validate(DiscordMessage, data, "d")


@rejects_malformed("discord")
def parse_interaction(data: Mapping[str, Any]) -> DiscordInteraction:
    """Validate an interaction object.

    Raises:
        PayloadInvalid: a required field is missing or has the wrong type.
    """
    return _validate(DiscordInteraction, data, "d")


@rejects_malformed("discord")
def parse_channel(data: Mapping[str, Any]) -> PartialChannel:
    """Validate a channel object (``GET /channels/{id}``).

    Raises:
        PayloadInvalid: a required field is missing or has the wrong type.
    """
    return _validate(PartialChannel, data, "channel")


def _validate(model: type[_M], data: Mapping[str, Any], root: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join([root, *(str(p) for p in err["loc"])])
        raise PayloadInvalid(f"{where}: {err['msg']}", field=where) from exc
