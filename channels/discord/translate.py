"""Pure translations between Discord's JSON and the envelope (no gateway, no discord.py objects).

Wire formats (Discord API v10):

- Gateway dispatch frames ``{"op": 0, "t": "MESSAGE_CREATE", "s": 42, "d": {...}}``:
  https://discord.com/developers/docs/events/gateway-events#payload-structure
- Message objects: https://discord.com/developers/docs/resources/message#message-object
- Interaction objects (slash commands, buttons):
  https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
- Channel objects (threads: types 10, 11, 12; ``parent_id``, ``owner_id``):
  https://discord.com/developers/docs/resources/channel#channel-object
- Message formatting (``<@id>``, ``<#id>``, ``<:name:id>``):
  https://discord.com/developers/docs/reference#message-formatting

Session keys (see :mod:`bot.envelope`)::

    discord:{bot id}:dm:{user id}                               direct messages
    discord:{guild id}:{channel id}:thread:{thread id}          a support thread in a guild

A thread started from a message has the id of that message, so the session of a mention in a
guild channel is known before the thread exists.

The JSON objects are validated by :mod:`channels.discord.models`; replies are rendered by
:mod:`channels.discord.render`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.channel import Ignored, Parsed, ParseResult
from bot.envelope import Attachment, InboundMessage, Participant, SessionKey, session_key
from bot.errors import PayloadInvalid
from bot.payload import rejects_malformed
from channels.discord.models import (
    DiscordInteraction,
    DiscordMessage,
    PartialChannel,
    parse_interaction,
    parse_message,
)

CHANNEL = "discord"
UNKNOWN_BOT = "bot"
"""Account of direct-message sessions when the bot id is unknown (``switchboard parse``)."""
SUPPORT_COMMAND = "support"
QUESTION_OPTION = "question"
DISCORD_EPOCH_MS = 1420070400000

# Message types that carry a user's words (resources/message#message-object-message-types).
_TEXT_TYPES = {0: "default", 19: "reply", 20: "chat input command"}
_THREAD_TYPES = {10, 11, 12}  # announcement, public and private threads
_FLAG_CROSSPOSTED = 1 << 1
_GATEWAY_OPCODES = {
    1: "heartbeat",
    2: "identify",
    3: "presence update",
    4: "voice state update",
    6: "resume",
    7: "reconnect",
    8: "request guild members",
    9: "invalid session",
    10: "hello",
    11: "heartbeat ack",
}


@dataclass(frozen=True, slots=True)
class ThreadContext:
    """What the hub knows of the thread a message was posted in.

    Attributes:
        guild_id: the guild.
        parent_id: the text channel the thread belongs to.
        thread_id: the thread (a channel id).
        owned: True when the bot created the thread (a support thread: no mention needed).
    """

    guild_id: str
    parent_id: str
    thread_id: str
    owned: bool


@dataclass(frozen=True, slots=True)
class DiscordAddress:
    """Where a session's replies go.

    Attributes:
        channel_id: the thread to post in (guild sessions), None for direct messages.
        user_id: the customer for direct messages (the DM channel is looked up or opened).
    """

    channel_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """A decoded recorded payload: the dispatch event name and its ``d`` object."""

    name: str
    data: dict[str, Any]


# --- decoding ------------------------------------------------------------------------------------
def decode_payload(data: bytes) -> GatewayEvent | Ignored:
    """Decode a recorded payload: a gateway frame, a bare message or a bare interaction.

    Args:
        data: UTF-8 JSON bytes.

    Returns:
        The event (``MESSAGE_CREATE`` / ``INTERACTION_CREATE`` for bare objects), or Ignored
        for other gateway opcodes and JSON that is no message, interaction or frame.

    Raises:
        PayloadInvalid: not UTF-8 JSON, not an object, or a frame without an integer ``op``
            or a dispatch without ``t`` / object ``d``.
    """
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadInvalid(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise PayloadInvalid(f"expected a JSON object, got {type(obj).__name__}")
    if "op" in obj:
        op = obj["op"]
        if not isinstance(op, int) or isinstance(op, bool):
            raise PayloadInvalid("gateway frame: 'op' must be an integer", field="op")
        if op != 0:
            name = _GATEWAY_OPCODES.get(op, "unknown")
            return Ignored(f"gateway opcode {op} ({name}) carries no message")
        event, body = obj.get("t"), obj.get("d")
        if not isinstance(event, str) or not event:
            raise PayloadInvalid("dispatch frame without an event name 't'", field="t")
        if not isinstance(body, dict):
            raise PayloadInvalid(f"dispatch {event}: 'd' must be an object", field="d")
        return GatewayEvent(event, body)
    if "author" in obj and "channel_id" in obj:
        return GatewayEvent("MESSAGE_CREATE", obj)
    if "token" in obj and "type" in obj and "id" in obj:
        return GatewayEvent("INTERACTION_CREATE", obj)
    return Ignored("not a Discord message, interaction or gateway frame")


def bot_id_from_token(token: str) -> str | None:
    """The bot's user id encoded in the first segment of its token (base64), if decodable."""
    head = token.split(".", 1)[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=False).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if decoded.isdigit() else None


def snowflake_time(snowflake: str) -> datetime:
    """The creation time encoded in a snowflake id (UTC).

    Raises:
        PayloadInvalid: the id is not a number.
    """
    if not snowflake.isdigit():
        raise PayloadInvalid(f"not a snowflake: {snowflake!r}", field="id")
    return datetime.fromtimestamp(((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


def thread_context(channel: PartialChannel, bot_id: str | None) -> ThreadContext | None:
    """A :class:`ThreadContext` when ``channel`` is a thread in a guild, else None."""
    if channel.type not in _THREAD_TYPES or not channel.parent_id or not channel.guild_id:
        return None
    owned = bot_id is not None and channel.owner_id == bot_id
    return ThreadContext(channel.guild_id, channel.parent_id, channel.id, owned)


# --- inbound -------------------------------------------------------------------------------------
def mentions_bot(msg: DiscordMessage, bot_id: str | None) -> bool:
    """True when the message mentions the bot (``mentions`` array or ``<@id>`` in content)."""
    if bot_id is None:
        return False
    if any(u.id == bot_id for u in msg.mentions):
        return True
    return f"<@{bot_id}>" in msg.content or f"<@!{bot_id}>" in msg.content


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")


def plain_text(msg: DiscordMessage, bot_id: str | None) -> str:
    """The message content as plain text: the bot's mention removed, other mentions named.

    ``<@id>`` becomes ``@display name`` (from ``mentions``), roles ``@role``, channels
    ``#channel``, custom emoji ``:name:``. Discord Markdown is kept as it is (CommonMark-like).
    """
    names = {u.id: u.display_name for u in msg.mentions}

    def user(m: re.Match[str]) -> str:
        uid = m.group(1)
        if uid == bot_id:
            return ""
        return "@" + names.get(uid, "user")

    text = _USER_MENTION.sub(user, msg.content)
    text = _ROLE_MENTION.sub("@role", text)
    text = _CHANNEL_MENTION.sub("#channel", text)
    text = _CUSTOM_EMOJI.sub(r":\1:", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


@rejects_malformed("discord")
def message_to_result(
    data: Mapping[str, Any],
    *,
    bot_id: str | None,
    thread: ThreadContext | None = None,
) -> ParseResult:
    """Translate a ``MESSAGE_CREATE`` payload into an envelope, or say why it is ignored.

    Args:
        data: the message object (``d`` of the frame).
        bot_id: our bot's user id (for mentions, our own messages and the DM account).
        thread: set when the message was posted in a thread (known to the caller).

    Returns:
        ``Parsed`` for a direct message, a mention in a guild channel (the session is the thread
        that will be started from this message), a message in a bot-owned support thread, or a
        mention in another thread; otherwise ``Ignored`` with the reason.

    Raises:
        PayloadInvalid: the message object is malformed.
    """
    msg = parse_message(data)
    if bot_id is not None and msg.author.id == bot_id:
        return Ignored("our own message")
    if msg.author.bot or msg.author.system or msg.webhook_id is not None:
        return Ignored("message from a bot, a webhook or the system")
    if msg.type not in _TEXT_TYPES:
        return Ignored(f"message type {msg.type} is not a customer message")
    if msg.flags & _FLAG_CROSSPOSTED:
        return Ignored("crossposted announcement")
    mentioned = mentions_bot(msg, bot_id)
    text = plain_text(msg, bot_id)
    attachments = tuple(
        Attachment(
            name=a.filename,
            mime_type=a.content_type or "application/octet-stream",
            size=a.size,
            url=a.url,
        )
        for a in msg.attachments
    )
    if not text and not attachments:
        if not msg.content:
            return Ignored("no content (is the Message Content intent enabled?)")
        return Ignored("nothing but a mention")
    thread_id: str | None
    if msg.guild_id is None:
        account = bot_id or UNKNOWN_BOT
        key = session_key(CHANNEL, account, dm_peer=msg.author.id)
        thread_id = None
    elif thread is not None:
        if not (thread.owned or mentioned):
            return Ignored("message in a thread that is not a support thread, without mention")
        account = thread.guild_id
        key = session_key(CHANNEL, account, chat=thread.parent_id, thread=thread.thread_id)
        thread_id = thread.thread_id
    elif mentioned:
        account = msg.guild_id
        key = session_key(CHANNEL, account, chat=msg.channel_id, thread=msg.id)
        thread_id = msg.id
    else:
        return Ignored("guild message that does not mention the bot")
    name = msg.author.display_name
    if msg.member is not None and msg.member.nick:
        name = msg.member.nick
    reply_to = None
    if msg.message_reference is not None:
        ref = msg.message_reference.get("message_id")
        reply_to = str(ref) if ref is not None else None
    return Parsed(
        InboundMessage(
            event_id=msg.id,
            channel=CHANNEL,
            account=account,
            session_key=key,
            sender=Participant(id=msg.author.id, name=name, verified=True),
            text=text,
            attachments=attachments,
            reply_to=reply_to,
            thread_id=thread_id,
            sent_at=msg.timestamp.astimezone(UTC),
            is_direct=msg.guild_id is None,
            mentioned=mentioned,
            raw=dict(data),
        )
    )


def interaction_session(
    interaction: DiscordInteraction, *, bot_id: str | None, thread_id: str | None = None
) -> SessionKey | None:
    """The session of an interaction: its DM, its thread, or the thread ``thread_id`` opened.

    Returns:
        The key, or None when the interaction happened in a plain guild channel and no thread
        was given.
    """
    invoker = interaction.invoker
    if interaction.guild_id is None:
        if invoker is None:
            return None
        return session_key(CHANNEL, bot_id or UNKNOWN_BOT, dm_peer=invoker.id)
    channel = interaction.channel
    if channel is not None:
        ctx = thread_context(
            channel.model_copy(update={"guild_id": channel.guild_id or interaction.guild_id}),
            bot_id,
        )
        if ctx is not None:
            return session_key(CHANNEL, ctx.guild_id, chat=ctx.parent_id, thread=ctx.thread_id)
    if thread_id is not None and interaction.channel_id is not None:
        return session_key(
            CHANNEL, interaction.guild_id, chat=interaction.channel_id, thread=thread_id
        )
    return None


@rejects_malformed("discord")
def interaction_to_result(
    data: Mapping[str, Any], *, bot_id: str | None, thread_id: str | None = None
) -> ParseResult:
    """Translate an ``INTERACTION_CREATE`` payload: a button press or ``/support QUESTION``.

    Args:
        data: the interaction object.
        bot_id: our bot's user id.
        thread_id: the support thread ``/support`` just opened (guild channels).

    Returns:
        ``Parsed`` with ``action`` = the button's ``custom_id`` for a button press in a DM or a
        thread, ``Parsed`` with the question for ``/support question:...``; otherwise Ignored.

    Raises:
        PayloadInvalid: the interaction object is malformed.
    """
    inter = parse_interaction(data)
    invoker = inter.invoker
    if invoker is None:
        return Ignored("interaction without a user")
    if invoker.bot:
        return Ignored("interaction from a bot")
    text = ""
    action: str | None = None
    if inter.type == 3 and inter.data is not None and inter.data.component_type == 2:
        action = inter.data.custom_id
        if not action:
            raise PayloadInvalid("button interaction without custom_id", field="d.data")
    elif inter.type == 2 and inter.data is not None and inter.data.name == SUPPORT_COMMAND:
        text = (inter.option(QUESTION_OPTION) or "").strip()
        if not text:
            return Ignored("/support without a question only opens a thread")
    elif inter.type == 2 and inter.data is not None:
        return Ignored(f"command /{inter.data.name} is not handled by this bot")
    else:
        return Ignored(f"interaction type {inter.type} is not a button or /support")
    key = interaction_session(inter, bot_id=bot_id, thread_id=thread_id)
    if key is None:
        return Ignored("interaction outside a direct message or support thread")
    account = key.split(":", 2)[1]
    name = invoker.display_name
    if inter.member is not None and inter.member.nick:
        name = inter.member.nick
    return Parsed(
        InboundMessage(
            event_id=inter.id,
            channel=CHANNEL,
            account=account,
            session_key=key,
            sender=Participant(id=invoker.id, name=name, verified=True),
            text=text,
            thread_id=thread_id
            or (inter.channel.id if inter.channel and inter.guild_id else None),
            sent_at=snowflake_time(inter.id),
            locale=inter.locale,
            is_direct=inter.guild_id is None,
            mentioned=inter.guild_id is not None,
            action=action,
            raw=dict(data),
        )
    )


@rejects_malformed("discord")
def parse_recorded(data: bytes, *, bot_id: str | None) -> ParseResult:
    """What ``switchboard parse discord FILE`` runs: frame or bare object → envelope.

    A message without ``guild_id`` is a direct message. A guild message is taken only when it
    mentions the bot (its session is the thread started from it); the recorded payload cannot
    tell whether its channel is a thread, so follow-ups inside a thread need the running client.

    Raises:
        PayloadInvalid: malformed JSON or a malformed message / interaction object.
    """
    decoded = decode_payload(data)
    if isinstance(decoded, Ignored):
        return decoded
    if decoded.name == "MESSAGE_CREATE":
        return message_to_result(decoded.data, bot_id=bot_id)
    if decoded.name == "INTERACTION_CREATE":
        return interaction_to_result(decoded.data, bot_id=bot_id)
    return Ignored(f"gateway event {decoded.name} is not a message")


# --- outbound ------------------------------------------------------------------------------------
def address_of(key: SessionKey | str) -> DiscordAddress:
    """Where replies of a Discord session go.

    Raises:
        PayloadInvalid: the key is not a Discord DM or thread session.
    """
    parts = [p.replace("%3A", ":").replace("%25", "%") for p in key.split(":")]
    if len(parts) == 4 and parts[0] == CHANNEL and parts[2] == "dm":
        return DiscordAddress(user_id=parts[3])
    if len(parts) == 5 and parts[0] == CHANNEL and parts[3] == "thread":
        return DiscordAddress(channel_id=parts[4])
    raise PayloadInvalid(f"not a Discord session key: {key!r}", field="session_key")
