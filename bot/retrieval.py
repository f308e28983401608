"""What the agent needs from the knowledge base: the :class:`Retriever` protocol.

``knowledge/`` implements it (hybrid dense + sparse search over Qdrant); the agent and the
``search_knowledge`` tool only see these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot import tracing
from bot.envelope import Citation


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk.

    Attributes:
        doc_id: the id its document was ingested with.
        chunk_id: a stable id of the chunk within the index.
        title: document title.
        heading: the heading path of the chunk inside the document (``"Setup > Slack"``).
        text: the chunk text (plain or Markdown).
        url: the document's URL, when known.
        score: fused retrieval score (higher is better; comparable within one query only).
        confidence: 0..1, how well the passage matches the query in absolute terms (dense
            cosine similarity blended with lexical overlap); the embedded agent answers only
            above a threshold.
    """

    doc_id: str
    chunk_id: str
    title: str
    heading: str
    text: str
    url: str | None
    score: float
    confidence: float

    def citation(self) -> Citation:
        """This passage as a citation of its document."""
        return Citation(doc_id=self.doc_id, title=self.title, url=self.url, score=self.score)


class Retriever(Protocol):
    """Searches the knowledge base."""

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        """The ``top_k`` best passages for ``query``, best first (may be fewer, or empty).

        Raises:
            bot.errors.BackendUnavailable: when the index cannot be queried.
        """


class NoKnowledge:
    """A :class:`Retriever` for hubs without a knowledge base: finds nothing."""

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        """No passages, ever."""
        return []


class TracedRetriever:
    """A :class:`Retriever` that records each search as a ``switchboard.retrieval`` span.

    Attributes on the span: ``switchboard.top_k`` and ``switchboard.passages`` (how many came
    back); never the query. Every other attribute (``ingest``, ``close``...) is the inner
    retriever's, so the wrapper stands wherever the knowledge base does.
    """

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def search(self, query: str, *, top_k: int = 5) -> list[Passage]:
        """The inner retriever's passages, unchanged."""
        with tracing.span(tracing.Span.RETRIEVAL, attributes={"switchboard.top_k": top_k}) as sp:
            passages = await self.inner.search(query, top_k=top_k)
            if sp is not None:
                sp.set_attribute("switchboard.passages", len(passages))
            return passages


def citations_of(passages: list[Passage], limit: int) -> list[Citation]:
    """One citation per document, best first, at most ``limit``."""
    seen: set[str] = set()
    out: list[Citation] = []
    for p in passages:
        if p.doc_id in seen:
            continue
        seen.add(p.doc_id)
        out.append(p.citation())
        if len(out) >= limit:
            break
    return out
