"""Audit chain: every audit row becomes a link of a tamper-evident hash chain.

Adds ``seq``, ``seal``, ``salt``, ``prev_hash`` and ``hash`` to ``audit`` and a unique index on
``seq`` (see :mod:`bot.store.audit`). Rows written before stay unchained (``seq`` NULL) until
the next append chains them, in ``id`` order, with the chain key of the process that appends.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = ("seq", "seal", "salt", "prev_hash", "hash")


def upgrade() -> None:
    """Apply this revision (nothing to do when ``SqlStore.open()`` made the columns already)."""
    if not context.is_offline_mode():
        present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit")}
        if "seq" in present:
            return
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("seq", SEQ, nullable=True))
        batch.add_column(sa.Column("seal", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("salt", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_index("ux_audit_seq", "audit", ["seq"], unique=True)


def downgrade() -> None:
    """Revert this revision (the chain is lost; the entries stay)."""
    op.drop_index("ux_audit_seq", table_name="audit")
    with op.batch_alter_table("audit") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
