"""Alembic migrations of the store and the local ticket tables (see :mod:`bot.store.migrate`)."""
