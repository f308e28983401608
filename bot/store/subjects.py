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


@dataclass(slots=True)
class SubjectData:
    """What the database holds about a subject.

    Attributes:
        sessions: their session keys.
        needles: the values searched for (ids, e-mails, names, session keys).
        tables: per table, the rows found (column → value), deletions and edits alike.
    """

    sessions: list[SessionKey] = field(default_factory=list)
    needles: Needles = field(default_factory=Needles)
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
            plain = dict(row._mapping)
            ident = tuple(plain[k] for k in pk)
            if ident not in keys:
                keys.add(ident)
                data.tables.setdefault(table.name, []).append(plain)

    for table, cond in _owned(conn, tables, data, subject):
        owned = list(conn.execute(sa.select(table).where(cond)))
        add(table, owned)
        for child, fk in referencing(tables, table):
            parent_col = table.c[fk.column.name]
            sub = sa.select(parent_col).where(cond)
            add(child, conn.execute(sa.select(child).where(fk.parent.in_(sub))))
    add(audit, conn.execute(sa.select(audit).where(_audit_rows(data))))
    for table in tables:
        if table.name == audit.name:
            continue
        mention = mentions(table, data.needles)
        if mention is not None:
            rows = conn.execute(sa.select(table).where(mention)).all()
            add(table, (r for r in rows if changes(table, r, data.needles)))
    return data


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
            n = anonymize(conn, table, data.needles)
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
