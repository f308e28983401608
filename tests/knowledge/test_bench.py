"""``switchboard kb bench`` at a tiny size: it builds, measures and reuses what it built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.config import Settings
from knowledge.bench import run_bench
from knowledge.chunk import chunk_document
from knowledge.embed import LocalEmbedder
from knowledge.synthetic import synthetic_corpus


def test_the_synthetic_corpus_is_distinct_one_chunk_documents(galaxy: Path) -> None:
    corpus = synthetic_corpus(galaxy / "kb.jsonl", 500, seed=3)

    assert [len(chunk_document(d)) for d in corpus.documents] == [1] * 500
    assert len({d.text for d in corpus.documents}) == 500
    assert synthetic_corpus(galaxy / "kb.jsonl", 500, seed=3) == corpus


async def test_bench_measures_both_concurrencies_and_reuses_its_index(
    galaxy: Path, local_embedder: LocalEmbedder, tmp_path: Path
) -> None:
    lines: list[str] = []
    settings = Settings(data_dir=tmp_path / "unused")
    args: dict[str, Any] = {
        "chunks": 40,
        "source": galaxy,
        "ingest_sample": 8,
        "queries": 12,
        "concurrency": 4,
        "work_dir": tmp_path / "work",
        "cache_dir": tmp_path / "cache",
        "embedder": local_embedder,
        "say": lines.append,
    }
    first = await run_bench(settings, **args)

    assert first.index == "edge"
    assert first.ingest_sample == 8
    assert first.ingest_chunks_per_s > 0
    assert not first.build_reused
    assert not first.vectors_cached
    assert 0.3 < first.composed_cosine <= 1.0
    assert [(x.mode, x.concurrency, x.queries) for x in first.latencies] == [
        ("index", 1, 12),
        ("hybrid", 1, 12),
        ("index", 4, 12),
        ("hybrid", 4, 12),
    ]
    assert all(0 < x.p50_ms <= x.p95_ms for x in first.latencies)
    assert any("hybrid query,  4 in flight" in line for line in lines)

    again = await run_bench(settings, **{**args, "ingest_sample": 0})
    assert again.build_reused
    assert again.vectors_cached
    assert again.ingest_sample == 0
