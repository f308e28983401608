"""The :class:`bot.tools.TicketBackend` of an external system (Zendesk, Jira), kept durable.

:class:`SyncedTicketBackend` joins a :class:`~plugins.ticketing.remote.RemoteTickets` client
and the hub's ``ticket_links`` table (:mod:`plugins.ticketing.links`):

- ``create`` records the ticket (requester, session, transcript) in the hub's database, then
  creates it in the product. While the product is down (unreachable, 5xx, a long 429) the
  ticket stays ``pending`` under the hub's reference ``SB-000042`` and :meth:`sync_pending`
  creates it once the product is back: every process runs it, a lease (compare-and-set on the
  row) lets one at a time try a row, and the product is asked first whether it already has the
  reference (Zendesk's ``external_id``), so a ticket is created once.
- ``get``/``list_for`` know only tickets the hub opened: the requester and channel the tools
  authorize from come from the link row, never from the product.
- ``comment``/``set_status`` on a pending ticket change the row; the product gets them at
  creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.config import Settings
from bot.envelope import Participant, SessionKey, utcnow
from bot.errors import (
    BackendUnavailable,
    ConfigError,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
    SwitchboardError,
    Unauthorized,
)
from bot.store.base import Store
from bot.tools import BackendCheck, Ticket
from plugins.ticketing.links import (
    CREATED,
    FAILED,
    PENDING,
    claim_due,
    format_ref,
    metadata,
    parse_ref,
    ticket_links,
    ticket_sync_events,
)
from plugins.ticketing.local import PRIORITIES, STATUSES, check_choice, ticket_subject
from plugins.ticketing.remote import RemoteTicket, RemoteTickets

log = logging.getLogger(__name__)

DELIVERY_MEMORY_S: Final = 7 * 24 * 3600.0
"""Seconds a webhook event id is remembered for deduplication (7 days)."""

DEFERRABLE: Final = (BackendUnavailable, RateLimited, Unauthorized, Forbidden, NotFound)
"""Failures after which a creation is kept and retried later: the product is down or busy, or
its settings are wrong (credentials, service desk): an admin's fix releases the kept tickets.
Only a request the product refuses as invalid (:class:`~bot.errors.PayloadInvalid`) fails."""


class SyncedTicketBackend:
    """Tickets in an external product, linked to the hub's sessions (see the module).

    Args:
        remote: the product's client.
        engine: the hub database's engine (shared with the store; never disposed here).
        settings: ``ticket_sync_interval_s`` and ``ticket_sync_lease_s``.
    """

    def __init__(self, remote: RemoteTickets, engine: AsyncEngine, settings: Settings) -> None:
        self.remote = remote
        self.name = remote.name
        self._engine = engine
        self._settings = settings
        self._owner = secrets.token_hex(8)
        self._ready = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_store(
        cls, remote: RemoteTickets, store: Store, settings: Settings
    ) -> SyncedTicketBackend:
        """A backend on the SQL store's database.

        Raises:
            bot.errors.ConfigError: when the store is not SQL (no ``engine``).
        """
        engine = getattr(store, "engine", None)
        if not isinstance(engine, AsyncEngine):
            raise ConfigError(f"ticket_backend {remote.name} needs the SQL store")
        return cls(remote, engine, settings)

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the link tables if missing (also done on first use)."""
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                try:
                    async with self._engine.begin() as conn:
                        await conn.run_sync(metadata.create_all)
                except (OSError, DBAPIError) as exc:
                    raise BackendUnavailable(f"cannot open the ticket link tables: {exc}") from exc
                self._ready = True

    def start(self) -> None:
        """Run :meth:`sync_pending` every ``ticket_sync_interval_s`` (idempotent).

        Every process that serves HTTP starts it (:func:`plugins.ticketing.sync.setup`); a
        ticket kept by any process (a worker's escalation) is created by one of them.
        """
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._sync_loop(), name=f"tickets.sync.{self.name}"
            )

    async def close(self) -> None:
        """Stop the sync loop and close the product's client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.remote.close()

    async def check(self) -> BackendCheck:
        """The product's reachability and authorization (``switchboard doctor``)."""
        return await self.remote.check()

    # --- TicketBackend ----------------------------------------------------------------------

    async def create(
        self,
        *,
        subject: str,
        description: str,
        requester: Participant,
        channel: str,
        session_key: SessionKey | None,
        priority: str = "normal",
    ) -> Ticket:
        """Open the ticket in the product, or keep it pending when the product is down.

        Returns:
            The product's ticket, or (``queued=True``) the pending one under ``SB-…``.

        Raises:
            bot.errors.PayloadInvalid: for an empty subject or an unknown priority.
            bot.errors.BackendUnavailable: when the hub's own database fails.
        """
        subject = ticket_subject(subject)
        check_choice(priority, PRIORITIES, "priority")
        now = utcnow()
        values: dict[str, Any] = {
            "backend": self.name,
            "state": PENDING,
            "session_key": session_key,
            "requester_id": requester.id,
            "requester_channel": channel,
            "requester": requester.model_dump(mode="json"),
            "subject": subject,
            "description": description,
            "priority": priority,
            "status": "open",
            "attempts": 1,  # this call's attempt, counted before the product is called
            "next_attempt_at": now,
            "lease_until": now + timedelta(seconds=self._settings.ticket_sync_lease_s),
            "lease_owner": self._owner,
            "created_at": now,
            "updated_at": now,
        }
        async with self._connect() as conn:
            key = (await conn.execute(ticket_links.insert().values(values))).inserted_primary_key
        assert key is not None
        row = {"num": int(key[0]), **values}
        created = await self._try_create(row)
        if created is None:
            return _ticket(row, None)
        return _ticket({**row, "state": CREATED, "remote_id": created.id}, created)

    async def get(self, ticket_id: str) -> Ticket | None:
        """A ticket the hub opened, by the product's id or the hub's ``SB-`` reference.

        Raises:
            bot.errors.BackendUnavailable: when the product cannot be reached.
        """
        row = await self._row(ticket_id)
        if row is None:
            return None
        if row["state"] != CREATED:
            return _ticket(row, None)
        remote = await self.remote.get(row["remote_id"])
        return None if remote is None else _ticket(row, remote)

    async def list_for(self, requester_id: str, channel: str, limit: int = 20) -> list[Ticket]:
        """The requester's tickets opened through the hub, newest first."""
        c = ticket_links.c
        async with self._connect() as conn:
            rows = await conn.execute(
                sa.select(ticket_links)
                .where(
                    c.backend == self.name,
                    c.requester_channel == channel,
                    c.requester_id == requester_id,
                )
                .order_by(c.num.desc())
                .limit(limit)
            )
            found = [dict(r._mapping) for r in rows]
        tickets = []
        for row in found:
            if row["state"] != CREATED:
                tickets.append(_ticket(row, None))
            elif (remote := await self.remote.get(row["remote_id"])) is not None:
                tickets.append(_ticket(row, remote))
        return tickets

    async def comment(self, ticket_id: str, author: str, text: str) -> Ticket:
        """Add an internal comment (a pending ticket gets it in its description).

        Raises:
            bot.errors.NotFound: when the hub did not open this ticket.
        """
        row = await self._must_row(ticket_id)
        if row["state"] != CREATED:
            description = f"{row['description']}\n\n{author}: {text}"
            await self._update(row["num"], description=description)
        else:
            await self.remote.comment(row["remote_id"], author, text)
        return await self._must_get(ticket_id)

    async def set_status(self, ticket_id: str, status: str) -> Ticket:
        """Change the status (kept on the row until a pending ticket is created).

        Raises:
            bot.errors.NotFound: when the hub did not open this ticket.
            bot.errors.PayloadInvalid: for an unknown status.
        """
        check_choice(status, STATUSES, "status")
        row = await self._must_row(ticket_id)
        if row["state"] == CREATED:
            await self.remote.set_status(row["remote_id"], status)
        await self._update(row["num"], status=status)
        return await self._must_get(ticket_id)

    # --- two-way sync ------------------------------------------------------------------------

    async def session_of(self, remote_id: str) -> tuple[SessionKey, str] | None:
        """The session and hub reference of a ticket the product names (webhooks)."""
        row = await self._row(remote_id)
        if row is None or row["session_key"] is None:
            return None
        return SessionKey(row["session_key"]), format_ref(row["num"])

    async def first_delivery(self, event_id: str) -> bool:
        """Record a webhook event id; False when it was recorded before (a retry, a replay)."""
        try:
            async with self._connect() as conn:
                await conn.execute(
                    ticket_sync_events.insert().values(
                        backend=self.name, event_id=event_id[:200], received_at=utcnow()
                    )
                )
        except IntegrityError:
            return False
        return True

    async def forget_delivery(self, event_id: str) -> None:
        """Drop a recorded event id (applying it failed: the product's retry must apply it)."""
        c = ticket_sync_events.c
        async with self._connect() as conn:
            await conn.execute(
                ticket_sync_events.delete().where(
                    c.backend == self.name, c.event_id == event_id[:200]
                )
            )

    async def forget_old_deliveries(self, older_than_s: float = DELIVERY_MEMORY_S) -> int:
        """Drop recorded event ids older than ``older_than_s`` seconds; how many were dropped.

        Products retry a delivery for hours, not weeks: an id older than that never returns.
        """
        c = ticket_sync_events.c
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        async with self._connect() as conn:
            result = await conn.execute(
                ticket_sync_events.delete().where(c.backend == self.name, c.received_at < cutoff)
            )
        return int(result.rowcount or 0)

    async def sync_pending(self, limit: int = 50) -> int:
        """Create due pending tickets in the product; how many were created.

        A row is tried by one process at a time (its lease); a failure puts the row back
        with the next attempt ``ticket_sync_interval_s`` later (or the 429's ``Retry-After``).
        """
        c = ticket_links.c
        now = utcnow()
        async with self._connect() as conn:
            due = [
                dict(r._mapping)
                for r in await conn.execute(
                    sa.select(ticket_links)
                    .where(c.backend == self.name, c.state == PENDING, c.next_attempt_at <= now)
                    .order_by(c.num)
                    .limit(limit)
                )
            ]
        created = 0
        lease = now + timedelta(seconds=self._settings.ticket_sync_lease_s)
        for row in due:
            async with self._connect() as conn:
                won = await conn.execute(claim_due(now, lease, self._owner, row["num"]))
            if won.rowcount != 1:
                continue
            try:
                if await self._try_create({**row, "attempts": row["attempts"] + 1}) is not None:
                    created += 1
            except PayloadInvalid:
                continue  # refused by the product as invalid: kept as failed, not retried
        return created

    # --- helpers ------------------------------------------------------------------------------

    async def _try_create(self, row: dict[str, Any]) -> RemoteTicket | None:
        """Create the row's ticket (we hold its lease); None when deferred.

        ``row["attempts"]`` counts this try.
        """
        ref = format_ref(row["num"])
        requester = Participant.model_validate(row["requester"])
        try:
            # ``attempts`` counts this one (stored with the insert or the lease claim, before the
            # product is called): after an earlier attempt, which may have created the ticket
            # and died before the row said so, look it up by its reference first.
            remote = await self.remote.find(ref) if row["attempts"] > 1 else None
            if remote is None:
                remote = await self.remote.create(
                    subject=row["subject"],
                    description=row["description"],
                    requester=requester,
                    priority=row["priority"],
                    ref=ref,
                )
        except PayloadInvalid:
            await self._update(row["num"], state=FAILED, lease_until=None, lease_owner=None)
            log.warning("tickets.create_refused", extra={"backend": self.name, "ref": ref})
            raise
        except DEFERRABLE as exc:
            wait = exc.retry_after if isinstance(exc, RateLimited) else 0.0
            delay = max(wait, self._settings.ticket_sync_interval_s)
            await self._update(
                row["num"],
                next_attempt_at=utcnow() + timedelta(seconds=delay),
                lease_until=None,
                lease_owner=None,
            )
            log.warning(
                "tickets.create_deferred",
                extra={"backend": self.name, "ref": ref, "error": type(exc).__name__},
            )
            return None
        await self._update(
            row["num"], state=CREATED, remote_id=remote.id, lease_until=None, lease_owner=None
        )
        if row["status"] != "open":  # solved or closed in the hub while the product was down
            try:
                await self.remote.set_status(remote.id, row["status"])
            except SwitchboardError:
                log.warning(
                    "tickets.status_sync_failed",
                    exc_info=True,
                    extra={"backend": self.name, "ticket_id": remote.id},
                )
        log.info(
            "tickets.created",
            extra={
                "backend": self.name,
                "ref": ref,
                "ticket_id": remote.id,
                "session_key": row["session_key"],
            },
        )
        return remote

    async def _sync_loop(self) -> None:
        interval = self._settings.ticket_sync_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync_pending()
                await self.forget_old_deliveries()
            except SwitchboardError:
                log.warning("tickets.sync_failed", exc_info=True, extra={"backend": self.name})
            except Exception:  # a task boundary: log and keep syncing
                log.exception("tickets.sync_crashed", extra={"backend": self.name})

    async def _row(self, ticket_id: str) -> dict[str, Any] | None:
        c = ticket_links.c
        num = parse_ref(ticket_id)
        where = c.num == num if num is not None else c.remote_id == ticket_id.strip()
        async with self._connect() as conn:
            found = (
                await conn.execute(sa.select(ticket_links).where(c.backend == self.name, where))
            ).first()
        return None if found is None else dict(found._mapping)

    async def _must_row(self, ticket_id: str) -> dict[str, Any]:
        row = await self._row(ticket_id)
        if row is None:
            raise NotFound(f"no ticket {ticket_id!r}")
        return row

    async def _must_get(self, ticket_id: str) -> Ticket:
        ticket = await self.get(ticket_id)
        if ticket is None:
            raise NotFound(f"no ticket {ticket_id!r}")
        return ticket

    async def _update(self, num: int, **values: Any) -> None:
        async with self._connect() as conn:
            await conn.execute(
                ticket_links.update()
                .where(ticket_links.c.num == num)
                .values(updated_at=utcnow(), **values)
            )

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        await self.open()
        try:
            async with self._engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except (OSError, DBAPIError) as exc:
            raise BackendUnavailable(f"ticket link database failed: {exc}") from exc


def _ticket(row: dict[str, Any], remote: RemoteTicket | None) -> Ticket:
    """The hub's view: identity from the link row, content from the product when created."""
    created_at: datetime = row["created_at"]
    return Ticket(
        id=remote.id if remote is not None else format_ref(row["num"]),
        subject=remote.subject if remote is not None else row["subject"],
        description=remote.description if remote is not None else row["description"],
        status=remote.status if remote is not None else row["status"],
        priority=remote.priority if remote is not None else row["priority"],
        requester_id=row["requester_id"],
        requester_channel=row["requester_channel"],
        session_key=row["session_key"],
        comments=remote.comments if remote is not None else (),
        created_at=remote.created_at if remote is not None else created_at,
        url=remote.url if remote is not None else None,
        queued=remote is None and row["state"] == PENDING,
    )
