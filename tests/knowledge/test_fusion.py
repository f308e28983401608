"""Score fusion of the dense and sparse result lists (knowledge.retrieve)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from knowledge.index import Hit, QdrantIndex
from knowledge.retrieve import HybridRetriever, fused_score, standardize
from tests.knowledge.embedders import CountingEmbedder

QUERY = np.array([1.0, 0.0], dtype=np.float32)


def _hit(chunk: str, doc: str, score: float, cosine: float | None = None) -> Hit:
    dense = None
    if cosine is not None:
        dense = np.array([cosine, (1 - cosine**2) ** 0.5], dtype=np.float32)
    return Hit(chunk_id=chunk, score=score, payload={"doc_id": doc}, dense=dense)


def _retriever(candidates: int = 4) -> HybridRetriever:
    unused = cast(Any, None)
    return HybridRetriever(
        cast(QdrantIndex, unused), cast(CountingEmbedder, unused), candidates=candidates
    )


def _order(dense: list[Hit], sparse: list[Hit], limit: int = 4) -> list[str]:
    return [c.hit.chunk_id for c in _retriever(limit).fuse(dense, sparse, QUERY, limit=limit)]


def test_a_chunk_that_stands_out_in_both_lists_wins() -> None:
    dense = [_hit("a", "A", 0.62), _hit("b", "B", 0.60), _hit("c", "C", 0.59), _hit("d", "D", 0.2)]
    sparse = [
        _hit("b", "B", 9.0, 0.60),
        _hit("e", "E", 8.9, 0.1),
        _hit("a", "A", 2.0, 0.62),
        _hit("f", "F", 1.0, 0.1),
    ]
    # "a" tops the dense list by a hair; "b" is almost as close and far ahead lexically.
    assert _order(dense, sparse)[0] == "b"


def test_the_order_does_not_depend_on_the_scale_of_either_score() -> None:
    dense = [_hit("a", "A", 0.7), _hit("b", "B", 0.5), _hit("c", "C", 0.45), _hit("d", "D", 0.3)]
    sparse = [
        _hit("c", "C", 12.0, 0.45),
        _hit("d", "D", 7.0, 0.3),
        _hit("e", "E", 3.0, 0.1),
        _hit("a", "A", 1.0, 0.7),
    ]
    scaled = [Hit(h.chunk_id, h.score * 40, h.payload, h.dense) for h in sparse]
    assert _order(dense, sparse) == _order(dense, scaled)


def test_chunks_of_the_best_document_come_first() -> None:
    dense = [_hit("a1", "A", 0.8), _hit("b1", "B", 0.7), _hit("a2", "A", 0.3), _hit("c", "C", 0.2)]
    order = _order(dense, [])
    assert order[:2] == ["a1", "a2"]


def test_a_short_sparse_list_leaves_the_other_chunks_at_zero() -> None:
    # One lexical hit in a small collection: the other chunks have no query term (BM25 0), so
    # the hit keeps its lexical advantage even though its list has a single score.
    dense = [_hit("a", "A", 0.50), _hit("b", "B", 0.49), _hit("c", "C", 0.2)]
    sparse = [_hit("b", "B", 3.0, 0.49)]
    assert _order(dense, sparse, limit=10)[0] == "b"


def test_standardize_and_fused_score() -> None:
    assert standardize([]) == (0.0, 1.0)
    assert standardize([2.0, 2.0]) == (2.0, 1.0)
    mean, dev = standardize([1.0, 3.0])
    assert (mean, dev) == (2.0, 1.0)
    assert 0.0 < fused_score(-30) < fused_score(0.0) == 0.5 < fused_score(2.0) < 1.0
