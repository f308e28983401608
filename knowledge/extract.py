"""Text extraction from PDF, DOCX and web pages into Markdown that keeps headings.

Every extractor returns ``(title, markdown)``: the Markdown is then cut at its headings by
:mod:`knowledge.chunk`, so a section's chunks carry its heading path as context.

- PDF (:func:`pdf_to_markdown`, with pypdf: https://pypdf.readthedocs.io/): the text of each page
  (``PageObject.extract_text``). The document outline (bookmarks, ISO 32000-1 §12.3.3) gives the
  headings: each outline item becomes a Markdown heading of its depth, placed where its title
  first appears on its page (else at the top of the page). Without an outline, pages are
  paragraphs of plain text. Title: the document information ``/Title``, else None.
- DOCX (:func:`docx_to_markdown`, with python-docx: https://python-docx.readthedocs.io/):
  paragraphs in body order, tables included; paragraphs styled ``Heading 1``..``Heading 9``
  become headings of that level, ``Title`` a level-1 heading, list styles ``- item`` lines, and
  table rows ``cell | cell`` lines. Title: the core property ``title``, else the ``Title``
  paragraph, else None.
- Web pages (:func:`web_page_to_markdown`, with trafilatura: https://trafilatura.readthedocs.io/):
  the page's main content without navigation, headers, footers and comments, as Markdown with its
  headings; :func:`knowledge.chunk.html_to_markdown` (everything but scripts and navigation) when
  trafilatura finds no main content. Title: from the page's metadata (``og:title``, ``<title>``
  without the site name, the first ``<h1>``).

Extracted text is NFKC-normalized, so ligatures (``ﬁ``), full-width letters and non-breaking
spaces from PDF fonts read as plain text in answers and in the index.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass

from knowledge.chunk import html_to_markdown

_WHITESPACE = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class ExtractionError(Exception):
    """A file is not a readable PDF or DOCX (corrupt, encrypted, or another format)."""


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    lines = [_WHITESPACE.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True, slots=True)
class _OutlineItem:
    title: str
    page: int
    depth: int


def _outline(reader: object) -> list[_OutlineItem]:
    """Outline items in document order (depth from 1), with their 0-based page numbers."""
    from pypdf import PdfReader

    assert isinstance(reader, PdfReader)
    out: list[_OutlineItem] = []

    def walk(items: list[object], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[arg-type]
            except Exception:  # a broken destination: skip the item, keep the text
                continue
            title = _clean(str(getattr(item, "title", "") or ""))
            if title and page is not None and page >= 0:
                out.append(_OutlineItem(title, page, min(depth, 6)))

    try:
        walk(list(reader.outline), 1)
    except Exception:  # an outline pypdf cannot read is ignored, like a missing one
        return []
    return out


def pdf_to_markdown(data: bytes) -> tuple[str | None, str]:
    """Extract the text of a PDF as Markdown, with the outline as headings.

    Args:
        data: the PDF file's bytes.

    Returns:
        ``(title, markdown)``; markdown is empty for a PDF without a text layer (scans).

    Raises:
        ExtractionError: when pypdf cannot read the file, or it is encrypted with a password.
    """
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not reader.decrypt("")
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionError(f"not a readable PDF: {exc}") from exc
    if locked:
        raise ExtractionError("the PDF is encrypted with a password")
    try:
        pages = [_clean(page.extract_text() or "") for page in reader.pages]
        metadata = reader.metadata
        title = _clean(str(metadata.title)) if metadata is not None and metadata.title else None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionError(f"not a readable PDF: {exc}") from exc
    by_page: dict[int, list[_OutlineItem]] = {}
    for item in _outline(reader):
        by_page.setdefault(item.page, []).append(item)
    parts: list[str] = []
    for number, text in enumerate(pages):
        for item in reversed(by_page.get(number, [])):
            heading = f"{'#' * item.depth} {item.title}"
            at = text.find(item.title)
            if at >= 0:
                # The title printed on the page becomes the heading line.
                text = f"{text[:at]}\n\n{heading}\n\n{text[at + len(item.title) :]}"
            else:
                text = f"{heading}\n\n{text}"
        parts.append(text.strip())
    return title or None, _BLANK_LINES.sub("\n\n", "\n\n".join(p for p in parts if p)).strip()


_HEADING_STYLE = re.compile(r"^heading ([1-9])$", re.IGNORECASE)


def docx_to_markdown(data: bytes) -> tuple[str | None, str]:
    """Extract a DOCX document as Markdown, with heading styles as headings.

    Args:
        data: the ``.docx`` file's bytes (Office Open XML, ECMA-376).

    Returns:
        ``(title, markdown)``.

    Raises:
        ExtractionError: when the file is not a readable DOCX package.
    """
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ExtractionError(f"not a readable DOCX file: {exc}") from exc
    title = _clean(document.core_properties.title or "") or None
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.append("")
            for row in block.rows:
                cells = [_clean(cell.text).replace("\n", " ") for cell in row.cells]
                lines.append(" | ".join(dict.fromkeys(c for c in cells if c)))
            lines.append("")
            continue
        assert isinstance(block, Paragraph)
        text = _clean(block.text).replace("\n", " ")
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        level = _HEADING_STYLE.match(style)
        if level is not None:
            lines += ["", f"{'#' * min(6, int(level.group(1)))} {text}", ""]
        elif style.lower() == "title":
            title = title or text
            lines += ["", f"# {text}", ""]
        elif style.lower().startswith("list"):
            lines.append(f"- {text}")
        else:
            lines += ["", text, ""]
    return title, _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def web_page_to_markdown(html: str, *, url: str | None = None) -> tuple[str | None, str]:
    """The main content of a web page as Markdown with its headings.

    Args:
        html: the page's HTML.
        url: the page's address (helps trafilatura resolve metadata).

    Returns:
        ``(title, markdown)``.
    """
    import trafilatura

    text = trafilatura.extract(
        html,
        url=url,
        output_format="markdown",
        include_formatting=True,
        include_links=False,
        include_images=False,
        include_comments=False,
        include_tables=True,
        favor_precision=True,
    )
    metadata = trafilatura.extract_metadata(html, default_url=url)
    title = _clean(metadata.title) if metadata is not None and metadata.title else None
    if not text or not text.strip():
        fallback_title, text = html_to_markdown(html)
        title = title or fallback_title
    # Lines keep their indentation (code blocks, nested lists).
    text = _BLANK_LINES.sub("\n\n", unicodedata.normalize("NFKC", text)).strip()
    return title or None, text
