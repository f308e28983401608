"""The embedded index: Qdrant Edge (``qdrant-edge-py``) in-process, shared by every process.

Same collection layout and semantics as :class:`knowledge.index.QdrantIndex` (a named dense
vector ``dense``, cosine; a named sparse vector ``sparse`` with the IDF modifier; the same
payload and point ids), on Qdrant's embedded engine: HNSW for the dense search and an inverted
index for the sparse one, in this process, no server. Reference:
https://qdrant.tech/documentation/edge/edge-api/ (``EdgeShard``, ``EdgeConfig``,
``UpdateOperation``, ``QueryRequest``).

**Several processes, one index, no copy.** An Edge shard is owned by the one ``EdgeShard`` that
opened it (its write-ahead log is locked), and the Python bindings have no read-only follower.
So the index is kept as *generations*, ``DATA_DIR/kb-edge/<collection>/gen-NNNNNN``, each an
Edge shard without a write-ahead log that nobody changes once published; the file ``CURRENT``
names the published one. Every process (``serve``, each ``worker``, ``kb eval``) loads the
current generation in place (memory-mapped: nothing is copied at start) and, before a read,
notices a new ``CURRENT`` (one ``stat`` per second at most) and switches to it. A writer
(an ingest, in any process) takes the folder's ``.writer.lock`` (one ingest at a time), copies
the current generation to a new one, applies its changes there, builds the HNSW index
(``optimize``), flushes, and publishes it by replacing ``CURRENT`` (an atomic rename). Readers
hold a shared lock on their generation's ``.readers`` file; the writer removes old generations
that no reader holds, and a reader that leaves an old generation removes it when it was the last.
An ingest that changes nothing writes nothing.

**Erasure.** A copied generation keeps the bytes of the payloads its writes overwrite or delete
in its segment files (the engine marks them free), and its payload indexes keep the keys of
deleted points. A write block opened with ``writing(compact=True)`` (data-subject erasure,
:mod:`knowledge.subjects`) therefore starts the new generation empty, applies its writes there,
and at its end copies in every point of the published generation that it neither deleted (by
document) nor wrote again: nothing of what they replace is in the new files. Reads inside such
a block see the published generation. The old generations go as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import qdrant_edge as qe

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError
from knowledge.coalesce import Coalescer
from knowledge.index import DENSE, SPARSE, Hit, IndexedChunk, point_id
from knowledge.sparse import SparseTerms

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_CURRENT = "CURRENT"
_READERS = ".readers"
_WRITER = ".writer.lock"
#: Seconds between two checks for a newly published generation.
REFRESH_S = 1.0
_UPSERT_BATCH = 1024
#: The one thread that runs searches. The engine releases the GIL while it searches and must
#: take it back after; with many Python threads each such hand-over waits for the
#: interpreter's switch interval (5 ms), so concurrent searches in many threads were slower
#: than the same searches queued on one (the engine parallelizes inside a search itself).
_READS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-search")
#: Most concurrent searches run in one engine call.
SEARCH_BATCH = 32
#: One search: the query's dense vector and its dense (and sparse) request.
_Search = tuple[list[float], list[qe.QueryRequest]]


def _first_chunks() -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key="chunk_index", match=qe.MatchValue(0))])


class _Superseded(Exception):
    """A newer version was published while this one was being opened."""


class _Generation:
    """One loaded generation: the shard and the shared lock that keeps it on disk."""

    def __init__(self, folder: Path, published: Callable[[], Path | None]) -> None:
        self.folder = folder
        lock = (folder / _READERS).open("ab")  # FileNotFoundError: removed meanwhile
        try:
            fcntl.flock(lock, fcntl.LOCK_SH)
            # Under the shared lock no writer removes it; before, one may have (a writer only
            # removes versions older than the published one).
            shard = _load(folder) if published() == folder else None
        except BaseException:
            lock.close()
            raise
        if shard is None:
            lock.close()
            raise _Superseded(folder.name)
        self.shard = shard
        self._lock: IO[bytes] | None = lock

    def release(self) -> None:
        """Close the shard, then drop the shared lock (a writer may then delete the folder)."""
        if self._lock is not None:
            self.shard.close()
            self._lock.close()
            self._lock = None


def _load(folder: Path) -> qe.EdgeShard:
    """Load the shard in ``folder``, retrying once (another process may be opening it too)."""
    try:
        return qe.EdgeShard.load(str(folder))
    except Exception:  # the bindings raise plain Exception
        time.sleep(0.05)
        return qe.EdgeShard.load(str(folder))


class EdgeIndex:
    """Chunks in a Qdrant Edge shard under ``DATA_DIR/kb-edge``. Create with :meth:`open`.

    Reads run on one search thread; concurrent searches go to the engine together, in one
    ``query_batch`` call (:class:`knowledge.coalesce.Coalescer`). Writes happen inside
    :meth:`writing`.
    """

    local = True

    def __init__(self, root: Path, collection: str, dimension: int) -> None:
        self.root = root
        self.collection = collection
        self._dimension = dimension
        self._generation: _Generation | None = None
        self._current_stat: tuple[int, int] | None = None
        self._checked = 0.0
        self._switch = threading.Lock()
        self._writer: qe.EdgeShard | None = None
        self._pending: Path | None = None
        #: Concurrent searches, run together on the search thread (see :mod:`knowledge.coalesce`).
        self._searches: Coalescer[_Search, list[list[Hit]]] = Coalescer(
            self._search_batch, max_batch=SEARCH_BATCH, executor=_READS
        )
        self._compact = False
        self._dropped: set[str] = set()  # compact: documents deleted in this block
        self._rewritten: set[str] = set()  # compact: point ids written in this block

    @staticmethod
    def root_of(settings: Settings) -> Path:
        """The folder of ``settings.kb_collection``'s generations."""
        return settings.data_dir / "kb-edge" / settings.kb_collection

    @staticmethod
    def published_in(settings: Settings) -> bool:
        """Whether an ingest ever published a generation of ``settings.kb_collection``."""
        return (EdgeIndex.root_of(settings) / _CURRENT).exists()

    @classmethod
    async def open(cls, settings: Settings, *, dimension: int) -> EdgeIndex:
        """Open the published generation of ``settings.kb_collection`` (none yet is fine).

        Raises:
            ConfigError: when the index holds dense vectors of another length.
            BackendUnavailable: when the folder cannot be read.
        """
        root = cls.root_of(settings)
        index = cls(root, settings.kb_collection, dimension)
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            await asyncio.get_running_loop().run_in_executor(_READS, index._refresh, True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot open the knowledge index: {exc}") from exc
        return index

    # --- generations --------------------------------------------------------------------
    def _published(self) -> Path | None:
        try:
            name = (self.root / _CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return self.root / name if name else None

    def _refresh(self, force: bool = False) -> qe.EdgeShard | None:
        """The shard of the published generation, switching to a newer one when there is."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return self._generation.shard if self._generation is not None else None
        with self._switch:
            self._checked = now
            try:
                st = os.stat(self.root / _CURRENT)
                stat: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
            except FileNotFoundError:
                stat = None
            if stat != self._current_stat or (force and stat is not None):
                for attempt in range(3):
                    folder = self._published()
                    if folder is None or (
                        self._generation is not None and self._generation.folder == folder
                    ):
                        break
                    try:
                        self._check_dimension(folder)
                        generation = _Generation(folder, self._published)
                    except (_Superseded, FileNotFoundError):
                        if attempt == 2:
                            raise
                        continue
                    old, self._generation = self._generation, generation
                    if old is not None:
                        old.release()
                        self._collect()  # the last reader of an old generation removes it
                    log.info("knowledge.index_loaded", extra={"generation": folder.name})
                    break
                self._current_stat = stat
            return self._generation.shard if self._generation is not None else None

    def _check_dimension(self, folder: Path) -> None:
        config = json.loads((folder / "edge_config.json").read_text(encoding="utf-8"))
        size = config.get("vectors", {}).get(DENSE, {}).get("size")
        if size != self._dimension:
            raise ConfigError(
                f"knowledge index {self.collection!r} holds dense vectors of size {size}, the "
                f"embedding model gives {self._dimension}: choose another kb_collection or "
                "delete the index and ingest again"
            )

    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={
                DENSE: qe.EdgeVectorParams(size=self._dimension, distance=qe.Distance.Cosine)
            },
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            wal_enabled=False,
        )

    async def _read(self, fn: Callable[[qe.EdgeShard], _T], empty: _T) -> _T:
        def call() -> _T:
            shard = self._refresh()
            return empty if shard is None else fn(shard)

        try:
            return await asyncio.get_running_loop().run_in_executor(_READS, call)
        except ConfigError:
            raise
        except Exception as exc:  # the bindings raise plain Exception
            raise BackendUnavailable(f"knowledge index read failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def writing(self, *, compact: bool = False) -> AsyncIterator[None]:
        """Make the writes inside the block one new generation, published at its end.

        Nothing is copied or published when the block writes nothing. On an error the new
        generation is discarded and the published one stays. With ``compact`` the new
        generation is built empty and every point is copied into it (slower: see the module
        docstring's "Erasure").

        Raises:
            BackendUnavailable: when another process is ingesting into this index, or the
                engine fails.
        """
        lock = await asyncio.to_thread((self.root / _WRITER).open, "ab")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise BackendUnavailable(
                    "another ingest is writing this knowledge index; try again when it ends"
                ) from exc
            self._pending = None
            self._compact = compact
            self._dropped, self._rewritten = set(), set()
            try:
                yield
                if self._writer is not None:
                    await asyncio.to_thread(self._publish)
                    # This process moves to the new version now, so that the old one can go.
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(_READS, self._refresh, True)
            finally:
                await asyncio.to_thread(self._discard)
        finally:
            lock.close()
        await asyncio.to_thread(self._collect)

    def _begin(self) -> qe.EdgeShard:
        """The writable shard of this write block (created on its first write)."""
        if self._writer is not None:
            return self._writer
        published = self._published()
        number = int(published.name.split("-")[1]) + 1 if published is not None else 1
        folder = self.root / f"gen-{number:06d}"
        shutil.rmtree(folder, ignore_errors=True)  # left by a writer that died
        self._pending = folder
        if published is not None and not self._compact:
            shutil.copytree(published, folder, ignore=shutil.ignore_patterns(_READERS))
            self._writer = qe.EdgeShard.load(str(folder))
            return self._writer
        writer = self._writer = qe.EdgeShard.create(str(folder), self._config())
        for field, schema in (
            ("doc_id", qe.PayloadSchemaType.Keyword),
            ("chunk_index", qe.PayloadSchemaType.Integer),
            ("origin", qe.PayloadSchemaType.Keyword),
        ):
            writer.update(qe.UpdateOperation.create_field_index(field, schema))
        return writer

    def _copy_kept(self) -> None:
        """Compact: copy in every published point this block neither deleted nor wrote again.

        The writer lock keeps the published generation in place meanwhile.
        """
        published = self._published()
        if published is None or self._writer is None:
            return
        source = _load(published)
        try:
            offset: Any = None
            while True:
                records, offset = source.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=_UPSERT_BATCH, with_payload=True, with_vector=True
                    )
                )
                points = [
                    qe.Point(r.id, r.vector or {}, r.payload)
                    for r in records
                    if str(r.id) not in self._rewritten
                    and str((r.payload or {}).get("doc_id")) not in self._dropped
                ]
                if points:
                    self._writer.update(qe.UpdateOperation.upsert_points(points))
                if offset is None:
                    return
        finally:
            source.close()

    def _publish(self) -> None:
        assert self._writer is not None
        assert self._pending is not None
        started = time.perf_counter()
        if self._compact:
            self._copy_kept()
        self._writer.optimize()
        self._writer.flush()
        self._writer.close()
        self._writer = None
        temp = self.root / f".{_CURRENT}.tmp"
        temp.write_text(self._pending.name, encoding="utf-8")
        os.replace(temp, self.root / _CURRENT)
        log.info(
            "knowledge.index_published",
            extra={
                "generation": self._pending.name,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        self._pending = None

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._pending is not None:
            shutil.rmtree(self._pending, ignore_errors=True)
            self._pending = None

    def _collect(self) -> None:
        """Remove generations older than the published one that no process has loaded."""
        published = self._published()
        for folder in sorted(self.root.glob("gen-*")):
            if published is None or folder.name >= published.name:
                continue
            with (folder / _READERS).open("ab") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a process still reads it
                shutil.rmtree(folder, ignore_errors=True)

    async def _write(self, operation: Callable[[qe.EdgeShard], None]) -> None:
        def call() -> None:
            operation(self._begin())

        try:
            await asyncio.to_thread(call)
        except Exception as exc:  # the bindings raise plain Exception
            raise BackendUnavailable(f"knowledge index write failed: {exc}") from exc

    async def close(self) -> None:
        """Release the loaded generation (other processes keep theirs)."""

        def release() -> None:
            with self._switch:
                if self._generation is not None:
                    self._generation.release()
                    self._generation = None

        await asyncio.get_running_loop().run_in_executor(_READS, release)

    # --- the index interface (see knowledge.index.QdrantIndex) ---------------------------
    async def _scan(
        self,
        scope: qe.Filter | None,
        fields: list[str] | bool,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """The payload ``fields`` of every point matching ``scope`` (that ``keep`` keeps)."""

        def scan(shard: qe.EdgeShard) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            offset: Any = None
            while True:
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=4096,
                        filter=scope,
                        with_payload=fields,
                        with_vector=False,
                    )
                )
                payloads = (dict(r.payload or {}) for r in records)
                out.extend(p for p in payloads if keep is None or keep(p))
                if offset is None:
                    return out

        shard = self._writer
        if shard is not None and not self._compact:  # in a write block: what it wrote so far
            return await asyncio.to_thread(scan, shard)
        return await self._read(scan, [])

    async def manifest(self) -> dict[str, str]:
        """``{doc_id: content_hash}`` of every stored document."""
        rows = await self._scan(_first_chunks(), ["doc_id", "content_hash"])
        return {str(r["doc_id"]): str(r["content_hash"]) for r in rows}

    async def documents_from(self, origin: str) -> set[str]:
        """The ids of the stored documents whose ``origin`` is ``origin``."""
        scope = qe.Filter(
            must=[
                qe.FieldCondition(key="chunk_index", match=qe.MatchValue(0)),
                qe.FieldCondition(key="origin", match=qe.MatchValue(origin)),
            ]
        )
        return {str(r["doc_id"]) for r in await self._scan(scope, ["doc_id"])}

    async def find_chunks(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The payloads of every stored chunk for which ``keep(payload)`` (a full scan)."""
        return await self._scan(None, True, keep)

    async def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete every stored chunk of ``doc_ids`` (inside :meth:`writing`)."""
        if not doc_ids:
            return
        selector = qe.Filter(
            must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))]
        )
        if self._compact:
            self._dropped.update(doc_ids)
        await self._write(
            lambda shard: shard.update(qe.UpdateOperation.delete_points_by_filter(selector))
        )

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Store ``chunks`` (inside :meth:`writing`), overwriting points with the same ids."""
        points = [
            qe.Point(
                point_id(c.chunk.doc_id, c.chunk.index),
                {
                    DENSE: list(c.dense),
                    SPARSE: qe.SparseVector(list(c.sparse.indices), list(c.sparse.values)),
                },
                c.payload(),
            )
            for c in chunks
        ]

        if self._compact:
            self._rewritten.update(str(p.id) for p in points)

        def write(shard: qe.EdgeShard) -> None:
            for start in range(0, len(points), _UPSERT_BATCH):
                batch = points[start : start + _UPSERT_BATCH]
                shard.update(qe.UpdateOperation.upsert_points(batch))

        if points:
            await self._write(write)

    async def search(
        self, dense: Sequence[float], sparse: SparseTerms, *, limit: int
    ) -> tuple[list[Hit], list[Hit]]:
        """The ``limit`` nearest chunks by dense cosine and by sparse BM25.

        Searches of concurrent calls run in one engine call (see :class:`EdgeIndex`). Sparse
        hits the dense search did not return carry their cosine to ``dense`` in
        ``Hit.cosine``, computed by the engine (no stored vector is copied into Python).

        Returns:
            ``(dense_hits, sparse_hits)`` as :meth:`knowledge.index.QdrantIndex.search`.

        Raises:
            BackendUnavailable: when the engine fails.
        """
        vector = list(dense)
        requests = [
            qe.QueryRequest(
                limit=limit, query=qe.Query.Nearest(vector, using=DENSE), with_payload=True
            )
        ]
        if sparse.indices:
            requests.append(
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(
                        qe.SparseVector(list(sparse.indices), list(sparse.values)), using=SPARSE
                    ),
                    with_payload=True,
                )
            )
        try:
            hits = await self._searches.submit((vector, requests))
        except ConfigError:
            raise
        except Exception as exc:  # the bindings raise plain Exception
            raise BackendUnavailable(f"knowledge index read failed: {exc}") from exc
        return hits[0], hits[1] if len(hits) > 1 else []

    def _search_batch(self, batch: list[_Search]) -> list[list[list[Hit]]]:
        """Run the searches of concurrent :meth:`search` calls: two engine calls in all.

        The first runs every dense and sparse search; the second computes, for each search,
        the cosine of its sparse hits that its dense search did not return (a dense query
        restricted to those point ids, which the engine scores exactly).
        """
        shard = self._refresh()
        if shard is None:
            return [[[] for _ in requests] for _, requests in batch]
        results = iter(shard.query_batch(qe.QueryBatchRequest([r for _, rs in batch for r in rs])))
        out = [[[_hit(p) for p in next(results)] for _ in requests] for _, requests in batch]
        rescore: list[tuple[list[list[Hit]], qe.QueryRequest]] = []
        for (vector, _), lists in zip(batch, out, strict=True):
            if len(lists) < 2:
                continue
            seen = {h.chunk_id for h in lists[0]}
            ids: set[Any] = {uuid.UUID(h.chunk_id) for h in lists[1] if h.chunk_id not in seen}
            if ids:
                request = qe.QueryRequest(
                    limit=len(ids),
                    query=qe.Query.Nearest(vector, using=DENSE),
                    filter=qe.Filter(must=[qe.HasIdCondition(ids)]),
                    with_payload=False,
                )
                rescore.append((lists, request))
        if rescore:
            scored = shard.query_batch(qe.QueryBatchRequest([r for _, r in rescore]))
            for (lists, _), points in zip(rescore, scored, strict=True):
                cosines = {str(p.id): float(p.score) for p in points}
                lists[1] = [
                    dataclasses.replace(h, cosine=cosines[h.chunk_id])
                    if h.chunk_id in cosines
                    else h
                    for h in lists[1]
                ]
        return out

    async def document_count(self) -> int:
        """How many documents are stored (documents with at least one chunk)."""
        return await self._read(lambda s: s.count(qe.CountRequest(filter=_first_chunks())), 0)

    async def chunk_count(self) -> int:
        """How many chunks (points) are stored."""
        return await self._read(lambda s: s.count(qe.CountRequest()), 0)


def _hit(point: qe.ScoredPoint) -> Hit:
    vectors = point.vector
    vector = vectors.get(DENSE) if isinstance(vectors, dict) else None
    return Hit(
        chunk_id=str(point.id),
        score=float(point.score),
        payload=dict(point.payload or {}),
        dense=np.asarray(vector, dtype=np.float32) if isinstance(vector, list) else None,
    )
