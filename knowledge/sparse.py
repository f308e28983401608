"""BM25-style sparse vectors for Qdrant.

A document vector holds, for each stemmed term, the BM25 term-frequency part
``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))``; the collection's sparse vector is
created with ``Modifier.IDF`` so Qdrant multiplies in the inverse document frequency at query
time (https://qdrant.tech/documentation/concepts/indexing/#idf-modifier). A query vector holds
weight 1 per distinct term, so the dot product Qdrant computes is the BM25 score.

Terms are words of the NFKC-normalized, lower-cased text (so PDF ligatures such as "ﬁ",
full-width letters and non-breaking spaces match their plain forms), stop words removed, stemmed
with the Snowball English stemmer, and mapped to a 32-bit index by a stable hash (collisions are
rare and harmless).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer  # type: ignore[import-untyped]

#: BM25 saturation and length normalization (the usual defaults).
K1 = 1.2
B = 0.75
#: Assumed average chunk length in terms (fixed, so vectors never need recomputing).
AVG_LEN = 80.0

_APOSTROPHE = "\u2019"
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*", re.UNICODE)

_STOP_WORDS_TEXT = """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do
    does doesn't doing don't down during each few for from further had hadn't has hasn't
    have haven't having he her here hers herself him himself his how i i'd i'll i'm i've if
    in into is isn't it it's its itself let's me more most my myself no nor not of off on
    once only or other ought our ours ourselves out over own same she should shouldn't so
    some such than that that's the their theirs them themselves then there there's these
    they this those through to too under until up very was wasn't we were weren't what
    what's when where which while who whom why will with won't would wouldn't you your yours
    yourself yourselves
"""
#: English stop words: function words that carry no topic.
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def terms(text: str) -> list[str]:
    """The stemmed, stop-word-free terms of ``text``, in order (with repeats)."""
    out: list[str] = []
    for match in _WORD.finditer(unicodedata.normalize("NFKC", text).lower()):
        word = match.group().replace(_APOSTROPHE, "'")
        if word in STOP_WORDS:
            continue
        out.append(_stem(word.split("'", 1)[0]))
    return out


def term_index(term: str) -> int:
    """Stable 32-bit unsigned index of ``term`` (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(term.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class SparseTerms:
    """A sparse vector: parallel lists of term indices and weights."""

    indices: list[int]
    values: list[float]


def document_vector(text: str) -> SparseTerms:
    """BM25 term-frequency weights of a chunk's text (IDF is applied by Qdrant)."""
    words = terms(text)
    counts = Counter(term_index(t) for t in words)
    norm = K1 * (1.0 - B + B * len(words) / AVG_LEN)
    indices = sorted(counts)
    values = [counts[i] * (K1 + 1.0) / (counts[i] + norm) for i in indices]
    return SparseTerms(indices=indices, values=values)


def query_vector(text: str) -> SparseTerms:
    """Weight 1 for each distinct term of a query."""
    indices = sorted({term_index(t) for t in terms(text)})
    return SparseTerms(indices=indices, values=[1.0] * len(indices))
