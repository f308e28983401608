"""Retrieval quality on the Galaxy S10 development set and on the docs/ evaluation set.

The Galaxy S10 set (451 sections, 50 questions, strict gold) is for development; the docs/ set
(135 sections, 42 questions written before any tuning, tests/knowledge/data/switchboard_docs)
checks that the ranking holds on a document and question style it was not tuned on. Ingesting
embeds ~470 and ~140 chunks: about 20 s on two cores.
"""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from knowledge import KnowledgeBase
from tests.knowledge.embedders import CountingEmbedder

DOCS_SET = Path(__file__).parent / "data" / "switchboard_docs"


async def test_galaxy_recall(settings: Settings, embedder: CountingEmbedder, galaxy: Path) -> None:
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        ingest = await kb.ingest([galaxy / "kb.jsonl"])
        assert ingest.documents_added == 451
        assert await kb.document_count() == 451

        report = await kb.evaluate(galaxy / "qa.jsonl")

        assert report.questions == 50
        # Issue 11: recall@3 >= 0.90 with the strict gold (measured 0.96).
        assert report.recall_at_3 >= 0.90
        assert report.recall_at_1 >= 0.75
        assert report.mrr_at_10 >= 0.85
    finally:
        await kb.close()


async def test_docs_set_recall(settings: Settings, embedder: CountingEmbedder) -> None:
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        ingest = await kb.ingest([DOCS_SET / "kb.jsonl"])
        assert ingest.documents_added == 135

        report = await kb.evaluate(DOCS_SET / "qa.jsonl")

        assert report.questions == 42
        # Measured 0.81 / 0.93 / 0.88; the fixed-weight fusion fitted to the Galaxy set got
        # recall@1 0.67 and MRR 0.78 here.
        assert report.recall_at_3 >= 0.90
        assert report.recall_at_1 >= 0.75
        assert report.mrr_at_10 >= 0.84
    finally:
        await kb.close()
