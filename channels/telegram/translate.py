"""Pure translations between Telegram Bot API objects and the envelope.

Wire format: the ``Update`` object of https://core.telegram.org/bots/api#update, validated and
parsed with python-telegram-bot's :meth:`telegram.Update.de_json` by
:mod:`channels.telegram.decode`. Nothing here does I/O.

Session keys (ARCHITECTURE.md):

- private chat: ``telegram:{bot}:dm:{user id}``
- group or supergroup: ``telegram:{bot}:{chat id}``
- forum topic of a supergroup: ``telegram:{bot}:{chat id}:topic:{message_thread_id}``

``{bot}`` is ``settings.telegram_bot_name``. After a group was upgraded to a supergroup
(``migrate_to_chat_id``), messages of the new chat keep the old chat's session key: the plugin
passes the mapping in :attr:`ParseContext.chat_aliases`.

What becomes an envelope: text, captions, photos, documents, voice notes, audio, video, video
notes and animations from people (``message`` and ``edited_message``: an edit is a new turn with
the edited text in the same session), and inline-keyboard presses (``callback_query``: the
envelope's ``action`` is the button's ``callback_data``). In groups, only messages that mention
the bot, reply to it or address a command to it, unless ``telegram_group_mode`` is ``all``.
Everything else is an :class:`~bot.channel.Ignored` with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from telegram import CallbackQuery, Message, MessageEntity, Update, User
from telegram.constants import ChatType

from bot.channel import Ignored, Parsed
from bot.envelope import Attachment, InboundMessage, Participant, SessionKey, session_key
from bot.errors import PayloadInvalid
from bot.payload import rejects_malformed
from channels.telegram.decode import (
    UNSUPPORTED_KEY,
    check_message,
    decode_update,
    legacy_fill,
    looks_like_message,
)

CHANNEL: Final = "telegram"
GROUP_MODES: Final = ("mention", "all")
FILE_REF_PREFIX: Final = "telegram-file:"
"""``Attachment.ref`` of a Telegram file: ``telegram-file:{file_id}`` (fetched with getFile)."""

_HANDLED = ("message", "edited_message", "callback_query")
_GROUPS = (ChatType.GROUP, ChatType.SUPERGROUP)
_SERVICE = (
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "group_chat_created",
    "supergroup_chat_created",
    "channel_chat_created",
    "pinned_message",
    "forum_topic_created",
    "forum_topic_edited",
    "forum_topic_closed",
    "forum_topic_reopened",
    "general_forum_topic_hidden",
    "general_forum_topic_unhidden",
    "message_auto_delete_timer_changed",
    "video_chat_started",
    "video_chat_ended",
)


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What the parser needs to know about the bot.

    Attributes:
        account: the bot's account name in session keys (``settings.telegram_bot_name``).
        bot_id: the bot's user id (from getMe), to recognise replies and text mentions.
        bot_username: the bot's ``@username`` without ``@`` (from getMe).
        group_mode: ``mention`` (answer in groups only when addressed) or ``all``.
        verified: True when the update provably came from Telegram (webhook secret token or
            our own getUpdates call); becomes ``sender.verified``.
        chat_aliases: migrated chat id → the chat id whose session it continues.
    """

    account: str
    bot_id: int | None = None
    bot_username: str | None = None
    group_mode: str = "mention"
    verified: bool = False
    chat_aliases: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Migration:
    """A group was upgraded to a supergroup: ``old_chat_id`` now lives on as ``new_chat_id``."""

    update_id: int
    old_chat_id: int
    new_chat_id: int


UpdateResult = Parsed | Ignored | Migration


@dataclass(frozen=True, slots=True)
class Address:
    """Where to send in Telegram: a chat and, for forum topics, a ``message_thread_id``."""

    chat_id: int
    thread_id: int | None = None


# --- session keys --------------------------------------------------------------------------------
def chat_session_key(
    ctx: ParseContext, *, chat_id: int, chat_type: str, thread_id: int | None = None
) -> SessionKey:
    """The session key of a chat (and forum topic), following migrations in ``ctx``."""
    if chat_type == ChatType.PRIVATE:
        return session_key(CHANNEL, ctx.account, dm_peer=str(chat_id))
    canonical = ctx.chat_aliases.get(chat_id, chat_id)
    topic = str(thread_id) if thread_id is not None else None
    return session_key(CHANNEL, ctx.account, chat=str(canonical), topic=topic)


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


def address_of(key: SessionKey | str) -> Address:
    """The chat (and topic) a session key names, before any migration.

    Raises:
        ValueError: for a key that is not a Telegram session key.
    """
    parts = [_unescape(p) for p in key.split(":")]
    if len(parts) < 3 or parts[0] != CHANNEL:
        raise ValueError(f"not a telegram session key: {key!r}")
    rest = parts[2:]
    if rest[0] == "dm":
        return Address(chat_id=int(rest[1]))
    chat_id = int(rest[0])
    thread_id = int(rest[2]) if len(rest) >= 3 and rest[1] == "topic" else None
    return Address(chat_id=chat_id, thread_id=thread_id)


# --- messages ------------------------------------------------------------------------------------
def _participant(user: User, *, verified: bool) -> Participant:
    name = user.full_name or (f"@{user.username}" if user.username else None)
    return Participant(id=str(user.id), name=name, verified=verified)


def _attachments(msg: Message) -> list[Attachment]:
    """Files of a message as refs (``telegram-file:{file_id}``); content is fetched lazily."""
    out: list[Attachment] = []
    if msg.photo:
        best = max(msg.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        out.append(
            Attachment(
                name=f"photo_{msg.message_id}.jpg",
                mime_type="image/jpeg",
                size=best.file_size,
                ref=FILE_REF_PREFIX + best.file_id,
            )
        )
    if msg.document:
        d = msg.document
        out.append(
            Attachment(
                name=d.file_name or f"document_{msg.message_id}",
                mime_type=d.mime_type or "application/octet-stream",
                size=d.file_size,
                ref=FILE_REF_PREFIX + d.file_id,
            )
        )
    for kind, media, default_mime, ext in (
        ("voice", msg.voice, "audio/ogg", "ogg"),
        ("audio", msg.audio, "audio/mpeg", "mp3"),
        ("video", msg.video, "video/mp4", "mp4"),
        ("video_note", msg.video_note, "video/mp4", "mp4"),
        ("animation", msg.animation, "video/mp4", "mp4"),
    ):
        if media is None or (kind == "animation" and msg.document is not None):
            continue
        name = getattr(media, "file_name", None) or f"{kind}_{msg.message_id}.{ext}"
        mime = getattr(media, "mime_type", None) or default_mime
        out.append(
            Attachment(
                name=name,
                mime_type=mime,
                size=media.file_size,
                ref=FILE_REF_PREFIX + media.file_id,
            )
        )
    return out


def describe_attachments(attachments: Sequence[Attachment]) -> str:
    """Placeholder text for media without a caption, e.g. ``[photo] [voice message]``."""
    labels = []
    for a in attachments:
        if a.mime_type.startswith("image/"):
            labels.append("[photo]")
        elif a.name.startswith("voice_"):
            labels.append("[voice message]")
        elif a.mime_type.startswith("audio/"):
            labels.append(f"[audio: {a.name}]")
        elif a.mime_type.startswith("video/"):
            labels.append("[video]")
        else:
            labels.append(f"[document: {a.name}]")
    return " ".join(labels)


def _entity_texts(msg: Message) -> dict[MessageEntity, str]:
    if msg.text is not None:
        return msg.parse_entities()
    if msg.caption is not None:
        return msg.parse_caption_entities()
    return {}


def _is_topic_root_reply(msg: Message) -> bool:
    """In forum topics every message "replies" to the topic's first message; not a reply."""
    reply = msg.reply_to_message
    return bool(
        reply is not None
        and msg.is_topic_message
        and msg.message_thread_id is not None
        and reply.message_id == msg.message_thread_id
    )


def _is_bot_user(user: User | None, ctx: ParseContext) -> bool:
    if user is None:
        return False
    if ctx.bot_id is not None:
        return user.id == ctx.bot_id
    return bool(
        user.is_bot
        and ctx.bot_username
        and (user.username or "").casefold() == ctx.bot_username.casefold()
    )


def addressed_to_bot(msg: Message, ctx: ParseContext) -> bool:
    """True when a group message mentions the bot, replies to it or names it in a command."""
    handle = f"@{ctx.bot_username}".casefold() if ctx.bot_username else None
    for entity, text in _entity_texts(msg).items():
        if entity.type == MessageEntity.MENTION and handle and text.casefold() == handle:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and _is_bot_user(entity.user, ctx):
            return True
        if (
            entity.type == MessageEntity.BOT_COMMAND
            and handle
            and text.casefold().endswith(handle)
        ):
            return True
    reply = msg.reply_to_message
    return bool(
        reply is not None and not _is_topic_root_reply(msg) and _is_bot_user(reply.from_user, ctx)
    )


def _strip_mention(text: str, ctx: ParseContext) -> str:
    if not ctx.bot_username:
        return text
    stripped = re.sub(rf"@{re.escape(ctx.bot_username)}\b", "", text, flags=re.IGNORECASE)
    stripped = re.sub(r"[ \t]{2,}", " ", stripped).strip()
    return stripped or text


def _message_kind(msg: Message) -> str | None:
    """The name of the first unsupported content or service field present, if any."""
    unsupported = msg.api_kwargs.get(UNSUPPORTED_KEY)
    if isinstance(unsupported, str):
        return unsupported
    for name in _SERVICE:
        if getattr(msg, name, None):
            return name
    return None


def parse_message(
    msg: Message, *, event_id: str, ctx: ParseContext, raw: dict[str, Any], edited: bool = False
) -> Parsed | Ignored | Migration:
    """A ``Message`` (new or edited) to an envelope, an Ignored, or a Migration."""
    chat = msg.chat
    if msg.migrate_to_chat_id is not None:
        return Migration(
            int(event_id) if event_id.isdigit() else 0, chat.id, msg.migrate_to_chat_id
        )
    if msg.migrate_from_chat_id is not None:
        return Migration(
            int(event_id) if event_id.isdigit() else 0, msg.migrate_from_chat_id, chat.id
        )
    if chat.type == ChatType.CHANNEL:
        return Ignored("channel posts are not support conversations")
    user = msg.from_user
    if user is None:
        return Ignored("message without a sender (anonymous admin or channel)")
    if user.is_bot:
        return Ignored("message from a bot")
    attachments = _attachments(msg)
    text = msg.text if msg.text is not None else (msg.caption or "")
    if not text and not attachments:
        kind = _message_kind(msg)
        reason = f"no text or supported media ({kind})" if kind else "no text or supported media"
        return Ignored(reason)
    is_direct = chat.type == ChatType.PRIVATE
    mentioned = is_direct or addressed_to_bot(msg, ctx)
    if chat.type in _GROUPS and not mentioned and ctx.group_mode != "all":
        return Ignored("group message not addressed to the bot (telegram_group_mode=mention)")
    if not is_direct:
        text = _strip_mention(text, ctx)
    if not text:
        text = describe_attachments(attachments)
    topic = msg.message_thread_id if msg.is_topic_message else None
    key = chat_session_key(ctx, chat_id=chat.id, chat_type=chat.type, thread_id=topic)
    reply = msg.reply_to_message
    reply_to = (
        str(reply.message_id) if reply is not None and not _is_topic_root_reply(msg) else None
    )
    sent = (msg.edit_date if edited and msg.edit_date else msg.date) or datetime.now(UTC)
    return Parsed(
        InboundMessage(
            event_id=event_id,
            channel=CHANNEL,
            account=ctx.account,
            session_key=key,
            sender=_participant(user, verified=ctx.verified),
            text=text,
            attachments=tuple(attachments),
            reply_to=reply_to,
            thread_id=str(topic) if topic is not None else None,
            sent_at=sent.astimezone(UTC),
            locale=user.language_code,
            is_direct=is_direct,
            mentioned=mentioned,
            raw=raw,
        )
    )


def parse_callback(
    cq: CallbackQuery, *, event_id: str, ctx: ParseContext, raw: dict[str, Any]
) -> Parsed | Ignored:
    """An inline-keyboard press to an envelope with ``action`` = the button's ``callback_data``."""
    if not cq.data:
        return Ignored("callback query without data (a game button)")
    msg = cq.message
    if not isinstance(msg, Message):
        return Ignored("callback query from an inline message (no chat to answer in)")
    chat = msg.chat
    if chat.type == ChatType.CHANNEL:
        return Ignored("callback query in a channel")
    topic = msg.message_thread_id if msg.is_topic_message else None
    key = chat_session_key(ctx, chat_id=chat.id, chat_type=chat.type, thread_id=topic)
    return Parsed(
        InboundMessage(
            event_id=event_id,
            channel=CHANNEL,
            account=ctx.account,
            session_key=key,
            sender=_participant(cq.from_user, verified=ctx.verified),
            text="",
            reply_to=str(msg.message_id),
            thread_id=str(topic) if topic is not None else None,
            sent_at=datetime.now(UTC) if msg.date is None else msg.date.astimezone(UTC),
            locale=cq.from_user.language_code,
            is_direct=chat.type == ChatType.PRIVATE,
            mentioned=True,
            action=cq.data,
            raw=raw,
        )
    )


@rejects_malformed("telegram")
def parse_update(update: Update, ctx: ParseContext, raw: dict[str, Any]) -> UpdateResult:
    """One Update to an envelope (``event_id`` = ``update_id``), an Ignored, or a Migration.

    Args:
        update: PTB's Update (from :func:`decode_update` or ``Bot.get_updates``).
        ctx: the bot's identity and group policy.
        raw: the verified JSON payload, kept on the envelope.
    """
    event_id = str(update.update_id)
    if update.message is not None:
        return parse_message(update.message, event_id=event_id, ctx=ctx, raw=raw)
    if update.edited_message is not None:
        return parse_message(
            update.edited_message, event_id=event_id, ctx=ctx, raw=raw, edited=True
        )
    if update.callback_query is not None:
        return parse_callback(update.callback_query, event_id=event_id, ctx=ctx, raw=raw)
    kinds = [k for k in raw if k != "update_id"]
    return Ignored(f"update type {kinds[0] if kinds else 'empty'!r} is not handled")


@rejects_malformed("telegram")
def parse_recorded(doc: Any, ctx: ParseContext) -> UpdateResult:
    """Parse a recorded payload: an ``Update``, or a bare ``Message`` (wrapped for inspection).

    A bare message gets the event id ``message:{chat id}:{message_id}``; other JSON objects
    (User, Chat, File...) are Ignored.

    Raises:
        PayloadInvalid: not a JSON object, or a malformed Update or Message.
    """
    if not isinstance(doc, dict):
        raise PayloadInvalid("a Telegram payload must be a JSON object", field="update")
    if "update_id" in doc:
        return parse_update(decode_update(doc), ctx, doc)
    if looks_like_message(doc):
        check_message(doc, "message")
        try:
            msg = Message.de_json(legacy_fill(doc), None)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise PayloadInvalid(f"not a valid Telegram Message: {exc}", field="message") from exc
        event_id = f"message:{msg.chat.id}:{msg.message_id}"
        return parse_message(msg, event_id=event_id, ctx=ctx, raw={"message": doc})
    return Ignored("not a Telegram Update or Message (no update_id)")


def media_group_id(update: Update) -> str | None:
    """The ``media_group_id`` of a new message, when it is one part of an album."""
    return update.message.media_group_id if update.message is not None else None


def merge_media_group(parts: Sequence[InboundMessage]) -> InboundMessage:
    """One envelope for an album: the first part's ids, every part's attachments and captions.

    Args:
        parts: the parts' envelopes in ``update_id`` order (at least one).

    Returns:
        An envelope with ``event_id`` of the first part, all attachments in order, the captions
        joined by blank lines (or a placeholder), and ``raw = {"media_group": [raw...]}``.
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    captions = [p.text for p in parts if p.text and p.text != describe_attachments(p.attachments)]
    attachments = tuple(a for p in parts for a in p.attachments)
    text = "\n\n".join(captions) or describe_attachments(attachments)
    return first.model_copy(
        update={
            "text": text,
            "attachments": attachments,
            "mentioned": any(p.mentioned for p in parts),
            "raw": {"media_group": [p.raw for p in parts]},
        }
    )
