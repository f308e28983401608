"""Heading-aware chunking of documents into passages.

A Markdown document is cut at its headings (ATX ``#`` and setext, found with markdown-it-py so
``#`` lines inside code blocks are not taken for headings); every chunk keeps the path of
headings above it (``"Setup > Slack > Tokens"``). A section longer than the budget is split on
paragraph boundaries, then on lines, then on sentences, then on words. HTML is first turned into
Markdown-like text that keeps its headings (:func:`html_to_markdown`); plain text is one section.

The budget is in characters: all-MiniLM-L6-v2 reads 256 word pieces, about 1,000 characters of
English, so the default :data:`MAX_CHARS` keeps a chunk, with its heading prefix, within what
the model sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bs4 import BeautifulSoup, Tag
from markdown_it import MarkdownIt

#: Default chunk budget in characters.
MAX_CHARS = 1000

#: Bump when chunking changes, so the next ingest re-chunks every document.
CHUNKER_VERSION = "2"

Format = Literal["markdown", "text"]


@dataclass(frozen=True, slots=True)
class Document:
    """One source document, before chunking.

    Attributes:
        doc_id: the id it is cited with (a JSONL ``id``, or a path relative to the ingest root).
        title: its title.
        text: its body: Markdown (also for converted HTML) or plain text.
        format: ``"markdown"`` or ``"text"``.
        url: where a reader can open it, when known.
        metadata: free JSON-compatible fields (from JSONL ``metadata`` or YAML front matter).
        source: where it was read from (``path`` or ``path:line``), for messages.
    """

    doc_id: str
    title: str
    text: str
    format: Format = "markdown"
    url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage of a document, the unit that is embedded and retrieved.

    Attributes:
        doc_id: its document's id.
        index: position within the document, from 0.
        title: the document's title.
        heading: heading path inside the document, ``" > "``-joined (``""`` before any heading).
        text: the passage text.
        url: the document's URL, when known.
    """

    doc_id: str
    index: int
    title: str
    heading: str
    text: str
    url: str | None = None

    def embedding_text(self) -> str:
        """The text that is embedded and indexed: title and heading path, then the passage."""
        context = self.heading
        if not context.startswith(self.title):
            context = f"{self.title} > {context}" if context else self.title
        return f"{context}\n{self.text}" if context else self.text


_md = MarkdownIt("commonmark")


def _sections(markdown: str) -> list[tuple[list[str], str]]:
    """``(heading path, body)`` for each heading section of ``markdown``, in order."""
    lines = markdown.splitlines()
    tokens = _md.parse(markdown)
    headings: list[tuple[int, int, int, str]] = []  # (start line, end line, level, text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None and token.level == 0:
            text = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            headings.append((token.map[0], token.map[1], int(token.tag[1]), text))
    out: list[tuple[list[str], str]] = []
    first = headings[0][0] if headings else len(lines)
    preamble = "\n".join(lines[:first]).strip()
    if preamble:
        out.append(([], preamble))
    stack: list[tuple[int, str]] = []
    for n, (_, end, level, text) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        next_start = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
        body = "\n".join(lines[end:next_start]).strip()
        if body:
            out.append(([t for _, t in stack if t], body))
    return out


def markdown_title(markdown: str) -> str | None:
    """The text of the first level-1 heading of ``markdown``, if any."""
    tokens = _md.parse(markdown)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1" and i + 1 < len(tokens):
            return tokens[i + 1].content.strip() or None
    return None


_BLOCK_TAGS_TEXT = """
    p div section article main header footer aside blockquote pre table tr ul ol dl dt dd
    figure figcaption form fieldset details summary address
"""
_BLOCK_TAGS = _BLOCK_TAGS_TEXT.split()
_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "iframe", "nav", "head"]


def html_to_markdown(html: str) -> tuple[str | None, str]:
    """Turn an HTML page into Markdown-like text that keeps its headings.

    Headings become ATX headings (``## Text``), block elements become paragraphs, list items
    become ``- item`` lines; scripts, styles and navigation are dropped.

    Returns:
        ``(title, text)``: the ``<title>`` (else the first ``<h1>``, else None) and the text.
    """
    soup = BeautifulSoup(html, "html.parser")
    title: str | None = None
    if soup.title is not None and soup.title.get_text(strip=True):
        title = soup.title.get_text(" ", strip=True)
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        text = " ".join(tag.get_text(" ", strip=True).split())
        if title is None and tag.name == "h1" and text:
            title = text
        tag.replace_with(f"\n\n{'#' * int(tag.name[1])} {text}\n\n" if text else "\n\n")
    for tag in soup.find_all("li"):
        tag.insert_before("\n- ")
        tag.insert_after("\n")
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(" | ")
    for tag in soup.find_all(_BLOCK_TAGS):
        if isinstance(tag, Tag):
            tag.insert_before("\n\n")
            tag.insert_after("\n\n")
    text = soup.get_text()
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return title, text


#: Boundaries tried in order, coarsest first, with the separator used to re-join pieces.
_BOUNDARIES = (
    (re.compile(r"\n\s*\n"), "\n\n"),  # paragraphs
    (re.compile(r"\n"), "\n"),  # lines
    (re.compile(r"(?<=[.!?])\s+"), " "),  # sentences
    (re.compile(r"\s+"), " "),  # words
)


def _split_long(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars``, at the coarsest boundary that fits."""
    if len(text) <= max_chars:
        return [text]
    for boundary, joiner in _BOUNDARIES:
        parts = [p.strip() for p in boundary.split(text) if p.strip()]
        if len(parts) > 1:
            return _pack(parts, max_chars, joiner)
    # One unbreakable word: cut it.
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


def _pack(parts: list[str], max_chars: int, joiner: str) -> list[str]:
    """Greedily join ``parts`` with ``joiner`` into pieces of at most ``max_chars``."""
    out: list[str] = []
    current = ""
    for part in parts:
        for piece in _split_long(part, max_chars):
            if not current:
                current = piece
            elif len(current) + len(joiner) + len(piece) <= max_chars:
                current = f"{current}{joiner}{piece}"
            else:
                out.append(current)
                current = piece
    if current:
        out.append(current)
    return out


def chunk_document(doc: Document, *, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Cut ``doc`` into chunks, in document order.

    Each chunk's text (without the heading prefix) has at most ``max_chars`` characters; an
    empty document gives no chunks.
    """
    if doc.format == "markdown":
        sections = _sections(doc.text)
    else:
        body = doc.text.strip()
        sections = [([], body)] if body else []
    chunks: list[Chunk] = []
    for path, body in sections:
        heading = " > ".join(path)
        for piece in _split_long(body, max_chars):
            chunks.append(
                Chunk(
                    doc_id=doc.doc_id,
                    index=len(chunks),
                    title=doc.title,
                    heading=heading,
                    text=piece,
                    url=doc.url,
                )
            )
    return chunks
