"""``switchboard kb bench --chunks N``: ingest speed and hybrid query latency at scale.

What it measures, in order (every figure is printed with how it was obtained):

1. **Ingest**: ``--ingest-sample`` documents of the synthetic corpus (see
   :mod:`knowledge.synthetic`) through :meth:`KnowledgeBase.ingest_documents` into an empty
   index: reading, chunking, embedding with the configured model, sparse vectors, writing.
   Chunks per second of that whole path.
2. **Index build**: all ``N`` chunks written into an empty index with dense vectors composed
   from the model's vectors of the corpus's distinct sentences (computed once, cached in
   ``--cache-dir``; see :func:`knowledge.synthetic.composed_vectors`), so 100,000 chunks do not
   cost 11 minutes of embedding on every run. The bench prints the mean cosine between the
   composed and the model's own vectors on its ingest sample. A built index is kept in
   ``--work-dir`` and reused by the next run with the same ``N``, seed and index kind.
3. **Queries**: the development questions of the source manual (the corpus's vocabulary),
   each asked as written and about one of the corpus's products. ``hybrid`` is what the agent
   waits for, :meth:`KnowledgeBase.search`: embedding the query, the dense and sparse searches,
   fusion. ``index`` is the two searches alone (query vectors embedded beforehand). Each at 1
   query in flight and at ``--concurrency`` in flight (asyncio tasks on one event loop, as in
   ``switchboard serve``); p50 and p95 in milliseconds over ``--queries`` queries.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.config import Settings
from knowledge import sparse
from knowledge.chunk import chunk_document
from knowledge.embed import Embedder, embedder_from_settings
from knowledge.index import IndexedChunk
from knowledge.kb import KnowledgeBase
from knowledge.synthetic import cached_vectors, composed_vectors, synthetic_corpus

#: The manual the corpus and the questions come from (relative to the project root).
DEFAULT_SOURCE = Path("../shared/datasets/knowledge/galaxy_s10")
#: Chunks per index write while building the big index.
BUILD_BATCH = 2048


@dataclass(slots=True)
class Latency:
    """Latency percentiles of one query mode at one concurrency, in milliseconds."""

    mode: str
    concurrency: int
    queries: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


@dataclass(slots=True)
class BenchReport:
    """Everything one bench run measured (see the module docstring)."""

    chunks: int
    index: str
    ingest_sample: int = 0
    ingest_chunks_per_s: float = 0.0
    build_seconds: float = 0.0
    build_reused: bool = False
    vectors_cached: bool = False
    composed_cosine: float = 0.0
    latencies: list[Latency] = field(default_factory=list)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict of the report."""
        out = {k: getattr(self, k) for k in self.__slots__ if k != "latencies"}
        out["latencies"] = [vars_of(x) for x in self.latencies]
        return out


def vars_of(latency: Latency) -> dict[str, Any]:
    """The fields of ``latency`` as a dict."""
    return {k: getattr(latency, k) for k in latency.__slots__}


def _index_kind(settings: Settings) -> str:
    return "server" if settings.qdrant_url else str(getattr(settings, "kb_index", "local"))


async def _timed(
    calls: Sequence[Callable[[], Awaitable[object]]], concurrency: int
) -> list[float]:
    """Run ``calls`` with at most ``concurrency`` in flight; each one's seconds."""
    gate = asyncio.Semaphore(concurrency)
    out: list[float] = [0.0] * len(calls)

    async def one(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            await calls[n]()
            out[n] = time.perf_counter() - started

    await asyncio.gather(*(one(n) for n in range(len(calls))))
    return out


def _latency(mode: str, concurrency: int, seconds: list[float]) -> Latency:
    ms = sorted(s * 1000 for s in seconds)
    return Latency(
        mode=mode,
        concurrency=concurrency,
        queries=len(ms),
        p50_ms=round(statistics.median(ms), 2),
        p95_ms=round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 2),
        mean_ms=round(statistics.fmean(ms), 2),
    )


def _questions(source: Path, count: int) -> list[str]:
    base: list[str] = []
    qa = source / "qa.jsonl"
    with qa.open(encoding="utf-8") as handle:
        base = [json.loads(line)["question"] for line in handle if line.strip()]
    products = ("Nova 6 Plus", "Atlas 7", "Helix 8 Pro", "Lumen 5 Mini", "Echo 6")
    out: list[str] = []
    for n in range(count):
        question = base[n % len(base)]
        round_ = n // len(base)
        out.append(question if round_ % 2 == 0 else f"{question} {products[n % len(products)]}")
    return out


async def run_bench(
    settings: Settings,
    *,
    chunks: int,
    source: Path = DEFAULT_SOURCE,
    ingest_sample: int = 1000,
    queries: int = 200,
    concurrency: int = 20,
    work_dir: Path,
    cache_dir: Path,
    seed: int = 0,
    embedder: Embedder | None = None,
    say: Callable[[str], None] = print,
) -> BenchReport:
    """Run the bench (see the module docstring) and return its figures.

    Args:
        settings: the configuration; ``data_dir`` is replaced by folders of ``work_dir``, the
            rest (index kind, ``qdrant_url``, embedding model) is used as configured.
        chunks: size of the big index.
        source: folder with the manual's ``kb.jsonl`` and ``qa.jsonl``.
        ingest_sample: documents (one chunk each) ingested end to end; 0 skips the step.
        queries: queries per latency measurement.
        concurrency: queries in flight of the concurrent measurement.
        work_dir: where the indexes are built (kept between runs).
        cache_dir: where the pieces' vectors are kept between runs.
        seed: the corpus's random seed.
        embedder: the embedder (default: the one ``settings`` asks for).
        say: where progress lines go.

    Raises:
        OSError: when the source files cannot be read.
        bot.errors.BackendUnavailable: when the index fails.
    """
    kind = _index_kind(settings)
    report = BenchReport(chunks=chunks, index=kind)
    if embedder is None:
        embedder = await asyncio.to_thread(embedder_from_settings, settings)
    corpus = await asyncio.to_thread(synthetic_corpus, source / "kb.jsonl", chunks, seed=seed)
    say(f"corpus: {chunks} one-chunk documents from {source / 'kb.jsonl'}")

    if ingest_sample > 0:
        folder = work_dir / f"ingest-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        kb = await KnowledgeBase.open(
            settings.model_copy(update={"data_dir": folder}), embedder=embedder
        )
        try:
            docs = corpus.documents[: min(ingest_sample, chunks)]
            result = await kb.ingest_documents(docs)
        finally:
            await kb.close()
        shutil.rmtree(folder, ignore_errors=True)
        report.ingest_sample = result.chunks_written
        report.ingest_chunks_per_s = round(result.chunks_per_second, 1)
        say(
            f"ingest: {result.chunks_written} chunks in {result.seconds:.1f} s = "
            f"{report.ingest_chunks_per_s} chunks/s (read, chunk, embed, write)"
        )

    pieces, report.vectors_cached = await asyncio.to_thread(
        cached_vectors,
        cache_dir,
        corpus.pieces,
        model_id=embedder.model_id,
        embed=lambda texts: _embed_blocking(embedder, texts),
    )
    dense = composed_vectors(corpus, pieces)
    check = min(100, chunks)
    texts = [chunk_document(d)[0].embedding_text() for d in corpus.documents[:check]]
    real = await embedder.embed(texts)
    report.composed_cosine = round(float(np.mean(np.sum(real * dense[:check], axis=1))), 3)
    say(
        f"vectors: composed from {len(corpus.pieces)} embedded pieces "
        f"({'cached' if report.vectors_cached else 'computed'}); mean cosine to the model's "
        f"own vectors on {check} chunks: {report.composed_cosine}"
    )

    folder = work_dir / f"index-{kind}-{chunks}-{seed}"
    index_settings = settings.model_copy(update={"data_dir": folder})
    kb = await KnowledgeBase.open(index_settings, embedder=embedder)
    try:
        if await kb.index.chunk_count() == chunks:
            report.build_reused = True
            say(f"index: reusing the {chunks} chunks in {folder}")
        else:
            await kb.close()
            shutil.rmtree(folder, ignore_errors=True)
            kb = await KnowledgeBase.open(index_settings, embedder=embedder)
            report.build_seconds = await _build(kb, corpus.documents, dense, say)
        report.latencies = await _measure(kb, _questions(source, queries), concurrency)
    finally:
        await kb.close()
    report.load_average = os.getloadavg()
    for lat in report.latencies:
        say(
            f"{lat.mode:>6} query, {lat.concurrency:>2} in flight: p50 {lat.p50_ms:7.1f} ms  "
            f"p95 {lat.p95_ms:7.1f} ms  ({lat.queries} queries)"
        )
    say("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*report.load_average))
    return report


def _embed_blocking(embedder: Embedder, texts: list[str]) -> np.ndarray[Any, Any]:
    return asyncio.run(embedder.embed(texts))


async def _build(
    kb: KnowledgeBase, docs: Sequence[Any], dense: np.ndarray[Any, Any], say: Callable[[str], None]
) -> float:
    started = time.perf_counter()
    async with kb.index.writing():
        for start in range(0, len(docs), BUILD_BATCH):
            batch: list[IndexedChunk] = []
            for n in range(start, min(len(docs), start + BUILD_BATCH)):
                chunk = chunk_document(docs[n])[0]
                batch.append(
                    IndexedChunk(
                        chunk=chunk,
                        dense=dense[n].tolist(),
                        sparse=sparse.document_vector(chunk.embedding_text()),
                        content_hash=f"bench:{n}",
                        metadata={},
                    )
                )
            await kb.index.upsert(batch)
    seconds = round(time.perf_counter() - started, 1)
    say(f"index: {len(docs)} chunks written in {seconds} s ({len(docs) / seconds:.0f} chunks/s)")
    return seconds


async def _measure(kb: KnowledgeBase, questions: list[str], concurrency: int) -> list[Latency]:
    vectors = await kb.embedder.embed(questions)
    limit = kb.retriever.candidates

    def hybrid(q: str) -> Callable[[], Awaitable[object]]:
        return lambda: kb.search(q, top_k=5)

    def index_only(n: int) -> Callable[[], Awaitable[object]]:
        async def call() -> None:
            d, s = await kb.index.search(
                vectors[n].tolist(), sparse.query_vector(questions[n]), limit=limit
            )
            kb.retriever.fuse(d, s, vectors[n], limit=limit)

        return call

    await _timed([hybrid(q) for q in questions[:10]], 1)  # warm-up: caches, thread pool
    out: list[Latency] = []
    for level in (1, concurrency):
        calls = [index_only(n) for n in range(len(questions))]
        out.append(_latency("index", level, await _timed(calls, level)))
        out.append(_latency("hybrid", level, await _timed([hybrid(q) for q in questions], level)))
    return out


async def bench_command(args: Any, settings: Settings) -> int:
    """Run ``switchboard kb bench`` with its parsed arguments; returns the exit status."""
    source = args.source or DEFAULT_SOURCE
    embedder = await asyncio.to_thread(embedder_from_settings, settings)
    for chunks in args.chunks or [10_000]:
        for run in range(args.runs):
            say: Callable[[str], None] = (lambda _line: None) if args.json else print
            say(f"--- kb bench: {chunks} chunks, run {run + 1} of {args.runs}")
            report = await run_bench(
                settings,
                chunks=chunks,
                source=source,
                ingest_sample=args.ingest_sample,
                queries=args.queries,
                concurrency=args.concurrency,
                work_dir=args.work_dir,
                cache_dir=args.work_dir / "vectors",
                embedder=embedder,
                say=say,
            )
            if args.json:
                print(json.dumps(report.to_json()))
    return 0
