"""Embedder wrappers for the knowledge tests."""

from __future__ import annotations

from collections.abc import Sequence

from knowledge.embed import LocalEmbedder, Vectors


class CountingEmbedder:
    """Wraps an embedder and counts the texts it was asked to embed."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.texts = 0
        self.calls = 0

    async def dimension(self) -> int:
        return await self.inner.dimension()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.texts += len(texts)
        return await self.inner.embed(texts)
