"""The hub's record of tickets kept in an external system, and of sync events already applied.

``ticket_links``: one row per ticket the hub opened in Zendesk or Jira. It holds what the hub
authorizes from (requester id and channel, session) so a customer's access never depends on a
field an agent or the customer can edit in the product, and it holds tickets whose creation was
deferred while the system was down (``state = pending``) until a process creates them. The
hub's reference ``SB-000042`` names a ticket before the product has given it an id.

``ticket_sync_events``: the ids of webhook events already applied (the dedupe of two-way sync,
exactly once across processes by the primary key).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

import sqlalchemy as sa

from bot.store.sql import JsonType, UtcDateTime

PENDING: Final = "pending"
"""``ticket_links.state`` of a ticket not yet created in the external system."""

CREATED: Final = "created"
"""``ticket_links.state`` of a ticket the external system holds (``remote_id`` set)."""

FAILED: Final = "failed"
"""``ticket_links.state`` of a ticket the product refused as invalid (kept, not retried)."""

_REF = re.compile(r"SB-(\d{1,18})")

metadata = sa.MetaData()

ticket_links = sa.Table(
    "ticket_links",
    metadata,
    sa.Column("num", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("remote_id", sa.String),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("session_key", sa.String),
    sa.Column("requester_id", sa.String, nullable=False),
    sa.Column("requester_channel", sa.String, nullable=False),
    sa.Column("requester", JsonType, nullable=False),
    sa.Column("subject", sa.String, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("backend", "remote_id", name="uq_ticket_links_remote"),
    sa.Index("ix_ticket_links_requester", "requester_channel", "requester_id", "num"),
    sa.Index("ix_ticket_links_due", "state", "next_attempt_at"),
)
"""One row per external ticket; ``num`` gives the reference ``SB-{num:06d}``."""

ticket_sync_events = sa.Table(
    "ticket_sync_events",
    metadata,
    sa.Column("backend", sa.String(16), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
)
"""Webhook events applied, by ``(backend, event_id)``."""


def format_ref(num: int) -> str:
    """The hub's reference of a link row: ``SB-`` and six digits (``SB-000042``)."""
    return f"SB-{num:06d}"


def parse_ref(ticket_id: str) -> int | None:
    """The row number of a hub reference, or None (``SB-000042`` → 42)."""
    match = _REF.fullmatch(ticket_id.strip())
    return int(match.group(1)) if match else None


def claim_due(now: datetime, lease_until: datetime, owner: str, num: int) -> sa.Update:
    """Compare-and-set of one pending row's lease: wins only when nobody holds it.

    Winning counts a creation attempt (``attempts + 1``), before the product is called.
    """
    c = ticket_links.c
    return (
        ticket_links.update()
        .where(
            c.num == num,
            c.state == PENDING,
            sa.or_(c.lease_until.is_(None), c.lease_until < now),
        )
        .values(
            lease_until=lease_until,
            lease_owner=owner,
            attempts=c.attempts + 1,
            updated_at=now,
        )
    )
