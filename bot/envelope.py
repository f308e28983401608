"""The cross-platform message model: session keys, inbound and outbound envelopes.

Every channel plugin turns a verified platform payload into an :class:`InboundMessage` and every
reply leaves the hub as an :class:`OutboundMessage`; nothing else crosses the channel boundary.

Session keys (``SessionKey``) name exactly one conversation and are never shared by two
customers::

    {channel}:{account}:{chat}                 group chats and channels
    {channel}:{account}:dm:{peer}              direct messages
    ...:thread:{id} / ...:topic:{id}           threads, reply chains, email threads / forum topics

``account`` is the workspace, tenant, bot or mailbox. Components are escaped so that a ``:`` in a
platform id cannot forge another key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NewType

from pydantic import BaseModel, ConfigDict, Field

SessionKey = NewType("SessionKey", str)


def _escape(part: str) -> str:
    """Escape one key component: ``%`` and ``:`` are percent-encoded (RFC 3986 style)."""
    if not part:
        raise ValueError("session key components must not be empty")
    return part.replace("%", "%25").replace(":", "%3A")


def session_key(
    channel: str,
    account: str,
    *,
    chat: str | None = None,
    dm_peer: str | None = None,
    thread: str | None = None,
    topic: str | None = None,
) -> SessionKey:
    """Build the session key of one conversation.

    Args:
        channel: channel plugin name (``slack``, ``rest``...).
        account: workspace, tenant, bot or mailbox id.
        chat: group chat or channel id (exactly one of ``chat`` and ``dm_peer``).
        dm_peer: the customer's platform id for a direct conversation.
        thread: thread, reply chain or email thread id, appended as ``:thread:{id}``.
        topic: forum topic id, appended as ``:topic:{id}``.

    Returns:
        The key, e.g. ``slack:T1:C9:thread:1700000000.1`` or ``rest:default:dm:u42``.

    Raises:
        ValueError: when neither or both of ``chat`` and ``dm_peer`` are given, or a component
            is empty.
    """
    if (chat is None) == (dm_peer is None):
        raise ValueError("give exactly one of chat= and dm_peer=")
    parts = [_escape(channel), _escape(account)]
    if dm_peer is not None:
        parts += ["dm", _escape(dm_peer)]
    else:
        assert chat is not None
        parts.append(_escape(chat))
    if thread is not None:
        parts += ["thread", _escape(thread)]
    if topic is not None:
        parts += ["topic", _escape(topic)]
    return SessionKey(":".join(parts))


def channel_of(key: SessionKey | str) -> str:
    """The channel name a session key starts with (unescaped)."""
    return key.split(":", 1)[0].replace("%3A", ":").replace("%25", "%")


class Participant(BaseModel):
    """A person or bot on a platform.

    Attributes:
        id: the platform's user id (stable; the identity tools authorize from).
        name: display name, when known.
        email: e-mail address, when known.
        verified: True when the channel proved the identity (signed webhook from the platform,
            DKIM/SPF-aligned mail, an authenticated API key); False for self-asserted ids.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    email: str | None = None
    verified: bool = False


class Attachment(BaseModel):
    """A file sent with a message; content is fetched lazily by the channel.

    Attributes:
        name: file name as sent.
        mime_type: MIME type, ``application/octet-stream`` when unknown.
        size: size in bytes, when the platform says.
        url: where the channel can fetch it (may need the channel's credentials).
        ref: a stored reference (e.g. an inline e-mail part kept by the hub).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    mime_type: str = "application/octet-stream"
    size: int | None = None
    url: str | None = None
    ref: str | None = None


class Citation(BaseModel):
    """A knowledge-base document an answer relied on.

    Attributes:
        doc_id: the id the document was ingested with.
        title: its title.
        url: its public URL, when it has one.
        score: retrieval score of its best passage (higher is better; fused rank score).
    """

    model_config = ConfigDict(frozen=True)

    doc_id: str
    title: str
    url: str | None = None
    score: float = 0.0


class Action(BaseModel):
    """A button offered with a reply (``id`` comes back in an inbound ``action``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    label: str


class OutboundKind(StrEnum):
    """What an outbound message is; channels may render kinds differently."""

    ANSWER = "answer"
    NOTICE = "notice"
    HANDOFF = "handoff"
    TYPING = "typing"
    AGENT = "agent"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class InboundMessage(BaseModel):
    """One customer message, normalized by a channel plugin.

    Attributes:
        event_id: the platform's id of this event (Slack ``event_id``, Telegram ``update_id``,
            Bot Framework Activity ``id``, Discord message id, e-mail ``Message-ID``); with
            ``channel`` and ``account`` it is the dedupe key.
        channel: channel plugin name.
        account: workspace, tenant, bot or mailbox id.
        session_key: the conversation this belongs to (see :func:`session_key`).
        sender: who wrote it.
        text: plain text (platform markup removed).
        attachments: files sent with it.
        reply_to: the platform id of the message this one answers, if any.
        thread_id: the platform thread id, if any.
        sent_at: when the platform says it was sent (UTC).
        locale: BCP 47 language tag, when known.
        is_direct: True for a direct (1:1) conversation.
        mentioned: True when the bot was mentioned (group chats).
        action: the id of a button the customer pressed, when this is a button press.
        raw: the verified platform payload, kept for channel-specific replies.
        trace_context: W3C Trace Context headers (``traceparent``, ``tracestate``) of the
            ingest span, and ``enqueued_ns`` (Unix time in nanoseconds when the message entered
            its lane), so the process that runs the turn continues the message's trace
            (:mod:`bot.tracing`). Empty when tracing is off.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    channel: str
    account: str
    session_key: SessionKey
    sender: Participant
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    thread_id: str | None = None
    sent_at: datetime = Field(default_factory=utcnow)
    locale: str | None = None
    is_direct: bool = True
    mentioned: bool = False
    action: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)
    trace_context: dict[str, str] = Field(default_factory=dict)

    @property
    def dedupe_key(self) -> tuple[str, str, str]:
        """``(channel, account, event_id)``: two messages with one key are one event."""
        return (self.channel, self.account, self.event_id)


class OutboundMessage(BaseModel):
    """One reply leaving the hub for a channel.

    Attributes:
        session_key: the conversation it goes to.
        text: CommonMark; each channel renders it for its platform.
        citations: documents the answer used, best first.
        actions: buttons to offer (rendered as plain text where a platform lacks buttons).
        reply_to: ``event_id`` of the customer message this answers (None for unprompted ones).
        kind: answer, notice, handoff, typing or agent (a human agent's reply).
        author: display name of a human agent for ``kind=agent``.
        idempotency_key: a stable key; a channel never delivers two messages with one key.
    """

    model_config = ConfigDict(frozen=True)

    session_key: SessionKey
    text: str
    citations: tuple[Citation, ...] = ()
    actions: tuple[Action, ...] = ()
    reply_to: str | None = None
    kind: OutboundKind = OutboundKind.ANSWER
    author: str | None = None
    idempotency_key: str | None = None


TALK_TO_HUMAN = Action(id="handoff.request", label="Talk to a person")
"""The standard button that asks for a human agent."""
