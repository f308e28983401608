"""Alembic environment: runs the revisions on the connection :mod:`bot.store.migrate` passes in.

:func:`bot.store.migrate.upgrade` opens an async engine and hands its sync connection over in
``config.attributes["connection"]``. Without one (a plain ``alembic`` command line) an async
engine is made from the ``sqlalchemy.url`` option; with ``--sql`` the SQL is printed instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic import context

from bot.store.engine import make_engine
from bot.store.migrate import TARGET_METADATA, compare_type, render_item

config = context.config


def _configure(dialect: str, **kw: Any) -> None:
    context.configure(
        target_metadata=TARGET_METADATA,
        compare_type=compare_type,
        render_item=render_item,
        render_as_batch=dialect == "sqlite",  # SQLite alters tables by copying them
        **kw,
    )


def _run(connection: sa.Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_new_engine(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        url = config.get_main_option("sqlalchemy.url")
        assert url is not None, "set sqlalchemy.url to generate SQL"
        _configure(
            sa.make_url(url).get_backend_name(),
            url=url,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, sa.Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "pass a connection or set sqlalchemy.url"
    asyncio.run(_run_on_new_engine(url))


_main()
