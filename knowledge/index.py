"""The index of chunks: the :class:`ChunkIndex` protocol and :class:`QdrantIndex`.

:class:`QdrantIndex` is the qdrant-client implementation (a server or cluster, or
qdrant-client's local mode). One collection, one point per chunk.

Each point has a named dense vector ``dense`` (cosine) and a named sparse vector ``sparse``
(BM25 term weights, with ``Modifier.IDF`` so Qdrant applies inverse document frequency; see
:mod:`knowledge.sparse`). Payload: ``doc_id``, ``chunk_index``, ``title``, ``url``,
``heading``, ``text``, ``content_hash`` (of the whole document), ``metadata`` and ``origin``
(the folder, file or sitemap the document was read from, for pruning; None for uploads).

The document manifest (doc id to content hash) lives in the payloads: the point of chunk 0 of
each document carries its hash, so there is no sidecar file to fall out of step.

:func:`knowledge.kb.open_index` picks the implementation: ``settings.qdrant_url`` a Qdrant
server or cluster (:class:`QdrantIndex`), else the embedded ``settings.kb_index``: ``"edge"`` (the
default, :class:`knowledge.edge_index.EdgeIndex`) or ``"local"`` (:class:`QdrantIndex` in
qdrant-client's local on-disk mode, ``QdrantClient(path=...)``: exact search in Python, one
process at a time may open the folder).
API reference: https://python-client.qdrant.tech/ and https://api.qdrant.tech/.

Every client call runs in a worker thread (``asyncio.to_thread``): local mode searches and
writes synchronously (it commits SQLite once per point), which would otherwise stall the event
loop. Local mode calls are serialized by a lock, as its in-memory collection is not
thread-safe; server calls run concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
)
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError
from knowledge.chunk import Chunk
from knowledge.sparse import SparseTerms

log = logging.getLogger(__name__)

DENSE = "dense"
SPARSE = "sparse"
_POINT_NAMESPACE = uuid.UUID("5d3c6f0e-2f0b-4a55-9a51-0b0f4a2a6c11")
_UPSERT_BATCH = 64
_T = TypeVar("_T")


def point_id(doc_id: str, index: int) -> str:
    """The stable UUID (as a string) of chunk ``index`` of document ``doc_id``."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}\x00{index}"))


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """A chunk ready to store: the chunk, its vectors and its document's content hash."""

    chunk: Chunk
    dense: Sequence[float]
    sparse: SparseTerms
    content_hash: str
    metadata: dict[str, Any]
    origin: str | None = None

    def payload(self) -> dict[str, Any]:
        """The point's payload, the same in every index (see the module docstring)."""
        return {
            "doc_id": self.chunk.doc_id,
            "chunk_index": self.chunk.index,
            "title": self.chunk.title,
            "url": self.chunk.url,
            "heading": self.chunk.heading,
            "text": self.chunk.text,
            "content_hash": self.content_hash,
            "metadata": self.metadata,
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True)
class Hit:
    """One point returned by a search.

    Attributes:
        chunk_id: the point id.
        score: cosine similarity (dense) or BM25 score (sparse).
        payload: the stored payload (see the module docstring).
        dense: the stored dense vector (sparse hits only), so the caller can compute the
            cosine similarity of chunks the dense search did not return.
        cosine: that cosine similarity, when the index computed it instead (sparse hits the
            dense search did not return; then ``dense`` is None).
    """

    chunk_id: str
    score: float
    payload: dict[str, Any]
    dense: NDArray[np.float32] | None = None
    cosine: float | None = None


class ChunkIndex(Protocol):
    """Where chunks are stored and searched; :class:`QdrantIndex` documents each method.

    Writes (``delete_documents``, ``upsert``) happen inside ``async with index.writing():``,
    which an implementation may use to apply them as one unit.
    """

    def writing(self, *, compact: bool = False) -> AbstractAsyncContextManager[None]:
        """Group the writes of one ingest.

        ``compact`` (erasure): leave no bytes of what they replace or delete in the index's
        files.
        """

    async def close(self) -> None:
        """Release the index."""

    async def manifest(self) -> dict[str, str]:
        """``{doc_id: content_hash}`` of every stored document."""

    async def documents_from(self, origin: str) -> set[str]:
        """The ids of the stored documents read from ``origin``."""

    async def find_chunks(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The payloads of every stored chunk for which ``keep(payload)`` (a full scan)."""

    async def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete every stored chunk of ``doc_ids``."""

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Store ``chunks``, overwriting points with the same ids."""

    async def search(
        self, dense: Sequence[float], sparse: SparseTerms, *, limit: int
    ) -> tuple[list[Hit], list[Hit]]:
        """``(dense_hits, sparse_hits)``, each the ``limit`` best, best first."""

    async def document_count(self) -> int:
        """How many documents are stored."""

    async def chunk_count(self) -> int:
        """How many chunks are stored."""


class QdrantIndex:
    """Chunks in one Qdrant collection. Create with :meth:`open`."""

    def __init__(self, client: QdrantClient, collection: str, *, local: bool) -> None:
        self._client = client
        self.collection = collection
        self.local = local
        self._lock: AbstractContextManager[Any] = threading.Lock() if local else nullcontext()

    async def _call(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run a client call in a worker thread (under the lock in local mode)."""

        def locked() -> _T:
            with self._lock:
                return fn(*args, **kwargs)

        return await asyncio.to_thread(locked)

    @classmethod
    async def open(cls, settings: Settings, *, dimension: int) -> QdrantIndex:
        """Connect (or open the local folder) and create the collection if it is missing.

        Args:
            settings: ``qdrant_url``/``qdrant_api_key`` for a server, else ``qdrant_path``;
                ``kb_collection`` names the collection.
            dimension: the dense vector length of the embedder.

        Raises:
            BackendUnavailable: when the server cannot be reached or the local folder is
                locked by another process.
            ConfigError: when the collection exists with another dense vector length (the
                embedding model changed: use another ``kb_collection`` or delete the index).
        """
        local = settings.qdrant_url is None

        def connect() -> QdrantClient:
            if local:
                settings.qdrant_path.mkdir(parents=True, exist_ok=True)
                return QdrantClient(path=str(settings.qdrant_path))
            key = settings.qdrant_api_key
            return QdrantClient(
                url=settings.qdrant_url,
                api_key=key.get_secret_value() if key is not None else None,
            )

        try:
            client = await asyncio.to_thread(connect)
        except (RuntimeError, OSError, ApiException) as exc:
            raise BackendUnavailable(f"cannot open the Qdrant index: {exc}") from exc
        index = cls(client, settings.kb_collection, local=local)
        try:
            await index._ensure_collection(dimension)
        except BaseException:
            await index.close()
            raise
        return index

    async def _ensure_collection(self, dimension: int) -> None:
        client = self._client
        try:
            if await self._call(client.collection_exists, self.collection):
                info = await self._call(client.get_collection, self.collection)
                vectors = info.config.params.vectors
                existing = vectors.get(DENSE) if isinstance(vectors, dict) else None
                if existing is None or existing.size != dimension:
                    size = existing.size if existing is not None else None
                    raise ConfigError(
                        f"Qdrant collection {self.collection!r} holds dense vectors of size "
                        f"{size}, the embedding model gives {dimension}: choose another "
                        "kb_collection or delete the index and ingest again"
                    )
                return
            await self._call(
                client.create_collection,
                self.collection,
                vectors_config={
                    DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
            if not self.local:  # payload indexes only matter (and only exist) on a server
                for field, schema in (
                    ("doc_id", models.PayloadSchemaType.KEYWORD),
                    ("chunk_index", models.PayloadSchemaType.INTEGER),
                    ("origin", models.PayloadSchemaType.KEYWORD),
                ):
                    await self._call(client.create_payload_index, self.collection, field, schema)
            log.info(
                "knowledge.collection_created",
                extra={"collection": self.collection, "dimension": dimension},
            )
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant collection setup failed: {exc}") from exc

    @asynccontextmanager
    async def writing(self, *, compact: bool = False) -> AsyncIterator[None]:
        """Group the writes of one ingest (nothing to do: qdrant-client applies each at once).

        ``compact`` changes nothing here: a Qdrant server drops deleted and overwritten points
        from its segments when its optimizer vacuums them (on its own schedule); local mode
        deletes the rows of its SQLite file (overwritten at once where SQLite's
        ``secure_delete`` is on, as in Debian's build).
        """
        yield

    async def close(self) -> None:
        """Close the client (releases the local folder's lock)."""
        await self._call(self._client.close)

    async def manifest(self) -> dict[str, str]:
        """``{doc_id: content_hash}`` of every stored document.

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        payloads = await self._first_chunks([], ["doc_id", "content_hash"])
        return {str(p["doc_id"]): str(p["content_hash"]) for p in payloads}

    async def documents_from(self, origin: str) -> set[str]:
        """The ids of the stored documents whose ``origin`` is ``origin``.

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        origin_is = models.FieldCondition(key="origin", match=models.MatchValue(value=origin))
        return {str(p["doc_id"]) for p in await self._first_chunks([origin_is], ["doc_id"])}

    async def _first_chunks(
        self, conditions: list[models.FieldCondition], fields: list[str]
    ) -> list[dict[str, Any]]:
        """The ``fields`` of each document's first chunk that meets ``conditions``.

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        first = models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0))
        return await self._scroll(models.Filter(must=[first, *conditions]), fields)

    async def find_chunks(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The payloads of every stored chunk for which ``keep(payload)`` (a full scan).

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        return await self._scroll(None, True, keep)

    async def _scroll(
        self,
        scope: models.Filter | None,
        fields: list[str] | bool,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """The payload ``fields`` of every point in ``scope`` that ``keep`` keeps.

        Scrolls 1,024 points per call.

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        out: list[dict[str, Any]] = []
        offset: Any = None
        try:
            while True:
                points, offset = await self._call(
                    self._client.scroll,
                    self.collection,
                    scroll_filter=scope,
                    limit=1024,
                    offset=offset,
                    with_payload=fields,
                    with_vectors=False,
                )
                payloads = (p.payload or {} for p in points)
                out.extend(p for p in payloads if keep is None or keep(p))
                if offset is None:
                    return out
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant scroll failed: {exc}") from exc

    async def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete every stored chunk of ``doc_ids`` in one call (unknown ids are ignored).

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        if not doc_ids:
            return
        selector = models.FilterSelector(filter=_docs_filter(doc_ids))
        try:
            await self._call(
                self._client.delete, self.collection, points_selector=selector, wait=True
            )
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant delete failed: {exc}") from exc

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Store ``chunks`` (insert, or overwrite the points with the same ids).

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        points = [
            models.PointStruct(
                id=point_id(c.chunk.doc_id, c.chunk.index),
                vector={
                    DENSE: list(c.dense),
                    SPARSE: models.SparseVector(indices=c.sparse.indices, values=c.sparse.values),
                },
                payload=c.payload(),
            )
            for c in chunks
        ]
        try:
            for start in range(0, len(points), _UPSERT_BATCH):
                await self._call(
                    self._client.upsert,
                    self.collection,
                    points=points[start : start + _UPSERT_BATCH],
                    wait=True,
                )
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant write failed: {exc}") from exc

    async def search(
        self, dense: Sequence[float], sparse: SparseTerms, *, limit: int
    ) -> tuple[list[Hit], list[Hit]]:
        """The ``limit`` nearest chunks by dense cosine and by sparse BM25, in one round trip.

        Returns:
            ``(dense_hits, sparse_hits)``, each best first; the sparse list is empty when the
            query has no indexable term.

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        requests = [
            models.QueryRequest(query=list(dense), using=DENSE, limit=limit, with_payload=True)
        ]
        if sparse.indices:
            requests.append(
                models.QueryRequest(
                    query=models.SparseVector(indices=sparse.indices, values=sparse.values),
                    using=SPARSE,
                    limit=limit,
                    with_payload=True,
                    with_vector=[DENSE],
                )
            )
        try:
            responses = await self._call(
                self._client.query_batch_points, self.collection, requests=requests
            )
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant query failed: {exc}") from exc
        hits = [[_hit(p) for p in r.points] for r in responses]
        return hits[0], hits[1] if len(hits) > 1 else []

    async def document_count(self) -> int:
        """How many documents are stored (documents with at least one chunk).

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        first = models.Filter(
            must=[models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0))]
        )
        try:
            result = await self._call(
                self._client.count, self.collection, count_filter=first, exact=True
            )
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant count failed: {exc}") from exc
        return int(result.count)

    async def chunk_count(self) -> int:
        """How many chunks (points) are stored.

        Raises:
            BackendUnavailable: when Qdrant fails.
        """
        try:
            result = await self._call(self._client.count, self.collection, exact=True)
        except ApiException as exc:
            raise BackendUnavailable(f"Qdrant count failed: {exc}") from exc
        return int(result.count)


def _hit(point: models.ScoredPoint) -> Hit:
    vector = point.vector.get(DENSE) if isinstance(point.vector, dict) else None
    return Hit(
        chunk_id=str(point.id),
        score=float(point.score),
        payload=point.payload or {},
        dense=np.asarray(vector, dtype=np.float32) if isinstance(vector, list) else None,
    )


def _docs_filter(doc_ids: Sequence[str]) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))]
    )
