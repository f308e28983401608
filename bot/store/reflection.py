"""Every table of the database, whoever made it: listing, finding values, scrubbing, deleting.

Data-subject requests (:mod:`bot.store.subjects`) and retention (:mod:`bot.store.retention`)
must reach plugin tables too (the local ticket backend's, any ``switchboard.tables`` entry
point's), so they work on the database's reflected schema rather than on a list of tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from bot.store.tables import metadata as store_metadata

ERASED: Final = "[erased]"
"""What replaces a personal value found in a row that is kept."""

MIN_SUBSTRING: Final = 5
"""Values at least this long may be searched inside longer text (see :class:`Needles`)."""

_SKIPPED_TABLES: Final = frozenset({"alembic_version"})


@dataclass(frozen=True, slots=True)
class Needles:
    """Personal values to look for.

    Attributes:
        inside: found inside longer text too (e-mail addresses, ids and session keys of
            :data:`MIN_SUBSTRING` characters or more, names of two words or more).
        whole: found only as a whole value (short ids, one-word names), so other people's
            text that merely contains them is left alone.
    """

    inside: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str], *, names: Iterable[str] = ()) -> Needles:
        """Sort ``values`` (ids, e-mails, keys) and ``names`` into the two kinds."""
        inside: set[str] = set()
        whole: set[str] = set()
        for value in (v.strip() for v in values):
            if value:
                (inside if len(value) >= MIN_SUBSTRING else whole).add(value)
        for name in (n.strip() for n in names):
            if name:
                (inside if len(name) >= MIN_SUBSTRING and " " in name else whole).add(name)
        return cls(tuple(sorted(inside)), tuple(sorted(whole - inside)))

    def __bool__(self) -> bool:
        """True when there is anything to look for."""
        return bool(self.inside or self.whole)

    def scrub(self, value: Any) -> Any:
        """``value`` with every needle replaced by :data:`ERASED` (recursively in JSON)."""
        if isinstance(value, str):
            if value in self.whole:
                return ERASED
            for needle in self.inside:
                value = value.replace(needle, ERASED)
            return value
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub(v) for k, v in value.items()}
        return value


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


def texty(column: sa.Column[Any]) -> bool:
    """True for text and JSON columns (where personal values can be)."""
    return isinstance(column.type, sa.String | sa.Text | sa.JSON)


def mentions(
    table: sa.Table, needles: Needles, columns: Sequence[str] | None = None
) -> sa.ColumnElement[bool] | None:
    """Rows of ``table`` whose text or JSON columns may hold a needle (:func:`changes` tells).

    Args:
        table: where.
        needles: what.
        columns: only these columns (default: every text and JSON column).

    Returns:
        The condition, or None when the table has no such column or there is nothing to find.
    """
    cond: list[sa.ColumnElement[bool]] = []
    for column in table.columns:
        if not texty(column) or (columns is not None and column.name not in columns):
            continue
        text = sa.cast(column, sa.Text)
        plain = not isinstance(column.type, sa.JSON)
        cond += [text.contains(needle, autoescape=True) for needle in needles.inside]
        for needle in needles.whole:
            if plain:
                cond.append(text == needle)
            else:  # a whole JSON string value (or key)
                cond.append(text.contains(f'"{needle}"', autoescape=True))
    return sa.or_(*cond) if cond else None


def changes(table: sa.Table, row: sa.Row[Any], needles: Needles) -> dict[str, Any]:
    """The new values of the columns of ``row`` that hold a needle (empty: none really does)."""
    pk = {c.name for c in table.primary_key.columns}
    changed: dict[str, Any] = {}
    for column in table.columns:
        if texty(column) and column.name not in pk:
            old = row._mapping[column.name]
            new = needles.scrub(old)
            if new != old:
                changed[column.name] = new
    return changed


def anonymize(
    conn: sa.Connection,
    table: sa.Table,
    needles: Needles,
    where: sa.ColumnElement[bool] | None = None,
) -> int:
    """Replace the needles in the rows of ``table`` holding one; returns the rows changed.

    Args:
        conn: inside the caller's transaction.
        table: where.
        needles: what to replace.
        where: only these rows (default: every row that may hold a needle: a full scan).

    Tables without a primary key are left alone (a row could not be named for the update).
    """
    cond = mentions(table, needles) if where is None else where
    pk = list(table.primary_key.columns)
    if cond is None or not pk:
        return 0
    changed = 0
    for row in conn.execute(sa.select(table).where(cond)).all():
        values = changes(table, row, needles)
        if values:
            where = sa.and_(*(c == row._mapping[c.name] for c in pk))
            conn.execute(sa.update(table).where(where).values(**values))
            changed += 1
    return changed


def referencing(tables: list[sa.Table], parent: sa.Table) -> list[tuple[sa.Table, sa.ForeignKey]]:
    """The tables with a foreign key to ``parent``, with that key."""
    return [
        (child, fk)
        for child in tables
        for fk in child.foreign_keys
        if fk.column.table.name == parent.name and child.name != parent.name
    ]


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
    for child, fk in referencing(tables, table):
        sub = sa.select(table.c[fk.column.name]).where(cond)
        for name, n in delete_with_children(conn, tables, child, fk.parent.in_(sub)).items():
            counts[name] = counts.get(name, 0) + n
    n = conn.execute(sa.delete(table).where(cond)).rowcount or 0
    counts[table.name] = counts.get(table.name, 0) + n
    return counts
