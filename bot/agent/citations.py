"""Citations in model answers: the turn's numbered sources and the ``[n]`` markers citing them.

The system prompt lists the turn's documents as numbered sources (``[1]``, ``[2]``...); tool
results add more. The model cites them as ``[n]``, ``[n, m]`` or ``[doc_id]``;
:meth:`Sources.referenced` maps those markers back to documents, :meth:`Sources.supporting`
finds the sources an answer that cites nothing draws on, and :func:`strip_citation_markers`
removes the markers from the text (channels render citations themselves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.envelope import Citation

_CITE_RE = re.compile(r"\[([^\[\]\n]{1,80})\](?!\()")  # not a Markdown link
_PARTIAL_CITE_RE = re.compile(r"\[[\d,\s]*$")
_NUMBERS_RE = re.compile(r"^\s*\d+(?:\s*,\s*\d+)*\s*$")
_WORD_RE = re.compile(r"[^\W_]{4,}")


@dataclass(slots=True)
class Source:
    """A document the model may cite, numbered in order of registration (rank order).

    Attributes:
        number: its number in the prompt (1-based).
        citation: the document, as the envelope cites it.
        support_text: the text shown to the model for it (passages joined by newlines).
    """

    number: int
    citation: Citation
    support_text: str


@dataclass(slots=True)
class Sources:
    """The turn's numbered documents (one number per document).

    Attributes:
        items: the sources by number (``items[n - 1]`` is source ``n``).
        by_doc: the same sources by ``doc_id``.
    """

    items: list[Source] = field(default_factory=list)
    by_doc: dict[str, Source] = field(default_factory=dict)

    def add(self, citation: Citation, text: str) -> Source:
        """Register a document (or add ``text`` to a known one); returns its source."""
        known = self.by_doc.get(citation.doc_id)
        if known is not None:
            known.support_text += "\n" + text
            return known
        src = Source(len(self.items) + 1, citation, text)
        self.items.append(src)
        self.by_doc[citation.doc_id] = src
        return src

    def referenced(self, text: str) -> list[Source]:
        """Sources ``text`` cites as ``[n]``, ``[n, m]`` or ``[doc_id]``, in rank order."""
        hits: set[int] = set()
        for m in _CITE_RE.finditer(text):
            inner = m.group(1)
            if _NUMBERS_RE.match(inner):
                hits.update(int(n) for n in inner.split(","))
            elif inner.strip() in self.by_doc:
                hits.add(self.by_doc[inner.strip()].number)
        return [s for s in self.items if s.number in hits]

    def supporting(self, answer: str) -> list[Source]:
        """Sources sharing enough content words with ``answer``, in rank order.

        Enough: at least 2 words, and a quarter of the answer's distinct words of 4+ letters.
        """
        words = _words(answer)
        if not words:
            return []
        out = []
        for s in self.items:
            shared = len(words & _words(s.support_text))
            if shared >= 2 and shared / len(words) >= 0.25:
                out.append(s)
        return out


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD_RE.findall(text)}


def strip_citation_markers(text: str, *, partial: bool = False) -> str:
    """``text`` without ``[n]`` markers (citations travel separately in the envelope).

    Args:
        text: answer text.
        partial: the text is still streaming: also hide a trailing unfinished ``[12``.
    """
    out = _CITE_RE.sub(lambda m: "" if _NUMBERS_RE.match(m.group(1)) else m.group(0), text)
    if partial:
        out = _PARTIAL_CITE_RE.sub("", out)
    out = re.sub(r"[ \t]+([.,;:!?])", r"\1", out)
    out = re.sub(r"[ \t]{2,}", " ", out)
    return out if partial else out.strip()
