"""The REST API's wire models and pure translations to and from the envelope.

The contract (issue 2, "REST channel"; the OpenAPI document at ``/api/v1/openapi.json`` is
generated from these models):

- ``POST /api/v1/conversations/{conversation_id}/messages`` with :class:`PostMessage`
  → ``202`` :class:`MessageAccepted`.
- ``GET /api/v1/conversations/{conversation_id}/messages?after=SEQ&wait=SECONDS``
  → ``200`` :class:`MessagePage`.
- Errors answer :class:`ErrorBody` (``400`` naming the field, ``413``, ``401``, ``404``, ``503``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.envelope import InboundMessage, Participant, SessionKey, session_key
from bot.errors import PayloadInvalid
from bot.payload import check_text_bytes, parse_json_model
from bot.store.base import StoredMessage

CHANNEL = "rest"
ACCOUNT = "default"
MAX_ID_CHARS = 256


class RestUser(BaseModel):
    """The customer, as the calling system identifies them."""

    model_config = ConfigDict(title="User")

    id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="Stable customer id.")
    name: str | None = Field(default=None, max_length=MAX_ID_CHARS, description="Display name.")
    email: str | None = Field(default=None, max_length=MAX_ID_CHARS, description="E-mail.")


class PostMessage(BaseModel):
    """Body of ``POST .../messages``: one customer message."""

    model_config = ConfigDict(title="PostMessage")

    text: str = Field(min_length=1, description="Plain text (at most max_message_bytes UTF-8).")
    user: RestUser
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="Client-chosen id; a repeated id is accepted once. Generated when absent.",
    )


class MessageAccepted(BaseModel):
    """Answer of ``POST .../messages`` (HTTP 202): the message is stored and queued."""

    model_config = ConfigDict(title="MessageAccepted")

    event_id: str
    session_key: str
    duplicate: bool = Field(
        default=False, description="True when this event_id was accepted before (no new reply)."
    )


class CitationOut(BaseModel):
    """A knowledge-base document an answer used."""

    model_config = ConfigDict(title="Citation")

    doc_id: str = Field(description="The id the document was ingested with.")
    title: str
    url: str | None
    score: float


class MessageOut(BaseModel):
    """One message of a conversation, as the customer may see it."""

    model_config = ConfigDict(title="Message")

    seq: int = Field(ge=1, description="Per-conversation sequence number (1, 2, 3...).")
    role: Literal["customer", "bot", "agent", "system"]
    text: str = Field(description="CommonMark.")
    kind: str = Field(description="message, answer, notice, handoff or agent.")
    reply_to: str | None = Field(description="event_id of the customer message answered.")
    author: str | None = Field(default=None, description="Human agent's name (role agent).")
    citations: list[CitationOut]
    created_at: datetime = Field(description="ISO-8601, UTC.")


class MessagePage(BaseModel):
    """Answer of ``GET .../messages`` (HTTP 200)."""

    model_config = ConfigDict(title="MessagePage")

    mode: Literal["bot", "queued", "human", "closed"]
    messages: list[MessageOut]


class ErrorBody(BaseModel):
    """Every error answer."""

    model_config = ConfigDict(title="Error")

    error: str
    field: str | None = Field(default=None, description="Dotted path of the offending field.")


def rest_session_key(conversation_id: str, account: str = ACCOUNT) -> SessionKey:
    """The session key of a REST conversation: ``rest:{account}:{conversation_id}``.

    Raises:
        PayloadInvalid: when the id is empty or longer than 256 characters.
    """
    if not conversation_id or len(conversation_id) > MAX_ID_CHARS:
        raise PayloadInvalid(
            f"conversation_id must be 1..{MAX_ID_CHARS} characters", field="conversation_id"
        )
    return session_key(CHANNEL, account, chat=conversation_id)


def parse_post(data: bytes, *, max_message_bytes: int) -> PostMessage:
    """Validate a ``POST .../messages`` body.

    Args:
        data: the raw request body.
        max_message_bytes: limit of ``text`` in UTF-8 bytes.

    Raises:
        PayloadInvalid: malformed JSON (``field`` None) or a schema violation (``field`` is the
            dotted path, e.g. ``user.id``), status 400.
        PayloadTooLarge: ``text`` exceeds ``max_message_bytes`` (status 413, field ``text``).
    """
    body = parse_json_model(PostMessage, data)
    check_text_bytes(body.text, max_message_bytes)
    return body


def to_envelope(
    body: PostMessage,
    *,
    conversation_id: str,
    event_id: str,
    verified: bool,
    account: str = ACCOUNT,
    raw: dict[str, Any] | None = None,
) -> InboundMessage:
    """The envelope of one REST message (pure).

    Args:
        body: the validated body.
        conversation_id: from the URL path.
        event_id: ``body.event_id`` or one the server generated.
        verified: True when the caller authenticated with an API key (it vouches for
            ``user.id``).
        account: the API account (``default``).
        raw: the request body as JSON, kept on the envelope.

    Raises:
        PayloadInvalid: when ``conversation_id`` is invalid.
    """
    return InboundMessage(
        event_id=event_id,
        channel=CHANNEL,
        account=account,
        session_key=rest_session_key(conversation_id, account),
        sender=Participant(
            id=body.user.id, name=body.user.name, email=body.user.email, verified=verified
        ),
        text=body.text,
        is_direct=True,
        raw=raw if raw is not None else body.model_dump(mode="json"),
    )


def derived_event_id(data: bytes) -> str:
    """A deterministic event id for a recorded body without one (SHA-256 prefix)."""
    return hashlib.sha256(data).hexdigest()[:32]


def message_out(msg: StoredMessage) -> MessageOut:
    """A stored message as the API shows it (call only for customer-visible messages)."""
    return MessageOut(
        seq=msg.seq,
        role=msg.role.value,
        text=msg.text,
        kind=msg.kind,
        reply_to=msg.reply_to,
        author=msg.author,
        citations=[
            CitationOut(doc_id=c.doc_id, title=c.title, url=c.url, score=c.score)
            for c in msg.citations
        ],
        created_at=msg.created_at,
    )


def customer_visible(msg: StoredMessage) -> bool:
    """False for internal notes and typing indicators, which customers never see."""
    return not msg.internal and msg.kind not in ("note", "typing")
