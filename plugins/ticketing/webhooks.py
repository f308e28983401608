"""Zendesk and Jira webhooks: verification (before parsing) and translation (pure functions).

Zendesk (https://developer.zendesk.com/documentation/webhooks/verifying/): headers
``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(signing secret, timestamp + body)) and
``X-Zendesk-Webhook-Signature-Timestamp``. The webhook subscribes to the ticket event types
(https://developer.zendesk.com/api-reference/webhooks/event-types/ticket-events/):
``zen:event-type:ticket.comment_added`` (``event.comment``: ``id``, ``body``, ``is_public``,
``author``: ``id``, ``name``, ``is_staff``) and ``zen:event-type:ticket.status_changed``
(``event.current``); ``id`` is the event id, ``detail.id`` the ticket id.

Jira (https://developer.atlassian.com/cloud/jira/platform/webhooks/): an admin webhook with a
secret is signed ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>``;
``X-Atlassian-Webhook-Identifier`` names the delivery (the same on retries). Events:
``comment_created`` (``comment``: ``id``, ``body``, ``author.displayName``,
``author.accountType``, ``jsdPublic``; ``issue.key``) and ``jira:issue_updated`` (a
``changelog`` item on ``status``; ``issue.fields.status.statusCategory.key``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from bot.errors import PayloadInvalid, SignatureInvalid

ZENDESK_SIGNATURE: Final = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP: Final = "X-Zendesk-Webhook-Signature-Timestamp"
JIRA_SIGNATURE: Final = "X-Hub-Signature"
JIRA_DELIVERY: Final = "X-Atlassian-Webhook-Identifier"

MAX_CLOCK_SKEW_S: Final = 300.0
"""A Zendesk signature timestamp further than this from now (seconds) is refused (replays)."""


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """Something a human did on a ticket that the customer's conversation must follow.

    Attributes:
        backend: ``zendesk`` or ``jira``.
        event_id: the product's id of the event (the dedupe key).
        ticket_id: the product's ticket id (Zendesk ``"123"``, Jira ``"SUP-12"``).
        kind: ``reply`` (a public reply by an agent) or ``solved``.
        author: the agent's display name (``reply``).
        text: the reply's plain text (``reply``).
    """

    backend: str
    event_id: str
    ticket_id: str
    kind: Literal["reply", "solved"]
    author: str | None = None
    text: str | None = None


def sign_zendesk(secret: str, timestamp: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, timestamp + body)): what Zendesk sends (and tests sign)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def verify_zendesk(secret: str, headers: Any, body: bytes, *, now: datetime | None = None) -> None:
    """Check a Zendesk webhook's signature and timestamp.

    Args:
        secret: the webhook's signing secret.
        headers: the request headers (case-insensitive mapping).
        body: the raw body.
        now: the current time (tests).

    Raises:
        bot.errors.SignatureInvalid: missing or wrong signature, or a stale timestamp.
    """
    signature = headers.get(ZENDESK_SIGNATURE, "")
    timestamp = headers.get(ZENDESK_TIMESTAMP, "")
    if not signature or not timestamp:
        raise SignatureInvalid("Zendesk webhook without signature headers")
    expected = sign_zendesk(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureInvalid("Zendesk webhook signature does not match")
    try:
        sent = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SignatureInvalid("Zendesk webhook timestamp is not ISO 8601") from exc
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    if abs(((now or datetime.now(UTC)) - sent).total_seconds()) > MAX_CLOCK_SKEW_S:
        raise SignatureInvalid("Zendesk webhook timestamp is too old or in the future")


def sign_jira(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, body)>``: what Jira sends (and tests sign)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_jira(secret: str, headers: Any, body: bytes) -> None:
    """Check a Jira webhook's ``X-Hub-Signature``.

    Raises:
        bot.errors.SignatureInvalid: missing or wrong signature.
    """
    signature = headers.get(JIRA_SIGNATURE, "")
    if not signature:
        raise SignatureInvalid("Jira webhook without X-Hub-Signature")
    if not hmac.compare_digest(sign_jira(secret, body).encode(), signature.encode()):
        raise SignatureInvalid("Jira webhook signature does not match")


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadInvalid("the webhook body is not JSON") from exc
    if not isinstance(data, dict):
        raise PayloadInvalid("the webhook body is not a JSON object")
    return data


def _str(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise PayloadInvalid(f"{field} is missing", field=field)
    return str(value)


def parse_zendesk(body: bytes) -> TicketEvent | None:
    """A verified Zendesk event as a :class:`TicketEvent`; None for events the hub ignores.

    Ignored: other event types, private comments (internal notes, the hub's own comments) and
    comments by end users.

    Raises:
        bot.errors.PayloadInvalid: not JSON, or a handled event without its ids.
    """
    data = _json(body)
    kind = data.get("type")
    event = data.get("event") or {}
    detail = data.get("detail") or {}
    if kind == "zen:event-type:ticket.comment_added":
        comment = event.get("comment") or {}
        author = comment.get("author") or {}
        if comment.get("is_public") is not True or author.get("is_staff") is not True:
            return None
        text = str(comment.get("body") or "").strip()
        if not text:
            return None
        return TicketEvent(
            "zendesk",
            _str(data.get("id"), "id"),
            _str(detail.get("id"), "detail.id"),
            "reply",
            author=str(author.get("name") or "Support team"),
            text=text,
        )
    if kind == "zen:event-type:ticket.status_changed":
        current = str(event.get("current") or detail.get("status") or "").lower()
        if current not in ("solved", "closed"):
            return None
        return TicketEvent(
            "zendesk", _str(data.get("id"), "id"), _str(detail.get("id"), "detail.id"), "solved"
        )
    return None


def _adf_text(node: Any) -> str:
    """Plain text of an Atlassian Document Format node (API v3 payloads), paragraphs apart."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    parts = [_adf_text(child) for child in node.get("content") or []]
    sep = "\n\n" if node.get("type") == "doc" else ""
    return sep.join(p for p in parts if p)


def parse_jira(body: bytes, delivery_id: str | None) -> TicketEvent | None:
    """A verified Jira event as a :class:`TicketEvent`; None for events the hub ignores.

    Ignored: internal comments (``jsdPublic`` not true), comments by customers, status
    changes not into the ``done`` category, other events.

    Raises:
        bot.errors.PayloadInvalid: not JSON, or a handled event without its ids.
    """
    data = _json(body)
    kind = data.get("webhookEvent")
    issue = data.get("issue") or {}
    if kind == "comment_created":
        comment = data.get("comment") or {}
        author = comment.get("author") or {}
        if comment.get("jsdPublic") is not True or author.get("accountType") == "customer":
            return None
        text = _adf_text(comment.get("body")).strip()
        if not text:
            return None
        event_id = delivery_id or f"comment:{_str(comment.get('id'), 'comment.id')}"
        return TicketEvent(
            "jira",
            event_id,
            _str(issue.get("key"), "issue.key"),
            "reply",
            author=str(author.get("displayName") or "Support team"),
            text=text,
        )
    if kind == "jira:issue_updated":
        items = (data.get("changelog") or {}).get("items") or []
        if not any(isinstance(i, dict) and i.get("field") == "status" for i in items):
            return None
        status = (issue.get("fields") or {}).get("status") or {}
        if (status.get("statusCategory") or {}).get("key") != "done":
            return None
        key = _str(issue.get("key"), "issue.key")
        event_id = delivery_id or f"status:{key}:{data.get('timestamp', '')}"
        return TicketEvent("jira", event_id, key, "solved")
    return None
