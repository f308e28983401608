"""Retrieval evaluation: recall@1/3/5 and MRR@10 on annotated questions.

Questions are JSONL records ``{"question": str, "derived_best_kb_sections": [{"doc_id": str,
"answer_token_recall": float}, ...]}`` (the format of ``datasets/knowledge/galaxy_s10/qa.jsonl``,
whose ``SOURCES.md`` defines ``answer_token_recall``: the share of the expert answer's tokens found
in that section); ``relevant_doc_ids`` is accepted too. The gold of a question is its *strict*
gold: the sections whose ``answer_token_recall`` is at least :data:`STRICT_GOLD_RECALL` (a
section without the field counts). Results are ranked as unique doc ids (several chunks of one
document count once).

- recall@k: share of questions with at least one relevant document among the first k.
- MRR@10: mean over questions of 1/rank of the first relevant document, 0 if none in the first
  10.

``python -m knowledge --help`` is a command-line entry point that can ingest a knowledge base
first and also prints ingest speed and query latency.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.retrieval import Retriever
from knowledge.ingest import IngestError, jsonl_records

#: Ranks considered: MRR is computed at 10.
DEPTH = 10
#: A section is gold for a question when it holds at least this share of the answer's tokens
#: (the dataset's own threshold: "685/734 have recall >= 0.8 in the top section").
STRICT_GOLD_RECALL = 0.8


@dataclass(frozen=True, slots=True)
class Question:
    """One annotated question: its text and the doc ids that answer it."""

    question: str
    relevant: frozenset[str]


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Retrieval quality over a question set (all figures 0..1).

    Attributes:
        recall_at_1: share of questions with a relevant document ranked first.
        recall_at_3: ... within the first 3.
        recall_at_5: ... within the first 5.
        mrr_at_10: mean reciprocal rank of the first relevant document (0 beyond rank 10).
        questions: how many questions were evaluated.
        mean_query_ms: mean wall time of one search, in milliseconds.
    """

    recall_at_1: float
    recall_at_3: float
    recall_at_5: float
    mrr_at_10: float
    questions: int
    mean_query_ms: float = 0.0


def load_questions(path: Path) -> list[Question]:
    """Read annotated questions from a JSONL file.

    Raises:
        IngestError: when the file cannot be read or a line is not a valid question record.
    """
    out: list[Question] = []
    for source, record in jsonl_records(path):
        question = record.get("question") if isinstance(record, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise IngestError('record needs a "question" string', source=source)
        sections = record.get("derived_best_kb_sections")
        if isinstance(sections, list):
            relevant = {
                str(s["doc_id"])
                for s in sections
                if isinstance(s, dict) and "doc_id" in s and _strict_gold(s)
            }
        else:
            relevant = {str(d) for d in record.get("relevant_doc_ids") or []}
        if not relevant:
            raise IngestError(
                "record names no relevant doc_id (with answer_token_recall >= "
                f"{STRICT_GOLD_RECALL}, when given)",
                source=source,
            )
        out.append(Question(question=question, relevant=frozenset(relevant)))
    return out


def _strict_gold(section: dict[str, object]) -> bool:
    recall = section.get("answer_token_recall")
    return not isinstance(recall, int | float) or recall >= STRICT_GOLD_RECALL


def unique_doc_ids(doc_ids: Sequence[str]) -> list[str]:
    """``doc_ids`` with repeats removed, first occurrence kept, order preserved."""
    return list(dict.fromkeys(doc_ids))


def score(rankings: Sequence[Sequence[str]], questions: Sequence[Question]) -> EvalReport:
    """Compute the metrics from each question's ranked doc ids (repeats are collapsed).

    Args:
        rankings: per question, doc ids best first.
        questions: the questions, in the same order.

    Raises:
        ValueError: when the two sequences differ in length.
    """
    if len(rankings) != len(questions):
        raise ValueError(f"{len(rankings)} rankings for {len(questions)} questions")
    n = len(questions)
    if n == 0:
        return EvalReport(0.0, 0.0, 0.0, 0.0, 0)
    first_hits: list[int | None] = []
    for ranking, question in zip(rankings, questions, strict=True):
        ranks = unique_doc_ids(ranking)[:DEPTH]
        first = next((i + 1 for i, d in enumerate(ranks) if d in question.relevant), None)
        first_hits.append(first)

    def recall(k: int) -> float:
        return sum(1 for r in first_hits if r is not None and r <= k) / n

    mrr = sum(1.0 / r for r in first_hits if r is not None) / n
    return EvalReport(
        recall_at_1=recall(1),
        recall_at_3=recall(3),
        recall_at_5=recall(5),
        mrr_at_10=mrr,
        questions=n,
    )


async def evaluate(retriever: Retriever, questions: Sequence[Question]) -> EvalReport:
    """Search each question and score the ranked unique doc ids.

    Raises:
        bot.errors.BackendUnavailable: when the index cannot be queried.
    """
    rankings: list[list[str]] = []
    timings: list[float] = []
    for q in questions:
        started = time.perf_counter()
        passages = await retriever.search(q.question, top_k=5 * DEPTH)
        timings.append(time.perf_counter() - started)
        rankings.append(unique_doc_ids([p.doc_id for p in passages]))
    report = score(rankings, questions)
    mean_ms = statistics.fmean(timings) * 1000 if timings else 0.0
    return EvalReport(**{**asdict(report), "mean_query_ms": round(mean_ms, 2)})
