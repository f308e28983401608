"""Data-subject requests: everything the database holds about one customer, and its erasure.

A customer (the data subject, :class:`Subject`) is named by channel and platform user id, or by
e-mail address. Their **sessions** are the conversations whose stored customer has that id on
that channel or that e-mail address, and where no other customer wrote (a group chat is not
theirs). Their **identifiers** are the id, the e-mail, the names and ids they appear with in
conversations and messages, and their session keys.

Every table of the database is covered, plugin tables included, by reflection (no list to keep
up to date):

1. every row of a table with a ``session_key`` column that belongs to one of the sessions
   (conversations, messages, outbox, the local backend's tickets, a plugin's own tables) is
   exported, then deleted, with the rows that reference it by foreign key (ticket comments);
2. customer messages they sent in other sessions (group chats) are exported, then deleted;
3. audit rows of the sessions, or whose session or details mention an identifier, are
   exported, then their personal part is erased (:mod:`bot.store.audit`: the hash chain
   stays verifiable);
4. any other text or JSON value anywhere that still contains an identifier (another customer's
   message quoting this one's e-mail, a plugin's row) is exported, then the identifier is
   replaced by :data:`~bot.store.reflection.ERASED` in it; other customers' rows are otherwise
   untouched.

Ids, e-mails and session keys of :data:`~bot.store.reflection.MIN_SUBSTRING` characters or
more, and names of two words or more, are found inside longer text; a short id (``42``) or a
one-word name only as a whole value (:class:`~bot.store.reflection.Needles`), so other
customers' text is not mangled.

The scan (:func:`collect`) reads every text and JSON column, so it runs on a connection of its
own, off the event loop; erasure (:func:`erase`) then deletes and rewrites the rows found, by
key, in one short transaction on the store's writer, and appends a ``privacy.erase`` audit entry
holding only counts and the request id (never an identifier).

This module is the database's part. :mod:`bot.subjects` runs whole requests: the same scan's
sessions and identifiers also find the customer in the lanes and in what the composition root
registers (the knowledge base), whose counts join the audit entry (``elsewhere``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.envelope import SessionKey, utcnow
from bot.errors import BackendUnavailable, PayloadInvalid
from bot.store.audit import AuditMixin, append_rows, lock_chain, personal_row
from bot.store.batcher import Call
from bot.store.engine import sync_sqlite_engine
from bot.store.reflection import (
    Needles,
    anonymize,
    changes,
    database_tables,
    delete_with_children,
    mentions,
    referencing,
)
from bot.store.tables import audit, conversations, messages

_T = TypeVar("_T")

AUDIT_PERSONAL: Final = ("session_key", "detail")
"""The audit columns searched for identifiers (the rest is the chain's machinery)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """The customer of a request: ``channel`` and ``user_id`` together, or ``email``.

    Raises:
        bot.errors.PayloadInvalid: when neither form is given, or a value is blank.
    """

    channel: str | None = None
    user_id: str | None = None
    email: str | None = None

    def __post_init__(self) -> None:
        """Check that the subject is named one way or the other."""
        by_id = bool(
            self.channel and self.channel.strip() and self.user_id and self.user_id.strip()
        )
        by_mail = bool(self.email and "@" in self.email)
        if not by_id and not by_mail:
            raise PayloadInvalid(
                "name the customer by channel and user id, or by e-mail address", field="subject"
            )

    @classmethod
    def parse(cls, ident: str) -> Subject:
        """The subject one string names: an e-mail address, or ``CHANNEL:USER_ID``.

        Raises:
            bot.errors.PayloadInvalid: when ``ident`` is neither.
        """
        ident = ident.strip()
        if "@" in ident and ":" not in ident.split("@", 1)[0]:
            return cls(email=ident)
        channel, sep, user = ident.partition(":")
        if not sep or not channel or not user:
            raise PayloadInvalid("ID is an e-mail address or CHANNEL:USER_ID", field="id")
        return cls(channel=channel, user_id=user)


@dataclass(slots=True)
class SubjectData:
    """What the database holds about a subject.

    Attributes:
        sessions: their session keys.
        needles: the values searched for (ids, e-mails, names, session keys).
        tables: per table, the rows found (column → value), deletions and edits alike.
        owned: per table, the primary keys of the rows that are theirs (erasure deletes them).
        mentioned: per table, the primary keys of other rows holding a needle (erasure
            replaces the needles).
        audit_ids: ids of the audit rows about them (erasure clears their personal part).
    """

    sessions: list[SessionKey] = field(default_factory=list)
    needles: Needles = field(default_factory=Needles)
    owned: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    mentioned: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    audit_ids: list[int] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure did.

    Attributes:
        request_id: a random id, also in the ``privacy.erase`` audit entry (keep it with the
            request's paperwork: the entry cannot name the customer).
        sessions: how many sessions were erased.
        deleted: rows deleted, per table.
        anonymized: rows kept with identifiers replaced, per table.
        audit_erased: audit entries whose personal part was erased.
        elsewhere: what :mod:`bot.subjects` did outside the database, per part (``lanes``,
            ``knowledge_base``...): counts, and for the admin the items changed.
    """

    request_id: str
    sessions: int
    deleted: dict[str, int]
    anonymized: dict[str, int]
    audit_erased: int
    elsewhere: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The report as the command line, the admin API and the console answer it.

        Returns:
            ``{"request_id", "sessions", "deleted", "anonymized", "audit_erased",
            "elsewhere"}``.
        """
        return asdict(self)


@dataclass(slots=True, eq=False)
class SessionsCall(Call):
    """A serial call that deletes sessions: their cached counters are dropped after commit."""

    touched: list[SessionKey] = field(default_factory=list)

    def sessions(self) -> Iterable[SessionKey]:
        """The sessions the call deletes (retention fills them in while it runs)."""
        return self.touched


# --- discovery ------------------------------------------------------------------------------


def _customer_matches(subject: Subject) -> sa.ColumnElement[bool]:
    c = conversations.c
    cond: list[sa.ColumnElement[bool]] = []
    if subject.channel and subject.user_id:
        cond.append(
            sa.and_(c.channel == subject.channel, c.customer["id"].as_string() == subject.user_id)
        )
    if subject.email:
        cond.append(sa.func.lower(c.customer["email"].as_string()) == subject.email.lower())
    return sa.or_(*cond)


def _sender_matches(subject: Subject) -> sa.ColumnElement[bool]:
    m = messages.c
    sender_id = m.inbound[("sender", "id")].as_string()
    cond: list[sa.ColumnElement[bool]] = []
    if subject.channel and subject.user_id:
        cond.append(sa.and_(m.channel == subject.channel, sender_id == subject.user_id))
    if subject.email:
        email = m.inbound[("sender", "email")].as_string()
        cond.append(sa.func.lower(email) == subject.email.lower())
    return sa.and_(m.inbound.is_not(None), sa.or_(*cond))


def _shared(conn: sa.Connection, key: str, customer_id: str, subject: Subject) -> bool:
    """True when another customer wrote in the session too (a group chat, a shared thread).

    A shared session is not the subject's: only their own messages in it are deleted, and
    their identifiers elsewhere in it are replaced.
    """
    stmt = sa.select(messages.c.inbound).where(
        messages.c.session_key == key, messages.c.inbound.is_not(None)
    )
    for (inbound,) in conn.execute(stmt):
        sender = inbound.get("sender") or {}
        email = str(sender.get("email") or "").lower()
        mine = sender.get("id") == customer_id or bool(
            subject.email and email == subject.email.lower()
        )
        if not mine:
            return True
    return False


def _discover(conn: sa.Connection, subject: Subject) -> SubjectData:
    data = SubjectData()
    ids: set[str] = {v for v in (subject.user_id, subject.email) if v}
    names: set[str] = set()

    def note(person: dict[str, Any]) -> None:
        ids.update(str(person.get(k) or "") for k in ("id", "email"))
        names.add(str(person.get("name") or ""))

    for row in conn.execute(sa.select(conversations).where(_customer_matches(subject))):
        customer = row.customer or {}
        note(customer)
        if not _shared(conn, row.session_key, str(customer.get("id") or ""), subject):
            data.sessions.append(SessionKey(row.session_key))
    for row in conn.execute(sa.select(messages.c.inbound).where(_sender_matches(subject))):
        note((row.inbound or {}).get("sender") or {})
    data.needles = Needles.of([*ids, *data.sessions], names=names)
    return data


def _session_rows(table: sa.Table, sessions: Sequence[str]) -> sa.ColumnElement[bool] | None:
    if "session_key" not in table.c or not sessions or table.name == audit.name:
        return None
    return table.c.session_key.in_(list(sessions))


def _owned(
    conn: sa.Connection, tables: list[sa.Table], data: SubjectData, subject: Subject
) -> list[tuple[sa.Table, sa.ColumnElement[bool]]]:
    """Per table, the condition of the rows that belong to the subject (deleted on erasure)."""
    owned: list[tuple[sa.Table, sa.ColumnElement[bool]]] = []
    for table in tables:
        cond = _session_rows(table, data.sessions)
        if table is messages:
            sent = messages.c.session_key.in_(list(data.sessions)) if data.sessions else sa.false()
            cond = sa.or_(sent, _sender_matches(subject))
        if cond is not None:
            owned.append((table, cond))
    return owned


def _audit_rows(data: SubjectData) -> sa.ColumnElement[bool]:
    mention = mentions(audit, data.needles, AUDIT_PERSONAL)
    sessions = audit.c.session_key.in_(list(data.sessions)) if data.sessions else sa.false()
    return sa.and_(
        audit.c.salt.is_not(None), sa.or_(sessions, mention if mention is not None else sa.false())
    )


# --- export and erase (sync) ------------------------------------------------------------------

PK_CHUNK: Final = 500
"""Primary keys per statement when rows are named one by one."""


def _pk(table: sa.Table) -> list[sa.Column[Any]]:
    return list(table.primary_key.columns) or list(table.columns)


def _by_pk(table: sa.Table, keys: Sequence[tuple[Any, ...]]) -> sa.ColumnElement[bool]:
    cols = _pk(table)
    if len(cols) == 1:
        return cols[0].in_([k[0] for k in keys])
    return sa.or_(*(sa.and_(*(c == v for c, v in zip(cols, k, strict=True))) for k in keys))


def collect(conn: sa.Connection, subject: Subject) -> SubjectData:
    """Everything the database holds about ``subject`` (see the module docstring).

    Read-only: it scans every text and JSON column of every table, so run it off the writer
    (:meth:`SubjectsMixin.export_subject` runs it on a connection of its own).

    Returns:
        The sessions, the needles, and per table the rows found and what erasure does to them.
    """
    data = _discover(conn, subject)
    tables = database_tables(conn)
    seen: dict[str, set[tuple[Any, ...]]] = {}

    def add(table: sa.Table, rows: Iterable[sa.Row[Any]], kind: dict[str, Any] | None) -> None:
        keys = seen.setdefault(table.name, set())
        pk = [c.name for c in _pk(table)]
        for row in rows:
            plain = dict(row._mapping)
            ident = tuple(plain[k] for k in pk)
            if ident not in keys:
                keys.add(ident)
                data.tables.setdefault(table.name, []).append(plain)
                if kind is not None:
                    kind.setdefault(table.name, []).append(ident)

    for table, cond in _owned(conn, tables, data, subject):
        add(table, conn.execute(sa.select(table).where(cond)), data.owned)
        for child, fk in referencing(tables, table):
            sub = sa.select(table.c[fk.column.name]).where(cond)
            add(child, conn.execute(sa.select(child).where(fk.parent.in_(sub))), data.owned)
    about = list(conn.execute(sa.select(audit).where(_audit_rows(data))))
    data.audit_ids = [r.id for r in about]
    add(audit, about, None)
    for table in tables:
        if table.name == audit.name:
            continue
        mention = mentions(table, data.needles)
        if mention is not None:
            rows = conn.execute(sa.select(table).where(mention)).all()
            add(table, (r for r in rows if changes(table, r, data.needles)), data.mentioned)
    return data


def erase(
    conn: sa.Connection,
    data: SubjectData,
    *,
    actor: str,
    now: datetime,
    key: bytes | None,
    elsewhere: dict[str, dict[str, int]] | None = None,
) -> ErasureReport:
    """Erase what :func:`collect` found, in the caller's transaction (short: rows by key).

    Rows of the subject's sessions written since the scan go too (they are deleted by session
    key); other rows written since are not: run the erasure again if the customer was writing.

    Args:
        conn: the writer's connection (the caller commits).
        data: what :func:`collect` found.
        actor: who asked (``cli``, ``admin-api``): written in the audit entry.
        now: the transaction's time.
        key: the audit chain's HMAC key.
        elsewhere: counts of what was erased outside the database, per part (written in the
            audit entry; counts only, never an identifier).

    Returns:
        What was deleted and anonymized.
    """
    lock_chain(conn)  # first: the chain's lock before any row lock (no deadlock with appends)
    tables = {t.name: t for t in database_tables(conn)}
    ordered = list(tables.values())
    deleted: dict[str, int] = {}

    def delete(table: sa.Table, cond: sa.ColumnElement[bool]) -> None:
        for name, n in delete_with_children(conn, ordered, table, cond).items():
            deleted[name] = deleted.get(name, 0) + n

    for table in reversed(ordered):  # children first: a parent's rows may be named too
        if data.sessions and "session_key" in table.c and table.name != audit.name:
            delete(table, table.c.session_key.in_(list(data.sessions)))
        keys = data.owned.get(table.name, [])
        for i in range(0, len(keys), PK_CHUNK):
            delete(table, _by_pk(table, keys[i : i + PK_CHUNK]))
    mine: sa.ColumnElement[bool] = audit.c.id.in_(data.audit_ids) if data.audit_ids else sa.false()
    if data.sessions:
        mine = sa.or_(mine, audit.c.session_key.in_(list(data.sessions)))
    erased = (
        conn.execute(
            sa.update(audit)
            .where(audit.c.salt.is_not(None), mine)
            .values(session_key=None, detail={}, salt=None)
        ).rowcount
        or 0
    )
    anonymized: dict[str, int] = {}
    for name, keys in data.mentioned.items():
        table = tables.get(name)
        if table is None or not table.primary_key.columns:
            continue
        for i in range(0, len(keys), PK_CHUNK):
            n = anonymize(conn, table, data.needles, _by_pk(table, keys[i : i + PK_CHUNK]))
            if n:
                anonymized[name] = anonymized.get(name, 0) + n
    report = ErasureReport(
        request_id=secrets.token_hex(8),
        sessions=len(data.sessions),
        deleted={k: v for k, v in deleted.items() if v},
        anonymized=anonymized,
        audit_erased=erased,
    )
    detail = {
        "request_id": report.request_id,
        "sessions": report.sessions,
        "deleted": report.deleted,
        "anonymized": report.anonymized,
        "audit_erased": erased,
    }
    if elsewhere:
        detail["elsewhere"] = elsewhere
    append_rows(conn, [personal_row(actor, "privacy.erase", None, detail)], now, key)
    return report


class SubjectsMixin(AuditMixin):
    """Data-subject requests on :class:`~bot.store.sql.SqlStore` (export, erase)."""

    _url: str
    _engine: AsyncEngine | None

    async def _scan(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """Run a long read on a connection of its own, off the event loop and off the writer.

        SQLite: a ``pysqlite`` connection on a worker thread (the store's reader runs on the
        loop's thread); a server database: a pooled connection of the async engine.
        """
        if self._engine is None:
            raise BackendUnavailable("the store is closed")
        if self._engine.dialect.name != "sqlite":
            async with self._engine.connect() as conn:
                return await conn.run_sync(fn)
        engine = sync_sqlite_engine(self._url)

        def run() -> _T:
            try:
                with engine.connect() as conn:
                    return fn(conn)
            finally:
                engine.dispose()

        return await asyncio.to_thread(run)

    async def collect_subject(self, subject: Subject) -> SubjectData:
        """What the database holds about ``subject`` (:func:`collect`; read-only, no audit).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be read.
        """
        return await self._scan(lambda conn: collect(conn, subject))

    async def export_subject(
        self,
        subject: Subject,
        *,
        actor: str,
        data: SubjectData | None = None,
        elsewhere: dict[str, dict[str, int]] | None = None,
    ) -> SubjectData:
        """Everything stored about ``subject``, and an audit entry ``privacy.export``.

        Args:
            subject: whom.
            actor: who asked (``cli``, ``admin-api``).
            data: a scan already made (:meth:`collect_subject`); default: scan now.
            elsewhere: counts found outside the database, per part, for the audit entry.

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be read or written.
        """
        if data is None:
            data = await self.collect_subject(subject)
        counts = {name: len(rows) for name, rows in data.tables.items()}
        detail: dict[str, Any] = {"sessions": len(data.sessions), "rows": counts}
        if elsewhere:
            detail["elsewhere"] = elsewhere
        await self.audit(actor, "privacy.export", None, detail)
        return data

    async def erase_subject(
        self,
        subject: Subject,
        *,
        actor: str,
        data: SubjectData | None = None,
        elsewhere: dict[str, dict[str, int]] | None = None,
    ) -> ErasureReport:
        """Erase ``subject`` from every table (see the module docstring).

        The scan runs first on a connection of its own (unless ``data`` is such a scan); then
        one short transaction on the writer deletes and rewrites the rows it found by key,
        and appends the audit entry (with the ``elsewhere`` counts).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be read or written.
        """
        if data is None:
            data = await self.collect_subject(subject)
        scanned = data

        def run(conn: sa.Connection, now: datetime) -> ErasureReport:
            return erase(
                conn, scanned, actor=actor, now=now, key=self._audit_key, elsewhere=elsewhere
            )

        report: ErasureReport = await self._submit(
            SessionsCall(self._future(), run, touched=list(data.sessions))
        )
        return report


def export_document(subject: Subject, data: SubjectData) -> dict[str, Any]:
    """The JSON document of an export: ``{"subject", "exported_at", "sessions", "tables"}``."""
    return {
        "subject": {
            k: v
            for k, v in (
                ("channel", subject.channel),
                ("user_id", subject.user_id),
                ("email", subject.email),
            )
            if v
        },
        "exported_at": utcnow().isoformat(),
        "sessions": list(data.sessions),
        "tables": data.tables,
    }
