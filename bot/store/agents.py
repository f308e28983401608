"""Human agent accounts of the console (login names, display names, password hashes, roles)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bot.errors import Conflict, NotFound
from bot.store.base import AgentAccount, AgentRole
from bot.store.batcher import Call, WriteBatcher
from bot.store.tables import agent_profiles, agents

_SELECT_AGENTS = sa.select(agents, agent_profiles.c.role).select_from(
    agents.outerjoin(agent_profiles, agent_profiles.c.name == agents.c.name)
)


def _account(row: Any) -> AgentAccount:
    return AgentAccount(
        name=row.name,
        display_name=row.display_name,
        password_hash=row.password_hash,
        active=bool(row.active),
        role=AgentRole(row.role) if row.role else AgentRole.AGENT,
    )


def _write_role(conn: sa.Connection, name: str, role: AgentRole, now: datetime) -> None:
    """Set the account's role row (update, or insert when it has none yet)."""
    updated = conn.execute(
        agent_profiles.update()
        .where(agent_profiles.c.name == name)
        .values(role=role.value, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(agent_profiles.insert().values(name=name, role=role.value, updated_at=now))


class AgentsMixin(WriteBatcher):
    """The agent-account part of :class:`~bot.store.sql.SqlStore`."""

    async def create_agent(self, account: AgentAccount) -> None:
        """Create a human agent account (with its role).

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
            _write_role(conn, account.name, account.role, now)

        await self._submit(Call(self._future(), run))

    async def update_agent(self, account: AgentAccount) -> None:
        """Replace the agent account with the same name (hash, display name, active, role).

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
            _write_role(conn, account.name, account.role, now)

        await self._submit(Call(self._future(), run))

    async def agent(self, name: str) -> AgentAccount | None:
        """An agent account by login name (role ``agent`` when none was ever set)."""
        stmt = _SELECT_AGENTS.where(agents.c.name == name)
        row = await self._read(lambda conn: conn.execute(stmt).one_or_none())
        return _account(row) if row is not None else None

    async def list_agents(self) -> list[AgentAccount]:
        """Every agent account, by login name."""
        stmt = _SELECT_AGENTS.order_by(agents.c.name)
        rows = await self._read(lambda conn: list(conn.execute(stmt)))
        return [_account(r) for r in rows]
