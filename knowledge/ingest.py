"""Reading source files into :class:`knowledge.chunk.Document` objects.

Supported inputs:

- Markdown (``.md``, ``.markdown``, ``.mdx``), HTML (``.html``, ``.htm``), plain text
  (``.txt``, ``.text``, ``.rst``), PDF (``.pdf``) and Word (``.docx``) files; PDF and DOCX are
  turned into Markdown with their outline or heading styles as headings (see
  :mod:`knowledge.extract`). The doc id is the path relative to the directory given
  (``/``-separated, without extension); a file given directly has its stem as doc id. The title is
  the first ``# H1`` (HTML: ``<title>``, else the first ``<h1>``; PDF: the document information
  title; DOCX: the ``title`` core property, else the ``Title`` paragraph), else the file name.
  Markdown may start with YAML front matter (``---`` ... ``---``) whose ``title:`` and ``url:``
  take precedence; its other keys become metadata.
- JSONL (``.jsonl``): one record per line, ``{"id" (or "doc_id"), "title", "text", "url"?,
  "metadata"?}``; ``section_url`` is accepted for ``url``. Record text is read as Markdown.

With ``base_url``, a document without a URL gets ``base_url + doc_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from bot.errors import SwitchboardError
from knowledge.chunk import CHUNKER_VERSION, Document, html_to_markdown, markdown_title
from knowledge.extract import ExtractionError, docx_to_markdown, pdf_to_markdown

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PDF_SUFFIXES = frozenset({".pdf"})
DOCX_SUFFIXES = frozenset({".docx"})
BINARY_SUFFIXES = PDF_SUFFIXES | DOCX_SUFFIXES
SUPPORTED_SUFFIXES = (
    MARKDOWN_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES | JSONL_SUFFIXES | BINARY_SUFFIXES
)


class IngestError(SwitchboardError):
    """A source file cannot be read or a record is malformed.

    Attributes:
        source: the file (and ``:line`` for JSONL) at fault.
    """

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source

    def __repr__(self) -> str:
        return f"IngestError({str(self)!r}, source={self.source!r})"


def content_hash(doc: Document, *, model_id: str) -> str:
    """sha256 (hex) of everything that shapes a document's chunks and vectors.

    It covers the title, text, format, URL, metadata, the chunker version and the embedding
    model, so a change to any of them re-ingests the document.
    """
    blob = json.dumps(
        [doc.title, doc.text, doc.format, doc.url, doc.metadata, CHUNKER_VERSION, model_id],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"cannot read: {exc}", source=str(path)) from exc


def _front_matter(text: str, source: str) -> tuple[dict[str, Any], str]:
    """Split YAML front matter (``---`` first line, up to the next ``---`` or ``...``)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    for n, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            try:
                data = yaml.safe_load("".join(lines[1:n]))
            except yaml.YAMLError as exc:
                raise IngestError(f"invalid YAML front matter: {exc}", source=source) from exc
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise IngestError("front matter is not a mapping", source=source)
            clean: dict[str, Any] = json.loads(json.dumps(data, default=str))
            return clean, "".join(lines[n + 1 :])
    return {}, text


def _with_base(url: str | None, doc_id: str, base_url: str | None) -> str | None:
    if url or not base_url:
        return url
    return base_url + doc_id


def _read_binary(path: Path, doc_id: str, base_url: str | None) -> Document:
    """Read a PDF or DOCX file (see :mod:`knowledge.extract`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read: {exc}", source=str(path)) from exc
    extractor = pdf_to_markdown if path.suffix.lower() in PDF_SUFFIXES else docx_to_markdown
    try:
        title, text = extractor(data)
    except ExtractionError as exc:
        raise IngestError(str(exc), source=str(path)) from exc
    return Document(
        doc_id=doc_id,
        title=title or markdown_title(text) or path.name,
        text=text,
        format="markdown",
        url=_with_base(None, doc_id, base_url),
        source=str(path),
    )


def read_file(path: Path, doc_id: str, *, base_url: str | None = None) -> Document:
    """Read one Markdown, HTML, text, PDF or DOCX file as a document with id ``doc_id``.

    Raises:
        IngestError: when the file cannot be read or parsed, its front matter is invalid, or
            its type is not supported.
    """
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES or suffix in DOCX_SUFFIXES:
        return _read_binary(path, doc_id, base_url)
    text = _read_text(path)
    source = str(path)
    metadata: dict[str, Any] = {}
    url: str | None = None
    title: str | None = None
    if suffix in MARKDOWN_SUFFIXES or suffix in TEXT_SUFFIXES:
        front, text = _front_matter(text, source)
        title = str(front.pop("title")) if front.get("title") else None
        url = str(front.pop("url")) if front.get("url") else None
        metadata = front
    if suffix in MARKDOWN_SUFFIXES:
        title = title or markdown_title(text)
        fmt = "markdown"
    elif suffix in HTML_SUFFIXES:
        html_title, text = html_to_markdown(text)
        title = html_title
        fmt = "markdown"
    elif suffix in TEXT_SUFFIXES:
        fmt = "text"
    else:
        raise IngestError(f"unsupported file type {suffix!r}", source=source)
    return Document(
        doc_id=doc_id,
        title=title or path.name,
        text=text,
        format="markdown" if fmt == "markdown" else "text",
        url=_with_base(url, doc_id, base_url),
        metadata=metadata,
        source=source,
    )


def jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """The JSON values of a JSON Lines file (https://jsonlines.org/), read line by line.

    Blank lines are skipped; a UTF-8 byte-order mark is accepted.

    Yields:
        ``(source, value)``: ``source`` is ``"{path}:{line number}"`` (for error messages).

    Raises:
        IngestError: the file cannot be read, or a line is not valid JSON (names the line).
    """
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise IngestError(f"cannot read: {exc}", source=str(path)) from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestError(f"invalid JSON: {exc}", source=source) from exc
            yield source, value


def read_jsonl(path: Path, *, base_url: str | None = None) -> Iterator[Document]:
    """The records of a JSONL file, one document per non-blank line.

    Raises:
        IngestError: on invalid JSON, or a record without an id or text (names the line).
    """
    for source, record in jsonl_records(path):
        if not isinstance(record, dict):
            raise IngestError("record is not a JSON object", source=source)
        doc_id = record.get("id", record.get("doc_id"))
        text = record.get("text")
        if not isinstance(doc_id, str | int) or str(doc_id) == "":
            raise IngestError('record needs a non-empty "id" (or "doc_id")', source=source)
        if not isinstance(text, str):
            raise IngestError('record needs a "text" string', source=source)
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise IngestError('"metadata" must be an object', source=source)
        url = record.get("url") or record.get("section_url")
        doc_id = str(doc_id)
        yield Document(
            doc_id=doc_id,
            title=str(record.get("title") or doc_id),
            text=text,
            format="markdown",
            url=_with_base(str(url) if url else None, doc_id, base_url),
            metadata=metadata,
            source=source,
        )


def _doc_id(path: Path, root: Path | None) -> str:
    if root is None:
        return path.stem
    return path.relative_to(root).with_suffix("").as_posix()


def read_documents(paths: Sequence[Path], *, base_url: str | None = None) -> Iterator[Document]:
    """Every document under ``paths`` (files, or directories walked recursively in name order).

    Files in a directory whose type is not supported, and hidden files and folders, are skipped;
    a file named directly must be supported.

    Raises:
        IngestError: when a path does not exist, a file named directly is not supported, or a
            file cannot be parsed.
    """
    for given in paths:
        if given.is_dir():
            for path in sorted(given.rglob("*")):
                relative = path.relative_to(given)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield from _read_one(path, given, base_url)
        elif given.is_file():
            if given.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise IngestError(
                    f"unsupported file type {given.suffix!r} (supported: "
                    f"{', '.join(sorted(SUPPORTED_SUFFIXES))})",
                    source=str(given),
                )
            yield from _read_one(given, None, base_url)
        else:
            raise IngestError("no such file or directory", source=str(given))


def _read_one(path: Path, root: Path | None, base_url: str | None) -> Iterator[Document]:
    if path.suffix.lower() in JSONL_SUFFIXES:
        yield from read_jsonl(path, base_url=base_url)
    else:
        yield read_file(path, _doc_id(path, root), base_url=base_url)
