"""Schema migrations (Alembic) for the store's tables and those of plugin packages.

The revisions live in ``bot/store/migrations/versions``; no ``alembic.ini`` is needed: the
configuration is built here and the database connection handed to ``env.py``. The models are
:data:`bot.store.tables.metadata` and the tables plugin packages register in the
``switchboard.tables`` entry point group (:func:`plugin_metadata`; the local ticket backend's
``tickets`` and ``ticket_comments``).

``SqlStore.open()`` still creates missing tables itself (the embedded default needs no
migration step). Production databases run :func:`upgrade` (``switchboard db upgrade``) before
the processes start. A database whose tables were created that way before it was ever
migrated is stamped at the first revision (:data:`BASELINE`) and upgraded from there.

Developers add a revision with :func:`make_revision` against a database at ``head``, then
review the generated script.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.exc import DBAPIError

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError
from bot.store.engine import UtcDateTime, make_engine
from bot.store.tables import metadata as store_metadata

logger = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
"""The Alembic script directory (``env.py``, ``script.py.mako``, ``versions/``)."""


TABLES_GROUP: Final = "switchboard.tables"
"""The entry point group through which plugin packages register their tables.

Each entry point names a SQLAlchemy ``MetaData``, or a callable returning one, e.g.
``tickets = "plugins.ticketing.local:metadata"`` under
``[project.entry-points."switchboard.tables"]`` in ``pyproject.toml``.
"""


def plugin_metadata() -> list[sa.MetaData]:
    """The table metadata plugin packages register (:data:`TABLES_GROUP`), by entry point name.

    Raises:
        bot.errors.ConfigError: when an entry point cannot be loaded or is not a ``MetaData``
            (or a callable returning one): migrating without its tables would drop them.
    """
    found: list[sa.MetaData] = []
    for ep in sorted(entry_points(group=TABLES_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"table entry point {ep.name!r} ({ep.value}): {exc}") from exc
        tables = obj() if callable(obj) else obj
        if not isinstance(tables, sa.MetaData):
            raise ConfigError(
                f"table entry point {ep.name!r} ({ep.value}) is not a MetaData: {tables!r}"
            )
        found.append(tables)
    return found


def _combined(*parts: sa.MetaData) -> sa.MetaData:
    combined = sa.MetaData()
    for part in parts:
        for table in part.tables.values():
            table.to_metadata(combined)
    return combined


TARGET_METADATA: Final = _combined(store_metadata, *plugin_metadata())
"""Every table the migrations manage (copies of the store's and the plugins' tables)."""

BASELINE: Final = "0001"
"""The first revision: the schema ``SqlStore.open()`` created before migrations existed."""

_LOCK_KEY: Final = 0x5357_4D49_4752  # "SWMIGR": PostgreSQL advisory lock of an upgrade

_UTC_DATETIME_RENDERED: Final = (
    'sa.DateTime(timezone=True).with_variant(sa.String(length=26), "sqlite")'
)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` for the migrations, without an ini file.

    Args:
        connection: the sync connection ``env.py`` runs on (from ``AsyncConnection.run_sync``);
            None for commands that need no database (``history``, ``heads``).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision id of the scripts.

    Raises:
        alembic.util.CommandError: when the scripts have more than one head.
    """
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate hook: write :class:`~bot.store.engine.UtcDateTime` as SQLAlchemy types.

    Revisions then depend on SQLAlchemy only, not on the application's types: ``timestamptz``
    on PostgreSQL, ``VARCHAR(26)`` ISO text on SQLite, as ``UtcDateTime`` stores them.
    """
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return _UTC_DATETIME_RENDERED
    return False


def compare_type(
    context: MigrationContext,
    inspected_column: sa.Column[Any],
    metadata_column: sa.Column[Any],
    inspected_type: sa.types.TypeEngine[Any],
    metadata_type: sa.types.TypeEngine[Any],
) -> bool | None:
    """Autogenerate hook: compare a ``TypeDecorator`` by the type it uses on this dialect.

    Returns:
        True when the types differ, False when they match, None for Alembic's default rule.
    """
    if not isinstance(metadata_type, sa.types.TypeDecorator):
        return None
    impl = metadata_type.load_dialect_impl(context.dialect)
    stand_in: sa.Column[Any] = sa.Column(metadata_column.name, impl)
    differs: bool = context.impl.compare_type(inspected_column, stand_in)
    return differs


def _mkdirs(settings: Settings) -> None:
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)


def _current(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def run_upgrade(conn: sa.Connection, revision: str) -> str | None:
    """Migrate on ``conn`` (inside its transaction) to ``revision``; returns the revision after.

    A database whose tables ``SqlStore.open()`` created before it was ever migrated is
    stamped at :data:`BASELINE` first. On PostgreSQL an advisory lock makes concurrent callers
    run one after another.
    """
    if conn.dialect.name == "postgresql":  # one upgrade at a time when several pods start
        conn.execute(sa.text("select pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    cfg = alembic_config(conn)
    before = _current(conn)
    if before is None and sa.inspect(conn).has_table("conversations"):
        logger.info("store.migrate_stamped", extra={"revision": BASELINE})
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, revision)
    after = _current(conn)
    logger.info("store.migrated", extra={"from_revision": before, "to_revision": after})
    return after


async def upgrade(settings: Settings, revision: str = "head") -> str | None:
    """Migrate the database at ``settings.resolved_database_url`` to ``revision``.

    Runs in one transaction (PostgreSQL and SQLite have transactional DDL), under an advisory
    lock on PostgreSQL so concurrent callers run one after another. Creates ``data_dir`` for
    the embedded SQLite database.

    Args:
        settings: the database to migrate.
        revision: the target (``head``, a revision id, or ``+1``).

    Returns:
        The revision the database is at afterwards.

    Raises:
        bot.errors.BackendUnavailable: when the database cannot be reached or a revision fails
            (nothing is changed then).
        alembic.util.CommandError: for an unknown revision.
    """
    _mkdirs(settings)
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(run_upgrade, revision)
    except (OSError, DBAPIError) as exc:
        raise BackendUnavailable(f"cannot migrate the database: {exc}") from exc
    finally:
        await engine.dispose()


async def current(settings: Settings) -> str | None:
    """The revision the database is at; None when it was never migrated.

    Raises:
        bot.errors.BackendUnavailable: when the database cannot be reached.
    """
    _mkdirs(settings)
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    except (OSError, DBAPIError) as exc:
        raise BackendUnavailable(f"cannot read the schema revision: {exc}") from exc
    finally:
        await engine.dispose()


def _drift(conn: sa.Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": compare_type, "render_item": render_item}
    )
    diffs: list[Any] = compare_metadata(ctx, TARGET_METADATA)
    return diffs


async def drift(settings: Settings) -> list[Any]:
    """Differences between the models and the database schema (like ``alembic check``).

    Returns:
        Alembic's diff tuples (``("add_table", Table)``, ``("add_column", ...)``...); empty
        when the schema matches the models.

    Raises:
        bot.errors.BackendUnavailable: when the database cannot be reached.
    """
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_drift)
    except (OSError, DBAPIError) as exc:
        raise BackendUnavailable(f"cannot compare the schema: {exc}") from exc
    finally:
        await engine.dispose()


async def make_revision(settings: Settings, message: str, *, rev_id: str | None = None) -> Path:
    """Autogenerate a revision from the models' difference to the database (at ``head``).

    Args:
        settings: a database already upgraded to ``head`` (an empty one for the first).
        message: the revision's title (also its file name's slug).
        rev_id: the revision id; None lets Alembic pick one.

    Returns:
        The path of the new script (review it before committing).
    """

    def run(conn: sa.Connection) -> Path:
        script = command.revision(
            alembic_config(conn), message=message, autogenerate=True, rev_id=rev_id
        )
        assert isinstance(script, Script)
        return Path(script.path)

    _mkdirs(settings)
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(run)
    finally:
        await engine.dispose()
