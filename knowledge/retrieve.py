"""Hybrid retrieval: dense (embedding cosine) plus sparse (BM25) search, fused.

For a query, Qdrant returns the :data:`CANDIDATES` nearest chunks by each vector. Each list's
scores are normalized to 0..1 (dense: cosine itself; sparse: divided by the list's best score),
fused as a weighted sum, and the chunks are ranked by their document's best chunk, so the
passages of the best document come first (evaluation and citations are per document).

Each passage also carries a ``confidence``: an absolute 0..1 measure of how well it answers
the query, independent of the other results, for the embedded agent to decide whether to
answer at all (see :data:`RECOMMENDED_MIN_CONFIDENCE`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bot.retrieval import Passage
from knowledge import sparse
from knowledge.embed import Embedder
from knowledge.index import Hit, QdrantIndex

log = logging.getLogger(__name__)

#: How many chunks each of the dense and sparse searches returns before fusion.
CANDIDATES = 30
#: Weight of the dense score in the fused score (the sparse score has ``1 - DENSE_WEIGHT``).
DENSE_WEIGHT = 0.5

#: Cosine similarity mapped to confidence 0 and 1 (MiniLM: unrelated text scores about 0.1,
#: a paraphrase about 0.7; other embedding models may need other bounds).
COSINE_FLOOR = 0.15
COSINE_CEILING = 0.70
#: Weight of the dense part of the confidence (the rest is lexical overlap).
CONFIDENCE_DENSE_WEIGHT = 0.6

#: Answer only from passages at or above this confidence; escalate below it. Measured with
#: MiniLM on the Galaxy S10 set: the best passage of 49 of the 50 in-domain questions scores
#: at least 0.45 (lowest 0.42, median 0.82), and none of 20 off-topic questions does (highest
#: 0.40: "hello"; "How do I connect Slack?" 0.39).
RECOMMENDED_MIN_CONFIDENCE = 0.45


def lexical_overlap(query: str, text: str) -> float:
    """Share (0..1) of the query's distinct stemmed terms that occur in ``text``."""
    wanted = set(sparse.terms(query))
    if not wanted:
        return 0.0
    return len(wanted & set(sparse.terms(text))) / len(wanted)


def confidence(cosine: float, overlap: float) -> float:
    """Blend a dense cosine similarity and a lexical overlap (0..1) into a 0..1 confidence."""
    dense = (cosine - COSINE_FLOOR) / (COSINE_CEILING - COSINE_FLOOR)
    dense = min(1.0, max(0.0, dense))
    return CONFIDENCE_DENSE_WEIGHT * dense + (1.0 - CONFIDENCE_DENSE_WEIGHT) * overlap


@dataclass(slots=True)
class _Candidate:
    hit: Hit
    cosine: float
    sparse_norm: float = 0.0
    fused: float = 0.0


class HybridRetriever:
    """Implements :class:`bot.retrieval.Retriever` over a :class:`QdrantIndex`.

    Args:
        index: the chunk index.
        embedder: the embedder the index was built with.
        candidates: chunks fetched from each of the dense and sparse searches.
        dense_weight: weight of the dense score in the fusion (0..1).
    """

    def __init__(
        self,
        index: QdrantIndex,
        embedder: Embedder,
        *,
        candidates: int = CANDIDATES,
        dense_weight: float = DENSE_WEIGHT,
    ) -> None:
        self._index = index
        self._embedder = embedder
        self.candidates = candidates
        self.dense_weight = dense_weight

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        """The ``top_k`` best passages for ``query``, best first.

        Passages are grouped by document: all returned chunks of the best document come
        before those of the second, and so on. ``Passage.score`` is the fused score (0..1),
        ``Passage.confidence`` the absolute match quality (0..1).

        Raises:
            bot.errors.BackendUnavailable: when the index or a remote embedder fails.
        """
        if not query.strip() or top_k <= 0:
            return []
        started = time.perf_counter()
        vector = (await self._embedder.embed([query]))[0]
        dense_hits, sparse_hits = await self._index.search(
            vector.tolist(), sparse.query_vector(query), limit=max(self.candidates, top_k)
        )
        ranked = self.fuse(dense_hits, sparse_hits, vector)
        passages = [
            Passage(
                doc_id=str(c.hit.payload["doc_id"]),
                chunk_id=c.hit.chunk_id,
                title=str(c.hit.payload.get("title") or ""),
                heading=str(c.hit.payload.get("heading") or ""),
                text=str(c.hit.payload.get("text") or ""),
                url=c.hit.payload.get("url"),
                score=round(c.fused, 6),
                confidence=round(
                    confidence(c.cosine, lexical_overlap(query, _searchable(c.hit))), 6
                ),
            )
            for c in ranked[:top_k]
        ]
        log.debug(
            "knowledge.searched",
            extra={
                "results": len(passages),
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return passages

    def fuse(
        self,
        dense_hits: Sequence[Hit],
        sparse_hits: Sequence[Hit],
        query_vector: NDArray[np.float32],
    ) -> list[_Candidate]:
        """Fuse the two result lists and order chunks by their document's best fused score.

        Args:
            dense_hits: dense search results, best first (score: cosine similarity).
            sparse_hits: sparse search results, best first (score: BM25), with their stored
                dense vectors.
            query_vector: the query's dense vector (unit length).
        """
        candidates: dict[str, _Candidate] = {
            h.chunk_id: _Candidate(h, h.score) for h in dense_hits
        }
        top_sparse = sparse_hits[0].score if sparse_hits else 0.0
        for hit in sparse_hits:
            cand = candidates.get(hit.chunk_id)
            if cand is None:
                cosine = float(np.dot(query_vector, hit.dense)) if hit.dense is not None else 0.0
                cand = candidates[hit.chunk_id] = _Candidate(hit, cosine)
            cand.sparse_norm = hit.score / top_sparse if top_sparse > 0 else 0.0
        best_of_doc: dict[str, float] = {}
        for cand in candidates.values():
            cand.fused = (
                self.dense_weight * max(0.0, cand.cosine)
                + (1.0 - self.dense_weight) * cand.sparse_norm
            )
            doc_id = str(cand.hit.payload.get("doc_id"))
            best_of_doc[doc_id] = max(best_of_doc.get(doc_id, 0.0), cand.fused)
        return sorted(
            candidates.values(),
            key=lambda c: (-best_of_doc[str(c.hit.payload.get("doc_id"))], -c.fused),
        )


def _searchable(hit: Hit) -> str:
    payload = hit.payload
    return f"{payload.get('title', '')}\n{payload.get('heading', '')}\n{payload.get('text', '')}"
