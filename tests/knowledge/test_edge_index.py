"""The embedded Qdrant Edge index read by several processes at once, in place."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bot.config import Settings
from knowledge import KnowledgeBase, sparse
from knowledge.edge_index import EdgeIndex
from knowledge.sparse import SparseTerms
from tests.knowledge.embedders import CountingEmbedder
from tests.knowledge.test_kb import DOCS, write_docs

# Another process: opens the index, reports what it reads, waits, reads again.
READER = """
import asyncio, sys
from pathlib import Path
from bot.config import Settings
from knowledge.edge_index import EdgeIndex

async def main() -> None:
    index = await EdgeIndex.open(Settings(data_dir=Path(sys.argv[1])), dimension=384)
    for _ in range(2):
        count = await index.chunk_count()
        print(index._generation.folder, count, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await asyncio.sleep(1.1)  # past the refresh interval
    await index.close()

asyncio.run(main())
"""


async def test_processes_share_the_index_in_place_and_see_new_versions(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    root = settings.data_dir / "kb-edge" / "knowledge"
    docs = write_docs(tmp_path, DOCS)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    reader = None
    try:
        await kb.ingest([docs])
        first = root / (root / "CURRENT").read_text()
        reader = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            READER,
            str(settings.data_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert reader.stdin is not None
        assert reader.stdout is not None
        line = (await asyncio.wait_for(reader.stdout.readline(), 60)).decode().split()
        assert line == [str(first), "5"]  # the published folder itself, no copy

        (docs / "billing.md").write_text("# Billing\n\nInvoices are sent monthly.\n")
        report = await kb.ingest([docs])
        assert report.documents_added == 1
        second = root / (root / "CURRENT").read_text()
        assert second != first
        assert first.is_dir()  # the other process still reads it: kept

        reader.stdin.write(b"\n")
        line = (await asyncio.wait_for(reader.stdout.readline(), 60)).decode().split()
        assert line == [str(second), "6"]  # switched to the new version without a restart
        assert not first.exists()  # the last process to leave the old version removed it
        reader.stdin.write(b"\n")
        assert await asyncio.wait_for(reader.wait(), 60) == 0
        reader = None

        (docs / "billing.md").write_text("# Billing\n\nInvoices are sent every month.\n")
        await kb.ingest([docs])
        assert sorted(p.name for p in root.glob("gen-*")) == [(root / "CURRENT").read_text()]
        assert (await kb.search("When are invoices sent?"))[0].doc_id == "billing"
    finally:
        if reader is not None:
            reader.kill()
            await reader.wait()
        await kb.close()


async def test_an_ingest_that_changes_nothing_publishes_nothing(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    root = settings.data_dir / "kb-edge" / "knowledge"
    docs = write_docs(tmp_path, DOCS)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        await kb.ingest([docs])
        published = (root / "CURRENT").read_text()
        report = await kb.ingest([docs])
        assert report.documents_unchanged == 4
        assert (root / "CURRENT").read_text() == published
        assert [p.name for p in root.glob("gen-*")] == [published]
    finally:
        await kb.close()


QUESTIONS = [
    "How do I connect Slack?",
    "Where do I put the Telegram bot token?",
    "Which events does the Slack app subscribe to?",
    "How do agents claim a conversation?",
    "How do I deploy behind a reverse proxy?",
    "Where is the signing secret set?",
]


async def test_concurrent_searches_run_together_and_find_what_each_finds_alone(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        await kb.ingest([write_docs(tmp_path, DOCS)])
        index = kb.index
        assert isinstance(index, EdgeIndex)
        vectors = await embedder.embed(QUESTIONS)
        queries = [(vectors[n].tolist(), sparse.query_vector(q)) for n, q in enumerate(QUESTIONS)]
        alone = [await index.search(d, s, limit=2) for d, s in queries]
        batches = index._searches.batches

        together = await asyncio.gather(*(index.search(d, s, limit=2) for d, s in queries))

        assert index._searches.batches - batches < len(QUESTIONS)  # shared engine calls
        for (dense_a, sparse_a), (dense_t, sparse_t) in zip(alone, together, strict=True):
            assert [(h.chunk_id, h.score) for h in dense_a] == [
                (h.chunk_id, h.score) for h in dense_t
            ]
            assert [(h.chunk_id, h.cosine) for h in sparse_a] == [
                (h.chunk_id, h.cosine) for h in sparse_t
            ]
    finally:
        await kb.close()


async def test_sparse_hits_carry_the_cosine_the_dense_search_gives_them(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        await kb.ingest([write_docs(tmp_path, DOCS)])
        question = "Where do I paste the token of the bot?"  # Slack and Telegram both match
        vector = (await embedder.embed([question]))[0].tolist()
        every, _ = await kb.index.search(vector, SparseTerms([], []), limit=100)
        cosine_of = {h.chunk_id: h.score for h in every}

        dense_hits, sparse_hits = await kb.index.search(
            vector, sparse.query_vector(question), limit=1
        )

        only_sparse = [
            h for h in sparse_hits if h.chunk_id not in {d.chunk_id for d in dense_hits}
        ]
        # limit=1: the dense search returns one chunk, BM25 ranks another first.
        assert only_sparse, "the test needs a sparse hit the dense search did not return"
        for hit in only_sparse:
            assert hit.dense is None
            assert hit.cosine == pytest.approx(cosine_of[hit.chunk_id], abs=1e-5)
    finally:
        await kb.close()
