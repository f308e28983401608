from tests.store.databases import settings, store

__all__ = ["settings", "store"]
