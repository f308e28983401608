"""How the console API shows conversations and messages (JSON shapes).

Customers are shown by a name a person can read: the name the channel gave, else the e-mail
address when the channel verified the identity, else a label such as ``Web chat visitor
3f2a`` (the channel and four hex digits of a hash of the platform id, stable per customer). A
platform id (often 32 hex digits, a UUID or a phone number) is never the label.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from bot.desk.markdown import render_markdown
from bot.envelope import Participant, utcnow
from bot.store.base import Conversation, StoredMessage

CHANNEL_LABELS = {
    "webchat": "Web chat",
    "rest": "API",
    "email": "E-mail",
    "slack": "Slack",
    "teams": "Teams",
    "telegram": "Telegram",
    "discord": "Discord",
    "memory": "Test chat",
}
"""How channel plugin names are shown; others are shown capitalized."""

# Hex tokens of 16+ digits, UUIDs, and numbers: platform ids rather than names.
_OPAQUE = re.compile(r"^(?:[0-9a-fA-F]{16,}|[0-9a-fA-F-]{32,36}|\+?[0-9 ()-]{6,})$")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of a time, or None."""
    return value.isoformat() if value is not None else None


def channel_label(channel: str) -> str:
    """A channel's name as people read it (``webchat`` → ``Web chat``)."""
    return CHANNEL_LABELS.get(channel, channel.replace("_", " ").capitalize())


def customer_display_name(customer: Participant, channel: str) -> str:
    """The label the console shows for a customer (see the module docstring)."""
    name = (customer.name or "").strip()
    if name and not _OPAQUE.match(name):
        return name
    if customer.email and customer.verified:
        return customer.email
    tag = hashlib.sha256(customer.id.encode()).hexdigest()[:4]
    return f"{channel_label(channel)} visitor {tag}"


def conversation_json(conv: Conversation) -> dict[str, Any]:
    """A conversation as the console API returns it (``waiting_s`` in seconds, or null).

    ``customer.display_name`` is the label to show; ``customer.email`` is given only when the
    channel verified the identity (``verified``), so the console never shows a self-asserted
    address as if it were known.
    """
    waiting = None
    if conv.queued_at is not None:
        waiting = max(0.0, (utcnow() - conv.queued_at).total_seconds())
    customer = conv.customer
    return {
        "session_key": conv.session_key,
        "channel": conv.channel,
        "channel_label": channel_label(conv.channel),
        "account": conv.account,
        "customer": {
            "id": customer.id,
            "name": customer.name,
            "display_name": customer_display_name(customer, conv.channel),
            "email": customer.email if customer.verified else None,
            "verified": customer.verified,
        },
        "mode": conv.mode.value,
        "assigned_agent": conv.assigned_agent,
        "ticket_id": conv.ticket_id,
        "escalation_reason": conv.escalation_reason,
        "queued_at": iso(conv.queued_at),
        "waiting_s": waiting,
        "last_seq": conv.last_seq,
        "created_at": iso(conv.created_at),
        "updated_at": iso(conv.updated_at),
    }


def message_json(msg: StoredMessage) -> dict[str, Any]:
    """A stored message as the console API returns it (notes have ``internal: true``).

    ``html`` is the text rendered as sanitized Markdown (:func:`bot.desk.markdown.render_markdown`)
    for the bot's, agents' and system messages; null for customers' messages, which the console
    shows as plain text.
    """
    html = None if msg.role.value == "customer" else render_markdown(msg.text)
    return {
        "seq": msg.seq,
        "role": msg.role.value,
        "kind": msg.kind,
        "text": msg.text,
        "html": html,
        "author": msg.author,
        "internal": msg.internal,
        "reply_to": msg.reply_to,
        "citations": [
            {"doc_id": c.doc_id, "title": c.title, "url": c.url, "score": c.score}
            for c in msg.citations
        ],
        "created_at": msg.created_at.isoformat(),
    }
