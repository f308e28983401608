"""Data-subject requests: everything the database holds about one customer, and its erasure.

A customer (the data subject, :class:`Subject`) is named by channel and platform user id, or by
e-mail address. Their **sessions** are the conversations whose stored customer has that id on
that channel or that e-mail address. Their **identifiers** are the id, the e-mail, the names and
ids of those conversations' customers, and the session keys.

Every table of the database is covered, plugin tables included, by reflection (no list to keep
up to date):

1. every row of a table with a ``session_key`` column that belongs to one of the sessions
   (conversations, messages, outbox, the local backend's tickets, a plugin's own tables) is
   exported, then deleted, with the rows that reference it by foreign key (ticket comments);
2. customer messages they sent in other sessions (group chats) are exported, then deleted;
3. audit rows of the sessions, or whose details mention an identifier, are exported, then
   their personal part is erased (:mod:`bot.store.audit`: the hash chain stays verifiable);
4. any other text or JSON value anywhere that still contains an identifier (another customer's
   message quoting this one's e-mail, a plugin's row) is exported, then the identifier is
   replaced by :data:`ERASED` in it; other customers' rows are otherwise untouched.

Identifiers of :data:`MIN_SUBSTRING` characters or more are found inside longer text; shorter
ones (a numeric id such as ``42``) only as a whole value, so other customers' text is not
mangled.

Erasure runs as one transaction on the store's writer and appends a ``privacy.erase`` audit
entry holding only counts and the request id (never an identifier).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from bot.envelope import SessionKey, utcnow
from bot.errors import PayloadInvalid
from bot.store.audit import AuditMixin, append_rows, lock_chain, personal_row
from bot.store.batcher import Call
from bot.store.tables import audit, conversations, messages
from bot.store.tables import metadata as store_metadata

ERASED: Final = "[erased]"
"""What replaces an identifier found in a row that is kept."""

MIN_SUBSTRING: Final = 5
"""Identifiers at least this long are searched inside longer text; shorter ones as whole values."""

_SKIPPED_TABLES: Final = frozenset({"alembic_version"})


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


@dataclass(slots=True)
class SubjectData:
    """What the database holds about a subject.

    Attributes:
        sessions: their session keys.
        identifiers: the values searched for (id, e-mail, names, session keys).
        tables: per table, the rows found (column → value), deletions and edits alike.
    """

    sessions: list[SessionKey] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list)
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
    """

    request_id: str
    sessions: int
    deleted: dict[str, int]
    anonymized: dict[str, int]
    audit_erased: int


@dataclass(slots=True, eq=False)
class SessionsCall(Call):
    """A serial call that deletes sessions: their cached counters are dropped after commit."""

    touched: list[SessionKey] = field(default_factory=list)

    def sessions(self) -> Iterable[SessionKey]:
        """The sessions the call deleted (filled in while it runs)."""
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
    found: set[str] = set()
    for row in conn.execute(sa.select(conversations).where(_customer_matches(subject))):
        customer = row.customer or {}
        found.update(str(customer.get(k) or "") for k in ("id", "name", "email"))
        if not _shared(conn, row.session_key, str(customer.get("id") or ""), subject):
            data.sessions.append(SessionKey(row.session_key))
    for row in conn.execute(sa.select(messages.c.inbound).where(_sender_matches(subject))):
        sender = (row.inbound or {}).get("sender") or {}
        found.update(str(sender.get(k) or "") for k in ("id", "name", "email"))
    found.update(v for v in (subject.user_id, subject.email) if v)
    found.update(data.sessions)
    data.identifiers = sorted(v for v in (s.strip() for s in found) if v)
    return data


def database_tables(conn: sa.Connection) -> list[sa.Table]:
    """Every table of the database: the store's own definitions, the others reflected.

    Returns:
        Parents before the tables that reference them (``alembic_version`` left out).
    """
    meta = sa.MetaData()
    meta.reflect(conn)
    return [
        store_metadata.tables.get(t.name, t)
        for t in meta.sorted_tables
        if t.name not in _SKIPPED_TABLES
    ]


def _texty(column: sa.Column[Any]) -> bool:
    return isinstance(
        column.type, sa.String | sa.Text | sa.JSON
    ) or column.type.__class__.__name__ in {
        "JSONB",
        "JSON",
    }


def _mentions(table: sa.Table, identifiers: Sequence[str]) -> sa.ColumnElement[bool] | None:
    """Rows of ``table`` whose text or JSON columns hold an identifier (a superset for JSON)."""
    cond: list[sa.ColumnElement[bool]] = []
    for column in table.columns:
        if not _texty(column):
            continue
        text = sa.cast(column, sa.Text)
        plain = isinstance(column.type, sa.String | sa.Text)
        for ident in identifiers:
            if len(ident) >= MIN_SUBSTRING:
                cond.append(text.contains(ident, autoescape=True))
            elif plain:
                cond.append(text == ident)
            else:  # a short id as a whole JSON string
                cond.append(text.contains(f'"{ident}"', autoescape=True))
    return sa.or_(*cond) if cond else None


def _plain(row: sa.Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


def _scrub(value: Any, identifiers: Sequence[str]) -> Any:
    """``value`` with identifiers replaced by :data:`ERASED` (recursively in JSON)."""
    if isinstance(value, str):
        for ident in identifiers:
            if len(ident) >= MIN_SUBSTRING:
                value = value.replace(ident, ERASED)
            elif value == ident:
                value = ERASED
        return value
    if isinstance(value, list):
        return [_scrub(v, identifiers) for v in value]
    if isinstance(value, dict):
        return {_scrub(k, identifiers): _scrub(v, identifiers) for k, v in value.items()}
    return value


def _referencing(tables: list[sa.Table], parent: sa.Table) -> list[tuple[sa.Table, sa.ForeignKey]]:
    return [
        (child, fk)
        for child in tables
        for fk in child.foreign_keys
        if fk.column.table.name == parent.name and child.name != parent.name
    ]


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
    mention = _mentions(audit, data.identifiers)
    sessions = audit.c.session_key.in_(list(data.sessions)) if data.sessions else sa.false()
    return sa.and_(
        audit.c.salt.is_not(None), sa.or_(sessions, mention if mention is not None else sa.false())
    )


# --- export and erase (sync, inside one transaction) ----------------------------------------


def collect(conn: sa.Connection, subject: Subject) -> SubjectData:
    """Everything the database holds about ``subject`` (see the module docstring).

    Returns:
        The sessions, identifiers and, per table, the rows found.
    """
    data = _discover(conn, subject)
    tables = database_tables(conn)
    seen: dict[str, set[tuple[Any, ...]]] = {}

    def add(table: sa.Table, rows: Iterable[sa.Row[Any]]) -> None:
        keys = seen.setdefault(table.name, set())
        pk = [c.name for c in table.primary_key.columns] or [c.name for c in table.columns]
        for row in rows:
            plain = _plain(row)
            ident = tuple(plain[k] for k in pk)
            if ident not in keys:
                keys.add(ident)
                data.tables.setdefault(table.name, []).append(plain)

    for table, cond in _owned(conn, tables, data, subject):
        owned = list(conn.execute(sa.select(table).where(cond)))
        add(table, owned)
        for child, fk in _referencing(tables, table):
            parent_col = table.c[fk.column.name]
            sub = sa.select(parent_col).where(cond)
            add(child, conn.execute(sa.select(child).where(fk.parent.in_(sub))))
    add(audit, conn.execute(sa.select(audit).where(_audit_rows(data))))
    for table in tables:
        if table.name == audit.name:
            continue
        mention = _mentions(table, data.identifiers)
        if mention is not None:
            rows = conn.execute(sa.select(table).where(mention)).all()
            add(table, (r for r in rows if _changes(table, r, data.identifiers)))
    return data


def _changes(table: sa.Table, row: sa.Row[Any], identifiers: Sequence[str]) -> dict[str, Any]:
    """The values of ``row`` that :func:`_scrub` changes (empty when it only looked similar)."""
    pk = {c.name for c in table.primary_key.columns}
    changed: dict[str, Any] = {}
    for column in table.columns:
        if _texty(column) and column.name not in pk:
            old = row._mapping[column.name]
            new = _scrub(old, identifiers)
            if new != old:
                changed[column.name] = new
    return changed


def delete_with_children(
    conn: sa.Connection, tables: list[sa.Table], table: sa.Table, cond: sa.ColumnElement[bool]
) -> dict[str, int]:
    """Delete the rows of ``table`` matching ``cond`` and, first, the rows referencing them.

    Args:
        conn: inside the caller's transaction.
        tables: every table (:func:`database_tables`), whose foreign keys are followed.
        table: where to delete.
        cond: which rows, as a condition on ``table``.

    Returns:
        Rows deleted per table name.
    """
    counts: dict[str, int] = {}
    for child, fk in _referencing(tables, table):
        sub = sa.select(table.c[fk.column.name]).where(cond)
        child_cond = fk.parent.in_(sub)
        for name, n in delete_with_children(conn, tables, child, child_cond).items():
            counts[name] = counts.get(name, 0) + n
    n = conn.execute(sa.delete(table).where(cond)).rowcount or 0
    counts[table.name] = counts.get(table.name, 0) + n
    return counts


def _anonymize(conn: sa.Connection, table: sa.Table, identifiers: Sequence[str]) -> int:
    """Replace identifiers in the rows of ``table`` that mention one; returns rows changed."""
    cond = _mentions(table, identifiers)
    pk = list(table.primary_key.columns)
    if cond is None or not pk:
        return 0
    changed = 0
    for row in conn.execute(sa.select(table).where(cond)).all():
        values = _changes(table, row, identifiers)
        if values:
            where = sa.and_(*(c == row._mapping[c.name] for c in pk))
            conn.execute(sa.update(table).where(where).values(**values))
            changed += 1
    return changed


def erase(
    conn: sa.Connection,
    subject: Subject,
    *,
    actor: str,
    now: datetime,
    key: bytes | None,
    touched: list[SessionKey],
) -> ErasureReport:
    """Erase ``subject`` everywhere (see the module docstring), in the caller's transaction.

    Args:
        conn: the writer's connection (the caller commits).
        subject: whom to erase.
        actor: who asked (``cli``, ``admin:NAME``): written in the audit entry.
        now: the transaction's time.
        key: the audit chain's HMAC key.
        touched: filled with the erased sessions (their caches are dropped after commit).

    Returns:
        What was deleted and anonymized.
    """
    lock_chain(conn)  # first: the chain's lock before any row lock (no deadlock with appends)
    data = _discover(conn, subject)
    touched.extend(data.sessions)
    tables = database_tables(conn)
    deleted: dict[str, int] = {}
    for table, cond in _owned(conn, tables, data, subject):
        for name, n in delete_with_children(conn, tables, table, cond).items():
            deleted[name] = deleted.get(name, 0) + n
    erased = (
        conn.execute(
            sa.update(audit)
            .where(_audit_rows(data))
            .values(session_key=None, detail={}, salt=None)
        ).rowcount
        or 0
    )
    anonymized: dict[str, int] = {}
    for table in tables:
        if table.name != audit.name:
            n = _anonymize(conn, table, data.identifiers)
            if n:
                anonymized[table.name] = n
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
    append_rows(conn, [personal_row(actor, "privacy.erase", None, detail)], now, key)
    return report


class SubjectsMixin(AuditMixin):
    """Data-subject requests on :class:`~bot.store.sql.SqlStore` (export, erase)."""

    async def export_subject(self, subject: Subject, *, actor: str) -> SubjectData:
        """Everything stored about ``subject``, and an audit entry ``privacy.export``.

        Args:
            subject: whom.
            actor: who asked (``cli``, ``admin:NAME``).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be read or written.
        """
        data = await self._read(lambda conn: collect(conn, subject))
        counts = {name: len(rows) for name, rows in data.tables.items()}
        detail = {"sessions": len(data.sessions), "rows": counts}
        await self.audit(actor, "privacy.export", None, detail)
        return data

    async def erase_subject(self, subject: Subject, *, actor: str) -> ErasureReport:
        """Erase ``subject`` from every table, in one transaction (see the module docstring).

        Raises:
            bot.errors.BackendUnavailable: when the database cannot be written.
        """
        touched: list[SessionKey] = []

        def run(conn: sa.Connection, now: datetime) -> ErasureReport:
            touched.clear()  # a batch that failed is run again
            return erase(conn, subject, actor=actor, now=now, key=self._audit_key, touched=touched)

        report: ErasureReport = await self._submit(
            SessionsCall(self._future(), run, touched=touched)
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
