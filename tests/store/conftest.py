from tests.fakes.postgres import postgres_server, postgres_url
from tests.store.databases import settings, store

__all__ = ["postgres_server", "postgres_url", "settings", "store"]
