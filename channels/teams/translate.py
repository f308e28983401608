"""Pure translations between Bot Framework activities (as JSON) and the envelope.

Wire format: the Bot Framework Activity schema
(https://github.com/microsoft/botframework-sdk/blob/main/specs/botframework-activity/botframework-activity.md)
with the Teams additions (``channelData.tenant``, ``conversation.conversationType``,
``from.aadObjectId``; https://learn.microsoft.com/microsoftteams/platform/bots/how-to/conversations/conversation-basics).
Activities are handled as the JSON dictionaries the Bot Connector posts (camelCase keys).

Session keys (tenant id = account)::

    teams:{tenant}:dm:{aadObjectId or from.id}              personal chat
    teams:{tenant}:{conversation id}                        group chat
    teams:{tenant}:{channel id}:thread:{root message id}    channel reply chain
    teams:{tenant}:{channel id}                             a channel itself (welcome post)

Outbound: markdown text (``textFormat: markdown``) plus, when a reply has citations or
buttons, one Adaptive Card (https://adaptivecards.io/explorer/, schema 1.4) whose
``Action.Submit`` buttons carry ``data: {"action": "<action id>"}``. Teams posts a pressed
button back as a ``message`` activity whose ``value`` is that data.
"""

from __future__ import annotations

import mimetypes
import re
from datetime import UTC, datetime
from typing import Any

from bs4 import BeautifulSoup

from bot.channel import Ignored, Parsed, ParseResult
from bot.envelope import (
    TALK_TO_HUMAN,
    Attachment,
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    Participant,
    SessionKey,
    session_key,
)
from bot.errors import PayloadInvalid, PayloadTooLarge
from bot.payload import decode_json, rejects_malformed

CHANNEL = "teams"
NO_TENANT = "default"
"""Account of activities without a tenant (Emulator, Web Chat through the same bot)."""

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
CITATION_ID_PREFIX = "citation:"
"""Adaptive Card element ids of citation lines are ``citation:{doc_id}``."""
TEXT_LIMIT_CHARS = 20_000
"""Split longer texts into several messages (Teams rejects messages over about 28 KB)."""

_MESSAGE_ID = ";messageid="
_HTML_HINT = re.compile(r"</?(?:p|div|span|br|b|i|strong|em|a|ul|ol|li|at)\b[^>]*>", re.I)
_AT_TAG = re.compile(r"</?at>", re.I)
_SPACES = re.compile(r"[ \t\u00a0]+")

IGNORED_TYPES: dict[str, str] = {
    "conversationUpdate": "conversationUpdate: membership change (the channel sends the welcome)",
    "installationUpdate": "installationUpdate: the welcome follows the conversationUpdate",
    "messageReaction": "messageReaction: a reaction is not a message",
    "typing": "typing: the customer is typing",
    "messageUpdate": "messageUpdate: edits are not replayed to the bot",
    "messageDelete": "messageDelete: deletions are not replayed to the bot",
    "endOfConversation": "endOfConversation: nothing to answer",
    "invoke": "invoke: the bot uses Action.Submit, not invokes",
    "event": "event: no event is handled",
    "trace": "trace: debugging output",
}


# --- inbound ------------------------------------------------------------------------------------
def load_activity(data: bytes) -> dict[str, Any]:
    """Decode one activity.

    Raises:
        PayloadInvalid: not JSON, not an object, or without a string ``type`` (status 400).
    """
    return activity_object(decode_json(data))


def activity_object(doc: Any) -> dict[str, Any]:
    """Check that decoded JSON is one activity.

    Raises:
        PayloadInvalid: an array, a scalar, or an object without a string ``type``.
    """
    if isinstance(doc, list):
        raise PayloadInvalid(
            "a JSON array (a .transcript?): parse its activities one by one", field="type"
        )
    if not isinstance(doc, dict):
        raise PayloadInvalid("an activity must be a JSON object")
    if not isinstance(doc.get("type"), str) or not doc["type"]:
        raise PayloadInvalid("the activity has no type", field="type")
    return doc


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadInvalid(f"{key} must be an object", field=key)
    return value


def _str(doc: dict[str, Any], key: str, field: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadInvalid(f"{field} is required", field=field)
    return value


def tenant_of(activity: dict[str, Any], default: str | None = None) -> str:
    """The tenant id: ``channelData.tenant.id``, else ``conversation.tenantId``, else default."""
    channel_data = activity.get("channelData")
    if isinstance(channel_data, dict):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str) and tenant["id"]:
            return str(tenant["id"])
    conversation = activity.get("conversation")
    if isinstance(conversation, dict):
        tid = conversation.get("tenantId")
        if isinstance(tid, str) and tid:
            return tid
    return default or NO_TENANT


def conversation_kind(activity: dict[str, Any]) -> str:
    """``personal``, ``groupChat`` or ``channel`` (``conversation.conversationType``).

    Without a type (Emulator, Web Chat), ``isGroup`` decides between personal and group.
    """
    conversation = _obj(activity, "conversation")
    kind = conversation.get("conversationType")
    if kind in ("personal", "groupChat", "channel"):
        return str(kind)
    return "groupChat" if conversation.get("isGroup") is True else "personal"


def thread_root(activity: dict[str, Any]) -> str | None:
    """The root message id of a channel reply chain (``;messageid=`` of the conversation id).

    A new channel post has no ``;messageid=`` yet when it is the root itself: its own id.
    """
    conversation_id = _str(_obj(activity, "conversation"), "id", "conversation.id")
    _, sep, root = conversation_id.partition(_MESSAGE_ID)
    if sep and root:
        return root
    if activity.get("type") == "message" and isinstance(activity.get("id"), str):
        return str(activity["id"])
    return None


def teams_session_key(activity: dict[str, Any], *, tenant: str) -> SessionKey:
    """The session key of an activity's conversation (see the module docstring).

    Raises:
        PayloadInvalid: without ``conversation.id``, or ``from.id`` in a personal chat.
    """
    conversation_id = _str(_obj(activity, "conversation"), "id", "conversation.id")
    kind = conversation_kind(activity)
    if kind == "personal":
        sender = _obj(activity, "from")
        peer = sender.get("aadObjectId")
        if not isinstance(peer, str) or not peer:
            peer = _str(sender, "id", "from.id")
        return session_key(CHANNEL, tenant, dm_peer=peer)
    if kind == "channel":
        channel_id = conversation_id.partition(_MESSAGE_ID)[0]
        return session_key(CHANNEL, tenant, chat=channel_id, thread=thread_root(activity))
    return session_key(CHANNEL, tenant, chat=conversation_id)


def _bot_id(activity: dict[str, Any]) -> str | None:
    recipient = activity.get("recipient")
    if isinstance(recipient, dict) and isinstance(recipient.get("id"), str):
        return str(recipient["id"])
    return None


def _mentions_of(activity: dict[str, Any], bot_id: str | None) -> list[str]:
    """The ``text`` of every mention entity of the bot (e.g. ``<at>Switchboard</at>``)."""
    found: list[str] = []
    entities = activity.get("entities")
    if not isinstance(entities, list) or bot_id is None:
        return found
    for ent in entities:
        if not isinstance(ent, dict) or ent.get("type") != "mention":
            continue
        mentioned = ent.get("mentioned")
        if isinstance(mentioned, dict) and mentioned.get("id") == bot_id:
            text = ent.get("text")
            found.append(text if isinstance(text, str) else "")
    return found


def plain_text(activity: dict[str, Any]) -> str:
    """The message text without the bot's @mention and without HTML markup.

    Raises:
        PayloadInvalid: ``text`` is not a string.
    """
    text = activity.get("text")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise PayloadInvalid("text must be a string", field="text")
    for mention in _mentions_of(activity, _bot_id(activity)):
        if mention:
            text = text.replace(mention, " ")
    if activity.get("textFormat") == "xml" or _HTML_HINT.search(text):
        text = _AT_TAG.sub("", text)
        text = BeautifulSoup(text, "html.parser").get_text()
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return "\n".join(lines).strip()


def attachments_of(activity: dict[str, Any]) -> tuple[Attachment, ...]:
    """Files and images sent with a message (metadata; content is fetched only when needed).

    Teams repeats the message body as a ``text/html`` attachment: that one is skipped.
    """
    raw = activity.get("attachments")
    if not isinstance(raw, list):
        return ()
    found: list[Attachment] = []
    for i, att in enumerate(raw):
        if not isinstance(att, dict):
            continue
        content_type = att.get("contentType") if isinstance(att.get("contentType"), str) else ""
        assert isinstance(content_type, str)
        if content_type == "text/html":
            continue
        name = att.get("name") if isinstance(att.get("name"), str) and att.get("name") else None
        content = att.get("content")
        url: str | None = att.get("contentUrl") if isinstance(att.get("contentUrl"), str) else None
        mime = content_type if "/" in content_type else "application/octet-stream"
        if content_type == FILE_DOWNLOAD_INFO and isinstance(content, dict):
            download = content.get("downloadUrl")
            url = download if isinstance(download, str) else url
            guessed = mimetypes.guess_type(name or "")[0]
            mime = guessed or "application/octet-stream"
        found.append(Attachment(name=name or f"attachment-{i + 1}", mime_type=mime, url=url))
    return tuple(found)


def _sent_at(activity: dict[str, Any]) -> datetime | None:
    stamp = activity.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def submitted_action(activity: dict[str, Any]) -> str | None:
    """The ``action`` of an Adaptive Card ``Action.Submit`` (a message with ``value``)."""
    value = activity.get("value")
    if isinstance(value, dict):
        action = value.get("action")
        if isinstance(action, str) and action:
            return action
    return None


def is_from_bot(activity: dict[str, Any]) -> bool:
    """True for the bot's own activities (``from.role`` bot, or ``from`` is the recipient)."""
    sender = activity.get("from")
    if not isinstance(sender, dict):
        return False
    if sender.get("role") == "bot":
        return True
    bot_id = _bot_id(activity)
    return bot_id is not None and sender.get("id") == bot_id


def bot_was_added(activity: dict[str, Any]) -> bool:
    """True for a ``conversationUpdate`` whose ``membersAdded`` holds the bot (recipient)."""
    if activity.get("type") != "conversationUpdate":
        return False
    bot_id = _bot_id(activity)
    added = activity.get("membersAdded")
    if bot_id is None or not isinstance(added, list):
        return False
    return any(isinstance(m, dict) and m.get("id") == bot_id for m in added)


@rejects_malformed("teams")
def to_result(
    activity: dict[str, Any],
    *,
    default_tenant: str | None,
    max_message_bytes: int,
    verified: bool = True,
) -> ParseResult:
    """An activity to an envelope (``message``) or an :class:`Ignored` with the reason.

    Args:
        activity: the decoded activity.
        default_tenant: account of activities that carry no tenant.
        max_message_bytes: limit of the text in UTF-8 bytes.
        verified: whether the activity's token was verified (the sender is then proven).

    Raises:
        PayloadInvalid: a message without ``id``, ``conversation.id`` or ``from.id``, or with
            a non-string ``text`` (400); a text over ``max_message_bytes`` (413).
    """
    kind = activity.get("type")
    if kind != "message":
        reason = IGNORED_TYPES.get(str(kind), f"activity type {kind!r} is not handled")
        return Ignored(reason)
    if is_from_bot(activity):
        return Ignored("message sent by a bot")
    event_id = _str(activity, "id", "id")
    sender = _obj(activity, "from")
    sender_id = _str(sender, "id", "from.id")
    tenant = tenant_of(activity, default_tenant)
    key = teams_session_key(activity, tenant=tenant)
    action = submitted_action(activity)
    text = plain_text(activity)
    if action is not None and not text:
        text = TALK_TO_HUMAN.label if action == TALK_TO_HUMAN.id else ""
    attachments = attachments_of(activity)
    if not text and action is None and not attachments:
        return Ignored("message without text, files or a card submit")
    size = len(text.encode("utf-8"))
    if size > max_message_bytes:
        raise PayloadTooLarge(
            f"text is {size} bytes; the limit is {max_message_bytes}",
            limit_bytes=max_message_bytes,
            field="text",
        )
    conv_kind = conversation_kind(activity)
    name = sender.get("name") if isinstance(sender.get("name"), str) else None
    email = sender.get("email") if isinstance(sender.get("email"), str) else None
    reply_to = activity.get("replyToId") if isinstance(activity.get("replyToId"), str) else None
    locale = activity.get("locale") if isinstance(activity.get("locale"), str) else None
    extra: dict[str, Any] = {}
    sent_at = _sent_at(activity)
    if sent_at is not None:
        extra["sent_at"] = sent_at
    return Parsed(
        InboundMessage(
            event_id=event_id,
            channel=CHANNEL,
            account=tenant,
            session_key=key,
            sender=Participant(
                id=str(sender.get("aadObjectId") or sender_id),
                name=name,
                email=email,
                verified=verified,
            ),
            text=text,
            attachments=attachments,
            reply_to=reply_to,
            thread_id=thread_root(activity) if conv_kind == "channel" else None,
            locale=locale,
            is_direct=conv_kind == "personal",
            mentioned=bool(_mentions_of(activity, _bot_id(activity))),
            action=action,
            raw=activity,
            **extra,
        )
    )


# --- outbound -----------------------------------------------------------------------------------
def adaptive_card(out: OutboundMessage) -> dict[str, Any] | None:
    """The Adaptive Card of a reply's citations and buttons, or None when it has neither.

    Citations are TextBlocks with id ``citation:{doc_id}`` (a markdown link when the document
    has a URL); buttons are ``Action.Submit`` with ``data: {"action": id}``.
    """
    if not out.citations and not out.actions:
        return None
    body: list[dict[str, Any]] = []
    if out.citations:
        body.append({"type": "TextBlock", "text": "Sources", "weight": "Bolder", "size": "Small"})
        for n, cite in enumerate(out.citations, start=1):
            title = cite.title.replace("[", "(").replace("]", ")")
            label = f"[{title}]({cite.url})" if cite.url else title
            body.append(
                {
                    "type": "TextBlock",
                    "id": f"{CITATION_ID_PREFIX}{cite.doc_id}",
                    "text": f"{n}. {label}",
                    "wrap": True,
                    "spacing": "Small",
                    "isSubtle": True,
                }
            )
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
    }
    if out.actions:
        card["actions"] = [
            {"type": "Action.Submit", "title": a.label, "data": {"action": a.id}}
            for a in out.actions
        ]
    return card


def split_text(text: str, limit: int = TEXT_LIMIT_CHARS) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, at paragraph or line ends."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n\n", 0, limit)
        if cut <= 0:
            cut = rest.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n")
    parts.append(rest)
    return [p for p in parts if p] or [""]


def outbound_activities(out: OutboundMessage) -> list[dict[str, Any]]:
    """The activities (JSON) that render one outbound message.

    ``typing`` becomes one typing activity. Other kinds become markdown message(s); a human
    agent's reply is prefixed with the agent's name in bold; the Adaptive Card rides on the
    last message.
    """
    if out.kind == OutboundKind.TYPING:
        return [{"type": "typing"}]
    text = out.text
    if out.kind == OutboundKind.AGENT and out.author:
        text = f"**{out.author}:** {text}"
    activities: list[dict[str, Any]] = [
        {"type": "message", "text": part, "textFormat": "markdown"} for part in split_text(text)
    ]
    card = adaptive_card(out)
    if card is not None:
        activities[-1]["attachments"] = [{"contentType": ADAPTIVE_CARD, "content": card}]
    return activities
