"""Fixtures of the knowledge tests: one shared local embedder (loading it takes ~0.5 s)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.config import Settings
from knowledge.embed import LocalEmbedder, Vectors

GALAXY = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "knowledge" / "galaxy_s10"
)


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


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture
def embedder(local_embedder: LocalEmbedder) -> CountingEmbedder:
    return CountingEmbedder(local_embedder)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def galaxy() -> Path:
    assert GALAXY.is_dir(), f"dataset missing at {GALAXY}"
    return GALAXY.resolve()
