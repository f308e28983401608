from tests.fakes.postgres import postgres_server, postgres_url
from tests.plugins.ticketing.products import client, product
from tests.store.databases import settings, store

__all__ = ["client", "postgres_server", "postgres_url", "product", "settings", "store"]
