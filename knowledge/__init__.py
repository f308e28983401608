"""The knowledge base: ingest, chunk, embed, index, retrieve, evaluate.

Public API: :class:`KnowledgeBase` (the facade), :class:`IngestReport`, :class:`EvalReport`,
the :class:`Embedder` protocol with :class:`LocalEmbedder` and :class:`LiteLLMEmbedder`,
:class:`HybridRetriever` (a :class:`bot.retrieval.Retriever`) and
:data:`RECOMMENDED_MIN_CONFIDENCE`.
"""

from knowledge.embed import Embedder, LiteLLMEmbedder, LocalEmbedder, embedder_from_settings
from knowledge.evaluate import EvalReport
from knowledge.ingest import IngestError
from knowledge.kb import IngestReport, KnowledgeBase
from knowledge.retrieve import RECOMMENDED_MIN_CONFIDENCE, HybridRetriever

__all__ = [
    "RECOMMENDED_MIN_CONFIDENCE",
    "Embedder",
    "EvalReport",
    "HybridRetriever",
    "IngestError",
    "IngestReport",
    "KnowledgeBase",
    "LiteLLMEmbedder",
    "LocalEmbedder",
    "embedder_from_settings",
]
