"""Fixtures of the knowledge tests: one shared local embedder (loading it takes ~0.5 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from knowledge.embed import LocalEmbedder
from tests.knowledge.embedders import CountingEmbedder

GALAXY = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "knowledge" / "galaxy_s10"
)


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
