"""The ``search_knowledge`` tool: the model searches the knowledge base itself.

The agent already puts passages retrieved for the customer's words in the prompt; this tool lets
the model search again with its own query (a rephrasing, a sub-question).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from bot.errors import BackendUnavailable, ToolFailed
from bot.retrieval import citations_of
from bot.tools import ToolContext, ToolResult

MAX_PASSAGE_CHARS = 1500
"""Passage text handed to the model is cut to this many characters."""


class SearchKnowledgeArgs(BaseModel):
    """Arguments of ``search_knowledge``."""

    query: str = Field(min_length=1, max_length=500, description="What to search for.")
    top_k: int = Field(default=5, ge=1, le=10, description="How many passages to return.")


class SearchKnowledge:
    """Search the knowledge base.

    Result content: ``{"passages": [{"doc_id", "title", "url", "heading", "text"}...]}``, best
    first (text cut to :data:`MAX_PASSAGE_CHARS`); the result's citations name each document
    once, at most ``ctx.max_citations``.
    """

    name: ClassVar[str] = "search_knowledge"
    description: ClassVar[str] = (
        "Search the support knowledge base. Returns the most relevant passages (doc_id, title, "
        "url, heading, text). Answer only from passages you found."
    )
    args_model: ClassVar[type[BaseModel]] = SearchKnowledgeArgs

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Run the search.

        Raises:
            bot.errors.ToolFailed: when the knowledge base cannot be queried.
        """
        a = SearchKnowledgeArgs.model_validate(args)
        try:
            passages = await ctx.retriever.search(a.query, top_k=a.top_k)
        except BackendUnavailable as exc:
            raise ToolFailed(self.name, exc) from exc
        content = {
            "passages": [
                {
                    "doc_id": p.doc_id,
                    "title": p.title,
                    "url": p.url,
                    "heading": p.heading,
                    "text": p.text[:MAX_PASSAGE_CHARS],
                }
                for p in passages
            ]
        }
        return ToolResult(content=content, citations=citations_of(passages, ctx.max_citations))
