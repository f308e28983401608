"""The outbox: outbound messages a platform did not take, until they are sent or given up.

Writes are rare (only failed sends) and run as serial calls on the group-commit writer, so
SQLite keeps one writing connection. Claims are compare-and-set: one ``UPDATE ... RETURNING`` of
due session heads, whose subquery takes ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
processes never claim one entry (a row another claim holds is skipped; a row it claimed
meanwhile fails the ``next_attempt_at <= now`` recheck).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from bot.envelope import OutboundMessage, SessionKey, channel_of
from bot.store.base import OutboxEntry, OutboxStatus
from bot.store.batcher import Call, WriteBatcher
from bot.store.postgres import KEYS_ARRAY, BatchedLookup
from bot.store.rows import outbox_entry_from_row, utc
from bot.store.sqlite import SqliteQuery
from bot.store.tables import outbox

_OUTBOX_PENDING_ANY: Final = (
    sa.select(outbox.c.session_key)
    .distinct()
    .where(outbox.c.session_key == sa.any_(sa.bindparam("b_keys", type_=KEYS_ARRAY)))
)
"""Which of many sessions have outbox entries (server databases, one prepared statement)."""
_SQLITE_OUTBOX_PENDING: Final = SqliteQuery(
    sa.select(outbox.c.id).where(outbox.c.session_key == sa.bindparam("b_session_key")).limit(1)
)


def _outbox_sessions(keys: list[SessionKey], conn: sa.Connection) -> dict[SessionKey, bool]:
    return dict.fromkeys(conn.execute(_OUTBOX_PENDING_ANY, {"b_keys": keys}).scalars(), True)


class OutboxMixin(WriteBatcher):
    """The outbox part of :class:`~bot.store.sql.SqlStore`."""

    def _init_outbox(self) -> None:
        """Set up the coalesced ``outbox_pending`` lookups (server databases)."""
        self._outbox_reads: BatchedLookup[bool] = BatchedLookup(
            self._read, _outbox_sessions, False, "store-outbox-reads"
        )

    async def outbox_put(
        self, message: OutboundMessage, *, error: str | None, next_attempt_at: datetime
    ) -> OutboxEntry:
        """Put an undelivered message in the outbox, behind its session's earlier entries.

        Args:
            message: the envelope to send again (its ``session_key`` names the session).
            error: why the last send failed (``repr``), None when queued behind others:
                then the session's earlier entries that are not claimed become due now (the
                hub answers a session whose customer just reached it: its platform is likely
                back, and the customer should not wait out a long backoff).
            next_attempt_at: when to try it first (UTC).

        Returns:
            The entry as stored (``attempts`` 0, ``created_at`` now).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        row: dict[str, Any] = {
            "session_key": message.session_key,
            "channel": channel_of(message.session_key),
            "message": message,
            "attempts": 0,
            "next_attempt_at": next_attempt_at,
            "last_error": error,
            "claim": None,
        }

        def run(conn: sa.Connection, now: datetime) -> OutboxEntry:
            if error is None:  # queued behind: the session's earlier entries are due now
                conn.execute(
                    outbox.update()
                    .where(
                        outbox.c.session_key == message.session_key,
                        outbox.c.claim.is_(None),
                        outbox.c.next_attempt_at > now,
                    )
                    .values(next_attempt_at=now)
                )
            result = conn.execute(outbox.insert().values(**row, created_at=now))
            (new_id,) = result.inserted_primary_key or (None,)
            assert new_id is not None
            return OutboxEntry(
                id=int(new_id),
                session_key=message.session_key,
                channel=row["channel"],
                message=message,
                attempts=0,
                next_attempt_at=next_attempt_at,
                created_at=now,
                last_error=error,
            )

        entry: OutboxEntry = await self._submit(Call(self._future(), run))
        return entry

    async def outbox_claim(self, *, limit: int, lease_s: float) -> list[OutboxEntry]:
        """Claim due entries to send: at most one per session, its oldest (FIFO per session).

        A claimed entry is leased for ``lease_s`` seconds: ``next_attempt_at`` moves to the
        lease's end and ``claim`` holds a fresh token, so no other process claims it meanwhile,
        and an entry whose claimer died is due again when the lease ends. A later entry of a
        session is never claimed while an earlier one exists.

        Args:
            limit: most entries to claim.
            lease_s: the lease, in seconds (longer than one send may take).

        Returns:
            The claimed entries, oldest first.

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        token = secrets.token_hex(8)

        def run(conn: sa.Connection, now: datetime) -> list[OutboxEntry]:
            o, p = outbox.alias("o"), outbox.alias("p")
            earlier = sa.exists().where(p.c.session_key == o.c.session_key, p.c.id < o.c.id)
            due = (
                sa.select(o.c.id)
                .where(o.c.next_attempt_at <= now, ~earlier)
                .order_by(o.c.next_attempt_at, o.c.id)
                .limit(limit)
            )
            if not self._raw_sqlite:
                due = due.with_for_update(of=o, skip_locked=True)
            stmt = (
                outbox.update()
                .where(outbox.c.id.in_(due), outbox.c.next_attempt_at <= now)
                .values(next_attempt_at=now + timedelta(seconds=lease_s), claim=token)
                .returning(*outbox.c)
            )
            return sorted(
                (outbox_entry_from_row(r) for r in conn.execute(stmt)), key=lambda e: e.id
            )

        if limit <= 0:
            return []
        entries: list[OutboxEntry] = await self._submit(Call(self._future(), run))
        return entries

    async def outbox_done(self, entry: OutboxEntry) -> bool:
        """Delete an entry (sent, or given up).

        Returns:
            False when it was claimed and the claim was lost (the lease ended and another
            process took it), or it was gone already.
        """

        def run(conn: sa.Connection, now: datetime) -> bool:
            stmt = outbox.delete().where(outbox.c.id == entry.id, outbox.c.claim == entry.claim)
            return bool(conn.execute(stmt).rowcount == 1)

        done: bool = await self._submit(Call(self._future(), run))
        return done

    async def outbox_reschedule(
        self, entry: OutboxEntry, *, error: str, next_attempt_at: datetime
    ) -> bool:
        """Release a claimed entry after a failed send: one more attempt, due at the given time.

        Returns:
            False when the claim was lost (its lease ended and another process took it).
        """

        def run(conn: sa.Connection, now: datetime) -> bool:
            stmt = (
                outbox.update()
                .where(outbox.c.id == entry.id, outbox.c.claim == entry.claim)
                .values(
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error,
                    claim=None,
                )
            )
            return bool(conn.execute(stmt).rowcount == 1)

        done: bool = await self._submit(Call(self._future(), run))
        return done

    async def outbox_pending(self, session_key: SessionKey) -> bool:
        """True when the session has entries in the outbox (asked before each send).

        SQLite: one indexed lookup on the reader connection (about 10 µs). Server databases:
        concurrent lookups share one ``= ANY($1)`` query, as conversation reads do.
        """
        if self._raw_sqlite:
            params = {"b_session_key": session_key}
            return await self._read(lambda conn: bool(_SQLITE_OUTBOX_PENDING.rows(conn, params)))
        return await self._outbox_reads.get(session_key)

    async def outbox_status(self) -> OutboxStatus:
        """How many entries wait, and when the earliest is due (claimed ones: lease end)."""
        stmt = sa.select(sa.func.count(), sa.func.min(outbox.c.next_attempt_at))
        depth, first = await self._read(lambda conn: conn.execute(stmt).one())
        return OutboxStatus(int(depth or 0), utc(first) if first is not None else None)

    async def outbox(
        self, session_key: SessionKey | None = None, *, limit: int = 200
    ) -> list[OutboxEntry]:
        """Entries waiting, oldest first, of one session or of all."""
        stmt = sa.select(outbox).order_by(outbox.c.id).limit(limit)
        if session_key is not None:
            stmt = stmt.where(outbox.c.session_key == session_key)
        return await self._read(
            lambda conn: [outbox_entry_from_row(r) for r in conn.execute(stmt)]
        )
