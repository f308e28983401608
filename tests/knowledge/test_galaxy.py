"""Retrieval quality on the Galaxy S10 development set (451 sections, 50 questions).

Ingesting embeds ~470 chunks: about 15 s on two cores.
"""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from knowledge import KnowledgeBase
from tests.knowledge.embedders import CountingEmbedder


async def test_galaxy_recall(settings: Settings, embedder: CountingEmbedder, galaxy: Path) -> None:
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        ingest = await kb.ingest([galaxy / "kb.jsonl"])
        assert ingest.documents_added == 451
        assert await kb.document_count() == 451

        report = await kb.evaluate(galaxy / "qa.jsonl")

        assert report.questions == 50
        # Issue 2's baselines: BM25 0.84, dense 0.82, plain reciprocal-rank fusion 0.88.
        assert report.recall_at_3 >= 0.88
        assert report.recall_at_1 >= 0.75
        assert report.mrr_at_10 >= 0.85
    finally:
        await kb.close()
