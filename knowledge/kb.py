"""The knowledge base facade used by the CLI, the server and the agent.

``KnowledgeBase.open(settings)`` opens the embedder and the Qdrant index; ``ingest`` reads,
chunks, embeds and stores documents incrementally (content hash per document); ``search``
retrieves passages (it is a :class:`bot.retrieval.Retriever`); ``evaluate`` scores retrieval on
annotated questions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.retrieval import Passage
from knowledge import sparse
from knowledge.chunk import Chunk, Document, chunk_document
from knowledge.edge_index import EdgeIndex
from knowledge.embed import Embedder, embedder_from_settings
from knowledge.evaluate import EvalReport, evaluate, load_questions
from knowledge.index import ChunkIndex, IndexedChunk, QdrantIndex
from knowledge.ingest import content_hash, read_documents
from knowledge.retrieve import HybridRetriever

log = logging.getLogger(__name__)

#: Texts per embedding call (sorted by length, so padding stays small; the local embedder
#: splits a call into model batches by token count itself). Each call's chunks are written
#: while the next call embeds.
EMBED_BATCH = 64
#: Chunks embedded before their documents are written (bounds memory on large ingests).
GROUP_CHUNKS = 1024

#: ``progress(done, total, current)``: chunks embedded so far, chunks to embed in this ingest,
#: and the doc id being worked on.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ingest did.

    Attributes:
        documents_added: documents that were not in the index.
        documents_updated: documents whose content changed (old chunks replaced).
        documents_unchanged: documents skipped because their content hash is unchanged.
        documents_empty: new documents without any text (nothing stored).
        chunks_written: chunks embedded and stored.
        seconds: wall time of the ingest.
        documents_removed: documents pruned because their source no longer has them.
    """

    documents_added: int
    documents_updated: int
    documents_unchanged: int
    documents_empty: int
    chunks_written: int
    seconds: float
    documents_removed: int = 0

    @property
    def chunks_per_second(self) -> float:
        """Ingest speed in chunks per second (0 when nothing was written)."""
        return self.chunks_written / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Pending:
    doc: Document
    hash: str
    chunks: list[Chunk]
    replaces: bool
    origin: str | None


def path_origin(path: Path) -> str:
    """The ``origin`` of documents read from the file or folder ``path`` (for pruning)."""
    return f"path:{path.resolve()}"


#: ``(document, origin)``: a document and the source it was read from (None: no source).
Sourced = tuple[Document, str | None]


async def open_index(settings: Settings, *, dimension: int) -> ChunkIndex:
    """The index ``settings`` asks for (see :mod:`knowledge.index`), opened.

    Args:
        settings: ``qdrant_url``, ``kb_index``, ``kb_collection``, ``data_dir``.
        dimension: the dense vector length of the embedder.

    Raises:
        bot.errors.BackendUnavailable: when the index cannot be opened.
        bot.errors.ConfigError: when it holds dense vectors of another length.
    """
    if settings.qdrant_url is None and settings.kb_index == "edge":
        return await EdgeIndex.open(settings, dimension=dimension)
    return await QdrantIndex.open(settings, dimension=dimension)


def index_stored(settings: Settings) -> bool:
    """Whether ``settings`` name an index that may hold documents (without opening it).

    A Qdrant server may; an embedded index only once an ingest wrote its folder.
    """
    if settings.qdrant_url is not None:
        return True
    if settings.kb_index == "edge":
        return EdgeIndex.published_in(settings)
    return settings.qdrant_path.exists()


class KnowledgeBase:
    """Ingest, search and evaluate one knowledge base. Create with :meth:`open`."""

    def __init__(self, settings: Settings, index: ChunkIndex, embedder: Embedder) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.retriever = HybridRetriever(index, embedder)
        self._ingest_lock = asyncio.Lock()

    @classmethod
    async def open(cls, settings: Settings, *, embedder: Embedder | None = None) -> KnowledgeBase:
        """Load the embedder (unless given) and open the index, creating it if needed.

        Raises:
            bot.errors.ConfigError: when the model files are missing, or the index was built
                with a model of another vector size.
            bot.errors.BackendUnavailable: when Qdrant (or a remote embedder) is unreachable,
                or the local index folder is in use by another process.
        """
        if embedder is None:
            embedder = await asyncio.to_thread(embedder_from_settings, settings)
        index = await open_index(settings, dimension=await embedder.dimension())
        log.info(
            "knowledge.opened",
            extra={
                "collection": settings.kb_collection,
                "index": "server" if settings.qdrant_url else settings.kb_index,
                "model_id": embedder.model_id,
            },
        )
        return cls(settings, index, embedder)

    async def close(self) -> None:
        """Close the index (releases the local folder for other processes)."""
        await self.index.close()

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        """The ``top_k`` best passages for ``query``; see :meth:`HybridRetriever.search`.

        Raises:
            bot.errors.BackendUnavailable: when the index cannot be queried.
        """
        return await self.retriever.search(query, top_k=top_k)

    async def document_count(self) -> int:
        """How many documents (with at least one chunk) the index holds.

        Raises:
            bot.errors.BackendUnavailable: when the index cannot be queried.
        """
        return await self.index.document_count()

    async def find_chunks(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The payloads of every stored chunk for which ``keep(payload)`` (a full scan).

        Raises:
            bot.errors.BackendUnavailable: when the index cannot be read.
        """
        return await self.index.find_chunks(keep)

    async def rewrite_chunks(
        self, payloads: Sequence[dict[str, Any]], *, remove: Sequence[str] = ()
    ) -> None:
        """Store chunks again from edited payloads, and delete documents, leaving no trace.

        For erasure (:mod:`knowledge.subjects`): each payload (as :meth:`find_chunks` returns
        it, its text fields edited) is embedded again, dense and sparse, and stored under its
        doc id and chunk index with its content hash and origin unchanged (an unchanged source
        is not ingested again); the documents ``remove`` are deleted. One compacting write
        (:meth:`knowledge.index.ChunkIndex.writing`): nothing of the old text stays in the
        index's files.

        Raises:
            bot.errors.BackendUnavailable: when the index or a remote embedder fails.
        """
        chunks = [
            Chunk(
                doc_id=str(p["doc_id"]),
                index=int(p["chunk_index"]),
                title=str(p.get("title") or ""),
                heading=str(p.get("heading") or ""),
                text=str(p.get("text") or ""),
                url=p.get("url"),
            )
            for p in payloads
        ]
        texts = [c.embedding_text() for c in chunks]
        dense = [
            v
            for i in range(0, len(texts), EMBED_BATCH)
            for v in await self.embedder.embed(texts[i : i + EMBED_BATCH])
        ]
        terms = await asyncio.to_thread(_sparse_vectors, texts)
        indexed = [
            IndexedChunk(
                chunk=c,
                dense=vector.tolist(),
                sparse=sparse_terms,
                content_hash=str(p.get("content_hash") or ""),
                metadata=dict(p.get("metadata") or {}),
                origin=p.get("origin"),
            )
            for c, vector, sparse_terms, p in zip(chunks, dense, terms, payloads, strict=True)
        ]
        async with self._ingest_lock, self.index.writing(compact=True):
            if remove:
                await self.index.delete_documents(list(remove))
            if indexed:
                await self.index.upsert(indexed)
        log.info(
            "knowledge.rewritten", extra={"chunks": len(indexed), "documents_removed": len(remove)}
        )

    async def evaluate(self, qa_path: Path) -> EvalReport:
        """Recall@1/3/5 and MRR@10 of retrieval on the questions in ``qa_path``.

        Raises:
            knowledge.ingest.IngestError: when the question file is unreadable or malformed.
            bot.errors.BackendUnavailable: when the index cannot be queried.
        """
        questions = await asyncio.to_thread(load_questions, qa_path)
        return await evaluate(self.retriever, questions)

    async def ingest(
        self,
        paths: Sequence[Path],
        *,
        base_url: str | None = None,
        progress: Progress | None = None,
        prune: bool = True,
    ) -> IngestReport:
        """Add or update the documents under ``paths`` (see :mod:`knowledge.ingest`).

        A document whose content hash is unchanged costs nothing; a changed one has all its old
        chunks replaced. Chunks are embedded in length-sorted batches. With ``prune``, the
        documents an earlier ingest read from one of ``paths`` (the same file or folder) that
        it no longer holds are deleted.

        Args:
            paths: files and folders (Markdown, HTML, text, JSONL).
            base_url: gives documents without a URL ``base_url + doc_id``.
            progress: called with ``(done, total, doc_id)`` in chunks, once before embedding
                starts and after every batch.
            prune: delete documents gone from ``paths``.

        Raises:
            knowledge.ingest.IngestError: when a path is missing or a file is malformed (nothing
                is written in that case).
            bot.errors.BackendUnavailable: when Qdrant or a remote embedder fails.
        """
        async with self._ingest_lock:
            started = time.perf_counter()

            def read() -> list[Sourced]:
                return [
                    (doc, path_origin(path))
                    for path in paths
                    for doc in read_documents([path], base_url=base_url)
                ]

            items = await asyncio.to_thread(read)
            origins = {path_origin(p): set[str]() for p in paths} if prune else {}
            return await self._ingest_docs(items, started, progress, origins)

    async def ingest_documents(
        self,
        docs: Sequence[Document],
        *,
        progress: Progress | None = None,
        origin: str | None = None,
        keep: Sequence[str] = (),
    ) -> IngestReport:
        """Add or update documents read elsewhere (a site crawl, an upload), as :meth:`ingest`.

        Args:
            docs: the documents.
            progress: see :meth:`ingest`.
            origin: the source ``docs`` are all of it has now (a sitemap URL): stored documents
                of that origin missing from ``docs`` and ``keep`` are deleted. None (uploads,
                single pages): nothing is pruned.
            keep: ids of documents of ``origin`` to keep although missing (pages that could not
                be fetched this time).

        Raises:
            bot.errors.BackendUnavailable: when Qdrant or a remote embedder fails.
        """
        async with self._ingest_lock:
            origins = {origin: set(keep)} if origin is not None else {}
            items: list[Sourced] = [(doc, origin) for doc in docs]
            return await self._ingest_docs(items, time.perf_counter(), progress, origins)

    async def _ingest_docs(
        self,
        items: list[Sourced],
        started: float,
        progress: Progress | None,
        prune: dict[str, set[str]],
    ) -> IngestReport:
        by_id: dict[str, Sourced] = {}
        for doc, origin in items:
            if doc.doc_id in by_id:
                log.warning(
                    "knowledge.duplicate_doc_id",
                    extra={"doc_id": doc.doc_id, "source": doc.source},
                )
            by_id[doc.doc_id] = (doc, origin)
        manifest = await self.index.manifest()
        gone: set[str] = set()
        for origin, keep in prune.items():
            gone |= await self.index.documents_from(origin) - keep
        gone -= by_id.keys()
        # Hashing and chunking parse every changed document: keep it off the event loop.
        pending, unchanged, empty = await asyncio.to_thread(
            self._plan, list(by_id.values()), manifest
        )
        total = sum(len(p.chunks) for p in pending)
        if progress is not None:
            progress(0, total, "")
        done = 0
        group: list[_Pending] = []
        group_size = 0
        async with self.index.writing():
            if gone:
                await self.index.delete_documents(sorted(gone))
            for item in pending:
                group.append(item)
                group_size += len(item.chunks)
                if group_size >= GROUP_CHUNKS:
                    done = await self._write_group(group, done, total, progress)
                    group, group_size = [], 0
            if group:
                done = await self._write_group(group, done, total, progress)
        report = IngestReport(
            documents_added=sum(1 for p in pending if not p.replaces),
            documents_updated=sum(1 for p in pending if p.replaces),
            documents_unchanged=unchanged,
            documents_empty=empty,
            chunks_written=done,
            seconds=round(time.perf_counter() - started, 3),
            documents_removed=len(gone),
        )
        log.info(
            "knowledge.ingested",
            extra={
                "removed": report.documents_removed,
                "added": report.documents_added,
                "updated": report.documents_updated,
                "unchanged": report.documents_unchanged,
                "chunks": report.chunks_written,
                "seconds": report.seconds,
            },
        )
        return report

    def _plan(
        self, items: list[Sourced], manifest: dict[str, str]
    ) -> tuple[list[_Pending], int, int]:
        """The documents to (re)write with their chunks, and the unchanged and empty counts."""
        unchanged = empty = 0
        pending: list[_Pending] = []
        for doc, origin in items:
            digest = content_hash(doc, model_id=self.embedder.model_id)
            if manifest.get(doc.doc_id) == digest:
                unchanged += 1
                continue
            chunks = chunk_document(doc)
            if not chunks and doc.doc_id not in manifest:
                empty += 1
                continue
            pending.append(_Pending(doc, digest, chunks, doc.doc_id in manifest, origin))
        return pending, unchanged, empty

    async def _write_group(
        self, group: list[_Pending], done: int, total: int, progress: Progress | None
    ) -> int:
        """Embed and store the chunks of ``group``; returns the new ``done`` count.

        The group's documents are deleted first. Chunks are embedded in length-sorted batches;
        each batch is written while the next one is embedded. Chunk 0 of each document, which
        carries the document's content hash (the manifest), is written last: an ingest that
        stops half-way leaves documents that the next ingest sees as new and rewrites.
        """
        await self.index.delete_documents([p.doc.doc_id for p in group])
        flat = [(p, c) for p in group for c in p.chunks]
        texts = [c.embedding_text() for _, c in flat]
        order = sorted(range(len(flat)), key=lambda i: len(texts[i]))
        firsts: list[IndexedChunk] = []
        writing: asyncio.Task[None] | None = None
        try:
            for start in range(0, len(order), EMBED_BATCH):
                batch = order[start : start + EMBED_BATCH]
                batch_texts = [texts[i] for i in batch]
                # The sparse vectors (Python) are computed while the model runs (onnxruntime
                # releases the GIL), both off the event loop.
                vectors, sparse_vectors = await asyncio.gather(
                    self.embedder.embed(batch_texts),
                    asyncio.to_thread(_sparse_vectors, batch_texts),
                )
                ready: list[IndexedChunk] = []
                for i, vector, terms in zip(batch, vectors, sparse_vectors, strict=True):
                    p, c = flat[i]
                    indexed = IndexedChunk(
                        chunk=c,
                        dense=vector.tolist(),
                        sparse=terms,
                        content_hash=p.hash,
                        metadata=p.doc.metadata,
                        origin=p.origin,
                    )
                    (firsts if c.index == 0 else ready).append(indexed)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self.index.upsert(ready))
                done += len(batch)
                if progress is not None:
                    progress(done, total, flat[batch[-1]][1].doc_id)
            if writing is not None:
                await writing
            await self.index.upsert(firsts)
        finally:
            if writing is not None and not writing.done():
                await asyncio.gather(writing, return_exceptions=True)
        return done


def _sparse_vectors(texts: list[str]) -> list[sparse.SparseTerms]:
    """The BM25 document vectors of ``texts`` (see :mod:`knowledge.sparse`)."""
    return [sparse.document_vector(text) for text in texts]
