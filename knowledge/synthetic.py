"""A synthetic knowledge base of any size, made from a real manual, for ``switchboard kb bench``.

The sentences and section titles of a real manual (the Galaxy S10 user manual of
``../shared/datasets/knowledge/galaxy_s10/kb.jsonl``, 451 sections) are recombined into
``n`` distinct one-chunk documents: each document is one of a few hundred product names, a
section title of the manual, and 3 to 7 sentences of which most come from that section and
the rest from random others. The vocabulary, sentence lengths and topic mix are the manual's;
every document differs from every other (product name, sentence choice and order), so dense and
sparse search face ``n`` real, distinct candidates. The corpus is a pure function of
``(source file, n, seed)``.

Embedding 100,000 chunks with the embedded model takes 11 minutes of both cores of a quiet
2-core machine (and much longer on a busy one): :func:`composed_vectors` builds each document's
dense vector from the model's vectors of its distinct pieces (a few thousand, embedded once and
kept on disk by :func:`cached_vectors`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from knowledge.chunk import MAX_CHARS, Document

#: Vectors of shape ``(n, dimension)``, float32.
Vectors = NDArray[np.float32]

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_PRODUCTS = (
    "Galaxy",
    "Nova",
    "Orbit",
    "Pulse",
    "Vista",
    "Zephyr",
    "Atlas",
    "Echo",
    "Lumen",
    "Terra",
    "Quasar",
    "Helix",
)
_TIERS = ("", " Lite", " Plus", " Pro", " Max", " Mini", " Edge", " Go")


@dataclass(frozen=True, slots=True)
class _Section:
    title: str
    sentences: list[str]


def _read_sections(source: Path) -> list[_Section]:
    sections: list[_Section] = []
    with source.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            title = str(record.get("title") or "").strip() or "Overview"
            sentences = [
                s.strip()
                for s in _SENTENCE.split(str(record.get("text") or ""))
                if len(s.strip()) >= 20
            ]
            if sentences:
                sections.append(_Section(title, sentences))
    if not sections:
        raise ValueError(f"no usable sections in {source}")
    return sections


@dataclass(frozen=True, slots=True)
class SyntheticCorpus:
    """Documents recombined from a manual, and what each is made of.

    Attributes:
        documents: ``synthetic:0`` .. ``synthetic:{n-1}``, one chunk each.
        pieces: the distinct texts the documents are made of: section titles, product
            names and sentences.
        parts: for each document, the indices in ``pieces`` of its title, product and
            sentences.
    """

    documents: list[Document]
    pieces: list[str]
    parts: list[list[int]]


def synthetic_corpus(source: Path, n: int, *, seed: int = 0) -> SyntheticCorpus:
    """``n`` distinct plain-text documents of one chunk each, recombined from ``source``.

    Args:
        source: a JSONL file of ``{"title", "text"}`` sections (a manual).
        n: how many documents (and chunks).
        seed: the random seed; the same arguments always give the same corpus.

    Returns:
        The corpus; each document has at most :data:`knowledge.chunk.MAX_CHARS` characters of
        text, so it is one chunk.

    Raises:
        OSError: when ``source`` cannot be read.
        ValueError: when it holds no section with text.
    """
    sections = _read_sections(source)
    rng = random.Random(seed)
    pieces: list[str] = []
    ids: dict[str, int] = {}

    def piece(text: str) -> int:
        if text not in ids:
            ids[text] = len(pieces)
            pieces.append(text)
        return ids[text]

    products = [f"{p} {k}{tier}" for p in _PRODUCTS for k in range(5, 9) for tier in _TIERS]
    docs: list[Document] = []
    parts: list[list[int]] = []
    for i in range(n):
        section = sections[i % len(sections)]
        product = products[rng.randrange(len(products))]
        count = rng.randint(3, 7)
        own = rng.sample(section.sentences, min(len(section.sentences), max(1, count - 2)))
        others = [rng.choice(rng.choice(sections).sentences) for _ in range(count - len(own))]
        sentences = own + others
        rng.shuffle(sentences)
        while len(sentences) > 1 and sum(len(s) + 1 for s in sentences) > MAX_CHARS - 40:
            sentences.pop()
        docs.append(
            Document(
                doc_id=f"synthetic:{i}",
                title=f"{section.title} ({product})",
                text=f"On the {product}: " + " ".join(sentences)[: MAX_CHARS - 40],
                format="text",
            )
        )
        parts.append([piece(section.title), piece(product), *(piece(s) for s in sentences)])
    return SyntheticCorpus(docs, pieces, parts)


def composed_vectors(corpus: SyntheticCorpus, piece_vectors: NDArray[np.float32]) -> Vectors:
    """Dense vectors of the corpus's documents, composed from the vectors of their pieces.

    A document's vector is the length-weighted mean of its pieces' vectors (title, product
    name, sentences), L2-normalized: the mean-pooling the model itself does over word pieces,
    taken per sentence. It is an approximation of the model's vector of the whole text (the
    bench prints their mean cosine on its ingest sample) that costs one embedding per distinct
    piece instead of one per document.

    Args:
        corpus: the corpus.
        piece_vectors: the model's vectors of ``corpus.pieces``, shape ``(len(pieces), d)``.

    Returns:
        float32 array of shape ``(len(corpus.documents), d)``, rows of unit length.
    """
    weights = np.array([max(1, len(p)) for p in corpus.pieces], dtype=np.float32)
    out = np.empty((len(corpus.parts), piece_vectors.shape[1]), dtype=np.float32)
    for row, members in enumerate(corpus.parts):
        w = weights[members]
        out[row] = (piece_vectors[members] * w[:, None]).sum(axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    composed: Vectors = (out / np.maximum(norms, 1e-12)).astype(np.float32)
    return composed


def cached_vectors(
    cache_dir: Path,
    texts: Sequence[str],
    *,
    model_id: str,
    embed: Callable[[list[str]], Vectors],
) -> tuple[Vectors, bool]:
    """The embeddings of ``texts``, from ``cache_dir`` when computed before.

    The cache file's name is a SHA-256 of the model id and every text, so a changed corpus or
    model never reads stale vectors; the file is written complete (a temp file renamed into
    place).

    Args:
        cache_dir: folder of the ``.npy`` files (created if missing).
        texts: the texts to embed.
        model_id: the embedder's ``model_id``.
        embed: blocking function from texts to an ``(n, dimension)`` float32 array.

    Returns:
        ``(vectors, from_cache)``: float32 array of shape ``(len(texts), dimension)``.
    """
    digest = hashlib.sha256(model_id.encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    path = cache_dir / f"vectors-{len(texts)}-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        loaded: Vectors = np.load(path)
        return loaded, True
    vectors = embed(list(texts)).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors, False
