"""Hybrid retrieval: dense (embedding cosine) plus sparse (BM25) search, fused.

For a query, Qdrant returns the :data:`CANDIDATES` nearest chunks by each vector. Each list's
scores are standardized (z-scores: minus the list's mean, divided by its standard deviation) and
the two z-scores of a chunk are added: CombSUM over z-normalized scores (Montague and Aslam,
"Relevance score normalization for metasearch", CIKM 2001; Qdrant's own ``Fusion.DBSF`` is the
same with clipping at three standard deviations). It has no weight to tune: each list counts by
how far a chunk stands out from that list's other candidates, whatever the scale of cosines and
BM25 scores in a given collection. A chunk only the dense search returned gets the sparse list's
lowest z-score (its BM25 score is at most the lowest returned one), and a chunk only the sparse
search returned has its cosine computed from its stored vector. The chunks are then ranked by
their document's best chunk, so the passages of the best document come first (evaluation and
citations are per document).

The fixed-weight sum it replaced (0.5 cosine + 0.5 BM25 over the list's best) fitted the Galaxy
S10 development set, where questions reuse the manual's words, and lost on questions worded
otherwise: see README, "Knowledge base quality".

Each passage also carries a ``confidence``: an absolute 0..1 measure of how well it answers
the query, independent of the other results, for the embedded agent to decide whether to
answer at all (see :data:`RECOMMENDED_MIN_CONFIDENCE`).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bot.retrieval import Passage
from knowledge import sparse
from knowledge.embed import Embedder
from knowledge.index import ChunkIndex, Hit

log = logging.getLogger(__name__)

#: How many chunks each of the dense and sparse searches returns before fusion.
CANDIDATES = 30

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
    sparse_z: float | None = None
    fused: float = 0.0


def standardize(scores: Sequence[float]) -> tuple[float, float]:
    """``(mean, standard deviation)`` of a result list's scores, for z-scores.

    The deviation is the population one; it is 1.0 when the scores are all equal (or fewer than
    two), so such a list gives every member a z-score of 0.
    """
    if not scores:
        return 0.0, 1.0
    mean = statistics.fmean(scores)
    deviation = statistics.pstdev(scores, mean) if len(scores) > 1 else 0.0
    return mean, deviation if deviation > 0 else 1.0


def fused_score(z_sum: float) -> float:
    """Map a sum of z-scores to 0..1 (logistic), keeping the order: ``Passage.score``."""
    return 1.0 / (1.0 + math.exp(-z_sum))


class HybridRetriever:
    """Implements :class:`bot.retrieval.Retriever` over a :class:`knowledge.index.ChunkIndex`.

    Args:
        index: the chunk index.
        embedder: the embedder the index was built with.
        candidates: chunks fetched from each of the dense and sparse searches.
    """

    def __init__(
        self,
        index: ChunkIndex,
        embedder: Embedder,
        *,
        candidates: int = CANDIDATES,
    ) -> None:
        self._index = index
        self._embedder = embedder
        self.candidates = candidates

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        """The ``top_k`` best passages for ``query``, best first.

        Passages are grouped by document: all returned chunks of the best document come
        before those of the second, and so on. ``Passage.score`` is the fused score (0..1,
        comparable within one query only), ``Passage.confidence`` the absolute match quality
        (0..1).

        Raises:
            bot.errors.BackendUnavailable: when the index or a remote embedder fails.
        """
        if not query.strip() or top_k <= 0:
            return []
        started = time.perf_counter()
        vector = (await self._embedder.embed([query]))[0]
        limit = max(self.candidates, top_k)
        dense_hits, sparse_hits = await self._index.search(
            vector.tolist(), sparse.query_vector(query), limit=limit
        )
        ranked = self.fuse(dense_hits, sparse_hits, vector, limit=limit)
        passages = [
            Passage(
                doc_id=str(c.hit.payload["doc_id"]),
                chunk_id=c.hit.chunk_id,
                title=str(c.hit.payload.get("title") or ""),
                heading=str(c.hit.payload.get("heading") or ""),
                text=str(c.hit.payload.get("text") or ""),
                url=c.hit.payload.get("url"),
                score=round(fused_score(c.fused), 6),
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
        *,
        limit: int | None = None,
    ) -> list[_Candidate]:
        """Fuse the two result lists and order chunks by their document's best fused score.

        Each candidate's ``fused`` is its dense z-score plus its sparse z-score (see the module
        docstring); the list is ordered by the best ``fused`` of the candidate's document, then
        by its own.

        Args:
            dense_hits: dense search results, best first (score: cosine similarity).
            sparse_hits: sparse search results, best first (score: BM25), with their stored
                dense vectors or their cosine to the query (``Hit.cosine``).
            query_vector: the query's dense vector (unit length).
            limit: how many hits each search was asked for. A sparse list shorter than that
                holds every chunk with a query term, so the others score exactly 0; a full
                list's floor is its lowest score. Default: :attr:`candidates`.
        """
        limit = self.candidates if limit is None else limit
        candidates: dict[str, _Candidate] = {
            h.chunk_id: _Candidate(h, h.score) for h in dense_hits
        }
        sparse_mean, sparse_dev = standardize([h.score for h in sparse_hits])
        for hit in sparse_hits:
            cand = candidates.get(hit.chunk_id)
            if cand is None:
                if hit.cosine is not None:
                    cosine = hit.cosine
                elif hit.dense is not None:
                    cosine = float(np.dot(query_vector, hit.dense))
                else:
                    cosine = 0.0
                cand = candidates[hit.chunk_id] = _Candidate(hit, cosine)
            cand.sparse_z = (hit.score - sparse_mean) / sparse_dev
        # Cosines of every candidate (sparse-only ones included) are standardized over the
        # dense list's statistics; a chunk the sparse search did not return gets the z-score of
        # the highest BM25 score it can have.
        dense_mean, dense_dev = standardize([h.score for h in dense_hits])
        unseen = sparse_hits[-1].score if len(sparse_hits) >= limit else 0.0
        sparse_floor = (unseen - sparse_mean) / sparse_dev if sparse_hits else 0.0
        best_of_doc: dict[str, float] = {}
        for cand in candidates.values():
            sparse_z = cand.sparse_z if cand.sparse_z is not None else sparse_floor
            cand.fused = (cand.cosine - dense_mean) / dense_dev + sparse_z
            doc_id = str(cand.hit.payload.get("doc_id"))
            best_of_doc[doc_id] = max(best_of_doc.get(doc_id, -math.inf), cand.fused)
        return sorted(
            candidates.values(),
            key=lambda c: (-best_of_doc[str(c.hit.payload.get("doc_id"))], -c.fused),
        )


def _searchable(hit: Hit) -> str:
    payload = hit.payload
    return f"{payload.get('title', '')}\n{payload.get('heading', '')}\n{payload.get('text', '')}"
