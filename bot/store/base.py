"""The :class:`Store` protocol and its records.

The store is the hub's memory of record: every accepted customer message is written before the
platform is acknowledged, with its full envelope, so a restart re-enqueues what was accepted but
not yet answered. Writes are group-committed (many callers, one transaction every
``store_batch_ms``) so durability does not cost throughput.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from bot.envelope import Citation, InboundMessage, OutboundMessage, Participant, SessionKey
from bot.store.routing_records import (
    AgentStatus,
    BreachKind,
    Presence,
    Priority,
    Routing,
    SlaPolicy,
    SlaTimer,
    Team,
)


class Role(StrEnum):
    """Who wrote a stored message."""

    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class SessionMode(StrEnum):
    """Who answers a session: ``bot`` → ``queued`` → ``human`` → ``bot`` (or ``closed``)."""

    BOT = "bot"
    QUEUED = "queued"
    HUMAN = "human"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append (the store assigns ``seq`` and ``created_at``).

    Attributes:
        session_key: the conversation.
        role: author role.
        text: CommonMark text.
        kind: ``message`` for customer text; ``answer``, ``notice``, ``handoff``, ``agent``,
            ``note`` (internal, never shown to the customer) for the rest.
        event_id: the customer's event id (customer messages), or the idempotency key of an
            outbound message; unique per session when set.
        reply_to: ``event_id`` of the customer message an answer replies to.
        citations: documents an answer used.
        author: human agent name for ``agent`` and ``note`` messages.
        internal: True for notes that only agents see.
        inbound: the full envelope of a customer message (kept for recovery).
    """

    session_key: SessionKey
    role: Role
    text: str
    kind: str = "message"
    event_id: str | None = None
    reply_to: str | None = None
    citations: tuple[Citation, ...] = ()
    author: str | None = None
    internal: bool = False
    inbound: InboundMessage | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored, with its per-session sequence number (1, 2, 3...).

    ``fresh`` is False when :meth:`Store.append` found the idempotency key stored before and
    returned the earlier row instead of writing (the caller must not send it again).
    """

    session_key: SessionKey
    seq: int
    role: Role
    text: str
    kind: str
    event_id: str | None
    reply_to: str | None
    citations: tuple[Citation, ...]
    author: str | None
    internal: bool
    created_at: datetime
    fresh: bool = True


@dataclass(frozen=True, slots=True)
class Conversation:
    """One session's record.

    Attributes:
        session_key: its key.
        channel: channel plugin name.
        account: workspace/tenant/bot/mailbox id.
        customer: the customer as last seen.
        mode: who answers it now.
        assigned_agent: the human agent who owns it (mode ``human``).
        ticket_id: the ticket opened at escalation, if any.
        escalation_reason: why it was escalated (``customer_request``, ``agent_tool``,
            ``no_answer``, ``turn_failed``...).
        queued_at: when it entered the human queue.
        last_seq: the highest message ``seq``.
        created_at: first message time.
        updated_at: last change.
        meta: channel-specific data (e.g. a Teams ConversationReference).
    """

    session_key: SessionKey
    channel: str
    account: str
    customer: Participant
    mode: SessionMode
    assigned_agent: str | None
    ticket_id: str | None
    escalation_reason: str | None
    queued_at: datetime | None
    last_seq: int
    created_at: datetime
    updated_at: datetime
    meta: dict[str, Any] = field(default_factory=dict)


class AgentRole(StrEnum):
    """What a console account may do (see :data:`bot.auth.ROLE_PERMISSIONS`).

    ``admin``: everything, including managing agents and settings; ``agent``: read, claim,
    reply, note, resolve; ``viewer``: read only.
    """

    ADMIN = "admin"
    AGENT = "agent"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class AgentAccount:
    """A human agent who can log in to the console.

    Attributes:
        name: login name (unique).
        display_name: name shown to customers.
        password_hash: an argon2id PHC string (never the password).
        active: False disables login.
        role: what the account may do in the console.
    """

    name: str
    display_name: str
    password_hash: str
    active: bool = True
    role: AgentRole = AgentRole.AGENT


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbound message a platform did not take, waiting in the outbox to be sent again.

    Attributes:
        id: increasing row id; entries of one session are sent in ``id`` order.
        session_key: the conversation it goes to.
        channel: the channel plugin that sends it (``channel_of(session_key)``).
        message: the envelope, exactly as :meth:`bot.hub.Hub.deliver` got it.
        attempts: sends tried by the outbox loop so far (not counting the hub's inline
            retries before the entry was put).
        next_attempt_at: when it is due (UTC); while claimed, when the claim's lease ends.
        created_at: when it was put (UTC); its age bounds the retries (``outbox_max_age_s``).
        last_error: the last send error (``repr``), None for an entry queued behind another.
        claim: the lease token of the process sending it now (None when not claimed).
    """

    id: int
    session_key: SessionKey
    channel: str
    message: OutboundMessage
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None
    claim: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """The outbox at a glance: ``depth`` entries, the earliest due at ``next_attempt_at``."""

    depth: int
    next_attempt_at: datetime | None


class Store(Protocol):
    """Conversations, messages, agent accounts and the audit log."""

    async def open(self) -> None:
        """Create tables if missing and start the group-commit writer."""

    async def close(self) -> None:
        """Flush pending writes and close connections."""

    async def append_inbound(self, msg: InboundMessage) -> StoredMessage | None:
        """Persist a customer message (and its conversation) durably.

        Returns:
            The stored message, or None when ``(channel, account, event_id)`` was stored
            before (a duplicate; nothing is written).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """

    async def append(self, messages: Sequence[NewMessage]) -> list[StoredMessage]:
        """Persist bot, agent, system messages and notes, in order; seqs are assigned.

        A message whose ``event_id`` (idempotency key) is already stored for its session is
        not written again; the stored one is returned instead.
        """

    async def mark_handled(self, session_key: SessionKey, event_ids: Sequence[str]) -> None:
        """Record that turns covering these customer messages finished (group-committed)."""

    async def unhandled(self) -> list[InboundMessage]:
        """Customer messages accepted but not yet handled, oldest first (for recovery)."""

    async def messages(
        self,
        session_key: SessionKey,
        *,
        after_seq: int = 0,
        limit: int = 200,
        include_internal: bool = False,
    ) -> list[StoredMessage]:
        """Messages of a session with ``seq > after_seq``, oldest first, at most ``limit``."""

    async def recent(self, session_key: SessionKey, limit: int) -> list[StoredMessage]:
        """The ``limit`` newest messages of a session (internal notes excluded), oldest first."""

    async def conversation(self, session_key: SessionKey) -> Conversation | None:
        """The conversation record, or None when the session never wrote."""

    async def conversations(
        self, *, modes: Sequence[SessionMode] | None = None, limit: int = 200
    ) -> list[Conversation]:
        """Conversations, newest activity first, optionally filtered by mode."""

    async def set_mode(
        self,
        session_key: SessionKey,
        mode: SessionMode,
        *,
        expect: Sequence[SessionMode] | None = None,
        agent: str | None = None,
        reason: str | None = None,
        ticket_id: str | None = None,
    ) -> Conversation:
        """Change who answers a session (compare-and-set when ``expect`` is given).

        Raises:
            bot.errors.NotFound: when the session does not exist.
            bot.errors.Conflict: when the current mode is not in ``expect``.
        """

    async def set_meta(self, session_key: SessionKey, key: str, value: Any) -> None:
        """Store one channel-specific value on a conversation (JSON-serializable)."""

    async def create_agent(self, account: AgentAccount) -> None:
        """Create a human agent account.

        Raises:
            bot.errors.Conflict: when the name is taken.
        """

    async def agent(self, name: str) -> AgentAccount | None:
        """An agent account by login name."""

    async def update_agent(self, account: AgentAccount) -> None:
        """Replace the agent account with the same name (hash, display name, active, role).

        Raises:
            bot.errors.NotFound: when no agent has that name.
        """

    async def list_agents(self) -> list[AgentAccount]:
        """Every agent account, by login name."""

    async def audit(
        self, actor: str, action: str, session_key: SessionKey | None, detail: dict[str, Any]
    ) -> None:
        """Append an audit record (who did what to which session, and when).

        The SQL store chains it (:mod:`bot.store.audit`): ``actor`` and ``action`` are kept as
        long as the log, so they never name a customer; ``session_key`` and ``detail`` are
        erased with the customer.
        """

    async def outbox_put(
        self, message: OutboundMessage, *, error: str | None, next_attempt_at: datetime
    ) -> OutboxEntry:
        """Put an undelivered message in the outbox, behind its session's earlier entries.

        Args:
            message: the envelope to send again (its ``session_key`` names the session).
            error: why the last send failed (``repr``), None when queued behind others:
                then the session's earlier entries that are not claimed become due now.
            next_attempt_at: when to try it first (UTC).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """

    async def outbox_claim(self, *, limit: int, lease_s: float) -> list[OutboxEntry]:
        """Claim due entries to send: at most one per session, the oldest (FIFO per session).

        A claimed entry is leased for ``lease_s`` seconds (``next_attempt_at`` moves to the
        lease's end and ``claim`` holds a fresh token), so no other process claims it
        meanwhile; an entry whose claimer died becomes due again when the lease ends. A later
        entry of a session is never claimed while an earlier one exists.

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """

    async def outbox_done(self, entry: OutboxEntry) -> bool:
        """Delete a claimed entry (sent, or given up); False when the claim was lost."""

    async def outbox_reschedule(
        self, entry: OutboxEntry, *, error: str, next_attempt_at: datetime
    ) -> bool:
        """Release a claimed entry after a failed send: one more attempt, due at the given time.

        Returns:
            False when the claim was lost (its lease ended and another process took it).
        """

    async def outbox_pending(self, session_key: SessionKey) -> bool:
        """True when the session has entries in the outbox (cheap: asked before each send)."""

    async def outbox_status(self) -> OutboxStatus:
        """How many entries wait, and when the earliest is due."""

    async def outbox(
        self, session_key: SessionKey | None = None, *, limit: int = 200
    ) -> list[OutboxEntry]:
        """Entries waiting, oldest first, of one session or of all."""

    # --- assignment and SLAs (bot.store.assignment, bot.store.sla) ------------------------------

    async def save_team(self, team: Team) -> None:
        """Create or replace a team and its member list."""

    async def delete_team(self, name: str) -> None:
        """Delete a team; its conversations go to the general queue.

        Raises:
            bot.errors.NotFound: no team has that name.
        """

    async def teams(self) -> list[Team]:
        """Every team with its members, by name."""

    async def agent_statuses(self) -> list[AgentStatus]:
        """Presence, capacity and load of every agent with a status row, by name."""

    async def set_agent_status(
        self,
        name: str,
        *,
        presence: Presence | None = None,
        capacity: int | None = None,
        clear_capacity: bool = False,
        seen: bool = False,
    ) -> None:
        """Change an agent's presence, capacity or ``seen_at`` (row created when missing)."""

    async def touch_agents(self, names: Sequence[str]) -> None:
        """Record that these agents have a console session open now."""

    async def expire_presence(self, seen_before: datetime) -> list[str]:
        """Set ``offline`` the agents not seen since ``seen_before``; their names."""

    async def set_routing(
        self,
        session_key: SessionKey,
        *,
        team: str | None = None,
        keep_team: bool = False,
        priority: Priority | None = None,
    ) -> Routing:
        """Put a conversation in a team's queue and/or set its priority."""

    async def routings(
        self, keys: Sequence[SessionKey] | None = None
    ) -> dict[SessionKey, Routing]:
        """Team and priority of conversations (all, or those of ``keys``)."""

    async def assign(
        self,
        session_key: SessionKey,
        agent: str,
        *,
        expect: Sequence[SessionMode],
        default_capacity: int,
        require_online: bool,
        expect_agent: str | None = None,
    ) -> Conversation:
        """Give a session to ``agent`` within its capacity, atomically across processes.

        Raises:
            bot.errors.NotFound: no such session.
            bot.errors.Conflict: the session is not in ``expect``; ``AtCapacity`` and
                ``NotOnline`` (:mod:`bot.store.assignment`) for the agent's state.
        """

    async def save_sla_policy(self, policy: SlaPolicy) -> None:
        """Create or replace an SLA policy (by name)."""

    async def delete_sla_policy(self, name: str) -> None:
        """Delete an SLA policy.

        Raises:
            bot.errors.NotFound: no policy has that name.
        """

    async def sla_policies(self) -> list[SlaPolicy]:
        """Every SLA policy, by name."""

    async def start_sla_timer(self, timer: SlaTimer) -> None:
        """Start (or restart) a conversation's SLA clock."""

    async def sla_responded(self, session_key: SessionKey) -> None:
        """Record the first agent reply of the running clock."""

    async def stop_sla_timer(self, session_key: SessionKey) -> None:
        """Stop a running clock (resolve or close)."""

    async def sla_timers(
        self, keys: Sequence[SessionKey] | None = None, *, running: bool = False
    ) -> list[SlaTimer]:
        """SLA timers of ``keys`` (or all), only the running ones with ``running``."""

    async def due_sla_breaches(self, now: datetime) -> list[tuple[SlaTimer, BreachKind]]:
        """Running timers past a due time whose breach is not recorded yet."""

    async def record_sla_breach(self, session_key: SessionKey, kind: BreachKind) -> bool:
        """Record a breach once; False when recorded already or the clock stopped."""
