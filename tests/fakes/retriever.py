"""A fake :class:`bot.retrieval.Retriever` returning fixed passages, for tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.errors import BackendUnavailable
from bot.retrieval import Passage


def passage(
    doc_id: str,
    text: str,
    *,
    title: str | None = None,
    heading: str = "",
    url: str | None = None,
    score: float = 1.0,
    confidence: float = 0.8,
) -> Passage:
    """A passage with sensible defaults (chunk id ``{doc_id}#0``, title from the doc id)."""
    return Passage(
        doc_id=doc_id,
        chunk_id=f"{doc_id}#0",
        title=title or doc_id.replace("-", " ").title(),
        heading=heading,
        text=text,
        url=url,
        score=score,
        confidence=confidence,
    )


class FixedRetriever:
    """Returns fixed passages (best first).

    Attributes:
        passages: what a search returns by default (the first ``top_k``).
        answers: passages for queries containing a key (case-insensitive; first match wins).
        queries: every query received, in order.
        fail: when True, searches raise :class:`~bot.errors.BackendUnavailable`.
    """

    def __init__(
        self,
        passages: Sequence[Passage] = (),
        *,
        answers: Mapping[str, Sequence[Passage]] | None = None,
        fail: bool = False,
    ) -> None:
        self.passages = list(passages)
        self.answers = dict(answers or {})
        self.queries: list[str] = []
        self.fail = fail

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        self.queries.append(query)
        if self.fail:
            raise BackendUnavailable("fake index is down")
        for key, found in self.answers.items():
            if key.lower() in query.lower():
                return list(found)[:top_k]
        return self.passages[:top_k]
