"""Human agent accounts of the console (login names, display names, password hashes)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from bot.errors import Conflict, NotFound
from bot.store.base import AgentAccount
from bot.store.batcher import Call, WriteBatcher
from bot.store.tables import agents


class AgentsMixin(WriteBatcher):
    """The agent-account part of :class:`~bot.store.sql.SqlStore`."""

    async def create_agent(self, account: AgentAccount) -> None:
        """Create a human agent account.

        Raises:
            bot.errors.Conflict: when the name is taken.
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            if conn.scalar(sa.select(agents.c.name).where(agents.c.name == account.name)):
                raise Conflict(f"agent {account.name!r} exists")
            conn.execute(
                agents.insert().values(
                    name=account.name,
                    display_name=account.display_name,
                    password_hash=account.password_hash,
                    active=account.active,
                    created_at=now,
                )
            )

        await self._submit(Call(self._future(), run))

    async def update_agent(self, account: AgentAccount) -> None:
        """Replace the agent account with the same name (password re-hash, display name, active).

        Raises:
            bot.errors.NotFound: when no agent has that name.
        """

        def run(conn: sa.Connection, now: datetime) -> None:
            result = conn.execute(
                agents.update()
                .where(agents.c.name == account.name)
                .values(
                    display_name=account.display_name,
                    password_hash=account.password_hash,
                    active=account.active,
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"no agent {account.name!r}")

        await self._submit(Call(self._future(), run))

    async def agent(self, name: str) -> AgentAccount | None:
        """An agent account by login name."""
        stmt = sa.select(agents).where(agents.c.name == name)
        row = await self._read(lambda conn: conn.execute(stmt).one_or_none())
        if row is None:
            return None
        return AgentAccount(
            name=row.name,
            display_name=row.display_name,
            password_hash=row.password_hash,
            active=bool(row.active),
        )
