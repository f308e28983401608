"""The knowledge base's part of data-subject requests (a :class:`bot.subjects.SubjectHolder`).

The composition root registers it (:func:`bot.compose.subject_holders`), so the command line,
the admin API and the console all search and erase the same material. A customer is found by
the identifiers the database scan gave (:class:`bot.subjects.AboutSubject`: platform ids,
e-mail addresses, names, session keys); what the knowledge base can hold about them, and what
erasure does with it:

- **Curated answers** (``DATA_DIR/curated_answers.jsonl``, :mod:`knowledge.answers`). An
  answer saved from one of their conversations (its ``session_key``), or whose id names them,
  is theirs: it is **deleted** (its questions are usually their own words). Another answer
  that names them is kept with their identifiers replaced by ``[erased]`` (its phrasings are
  embedded again at the next match).
- **Documents in the index** (each chunk's title, heading, text, URL and metadata). A document
  named after them (its doc id or origin holds an identifier, e.g. an uploaded
  ``zofia.w@example.org.md``) is about them: it is **removed** from the index. Any other
  document that mentions them is **redacted**: the chunks naming them are stored again with
  their identifiers replaced by ``[erased]`` and with fresh vectors (the old dense and BM25
  vectors derive from the old text; BM25 terms hash the address's words). Redaction, not
  removal, because such a document is the operator's content that mentions the customer, as
  another customer's message quoting them is, which the database anonymizes too: the rest
  stays useful, and a namesake costs a replaced name, not a lost manual. The document keeps
  its content hash, so re-ingesting its unchanged source does not bring the identifiers back;
  a changed source would: the erasure report lists each document with its origin, to fix it
  there. The write is compacting (no byte of the old text stays in the index's files; see
  :mod:`knowledge.edge_index`).
- **Uploads** (``DATA_DIR/uploads/``): files of the knowledge admin API, deleted when their
  ingest ends; one an interrupted ingest left that names them (its text or its name) is
  **deleted**.

The report's items never repeat an identifier (they are scrubbed too).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from bot.config import Settings
from bot.subjects import AboutSubject, HolderErasure
from knowledge.answers import AnswerStore, CuratedAnswer
from knowledge.ingest import IngestError, read_documents
from knowledge.kb import KnowledgeBase, index_stored

log = logging.getLogger(__name__)

NAME: Final = "knowledge_base"
"""The section of exports and erasure reports."""
SEARCHED: Final = ("doc_id", "title", "url", "heading", "text", "metadata", "origin")
"""The payload fields of a chunk that are searched for identifiers."""
REDACTED: Final = ("title", "url", "heading", "text", "metadata")
"""The payload fields redaction rewrites (ids, index, hash and origin stay)."""
ANSWER_COUNTS: Final = {"delete": "curated_answers_deleted", "redact": "curated_answers_redacted"}
"""The erasure count of each fate of a curated answer."""


class KnowledgeSubjects:
    """Finds and erases a customer in the knowledge base (see the module docstring).

    Args:
        settings: ``data_dir`` (answers, uploads) and the index settings.
        kb: the process's open knowledge base; None: opened for each request, then closed.
    """

    name = NAME

    def __init__(self, settings: Settings, kb: KnowledgeBase | None = None) -> None:
        self.settings = settings
        self._kb = kb

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[KnowledgeBase | None]:
        """The process's knowledge base, or one opened now; None when no index was written."""
        if self._kb is not None:
            yield self._kb
            return
        if not await asyncio.to_thread(index_stored, self.settings):
            yield None
            return
        kb = await KnowledgeBase.open(self.settings)
        try:
            yield kb
        finally:
            await kb.close()

    # --- finding ------------------------------------------------------------------------------

    @staticmethod
    def _answer_fate(about: AboutSubject, answer: CuratedAnswer) -> str | None:
        """``"delete"``, ``"redact"`` or None (not about them)."""
        if answer.session_key in about.sessions or about.mentions(answer.id):
            return "delete"
        return "redact" if about.mentions(answer.to_json()) else None

    @staticmethod
    async def _documents(
        kb: KnowledgeBase | None, about: AboutSubject
    ) -> dict[str, list[dict[str, Any]]]:
        """The chunks naming them, per doc id, in chunk order."""

        def keep(payload: dict[str, Any]) -> bool:
            return about.mentions({k: payload.get(k) for k in SEARCHED})

        found = await kb.find_chunks(keep) if kb is not None else []
        docs: dict[str, list[dict[str, Any]]] = {}
        for payload in sorted(found, key=lambda p: (str(p["doc_id"]), int(p["chunk_index"]))):
            docs.setdefault(str(payload["doc_id"]), []).append(payload)
        return docs

    def _uploads(self, about: AboutSubject) -> list[Path]:
        """Files left under ``DATA_DIR/uploads`` that name them (blocking: run in a thread)."""
        root = self.settings.data_dir / "uploads"
        if not root.is_dir():
            return []
        out: list[Path] = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                text = "\n".join(d.text for d in read_documents([path]))
            except (IngestError, OSError, ValueError):
                text = path.read_bytes().decode("utf-8", errors="replace")
            if about.mentions(text) or about.mentions(str(path.relative_to(root))):
                out.append(path)
        return out

    # --- the holder ---------------------------------------------------------------------------

    async def export(self, about: AboutSubject) -> dict[str, Any]:
        """``{"curated_answers", "documents", "uploads"}`` that are about them.

        ``curated_answers``: the stored answers with ``"match"`` (``from_their_conversation``
        or ``mentions``); ``documents``: ``{"doc_id", "title", "url", "origin", "chunks":
        [{"chunk_index", "heading", "text"}]}`` with the chunks naming them; ``uploads``:
        ``{"path", "bytes"}`` relative to ``DATA_DIR/uploads``.

        Raises:
            bot.errors.BackendUnavailable: when the index cannot be read.
            knowledge.ingest.IngestError: when the answers file is corrupt.
        """
        store = AnswerStore.for_settings(self.settings)
        answers = []
        for answer in await asyncio.to_thread(store.load):
            fate = self._answer_fate(about, answer)
            if fate is not None:
                match = "from_their_conversation" if fate == "delete" else "mentions"
                answers.append({**answer.to_json(), "match": match})
        async with self._open() as kb:
            found = await self._documents(kb, about)
        documents = [
            {
                "doc_id": doc_id,
                "title": chunks[0].get("title"),
                "url": chunks[0].get("url"),
                "origin": chunks[0].get("origin"),
                "chunks": [
                    {k: c.get(k) for k in ("chunk_index", "heading", "text")} for c in chunks
                ],
            }
            for doc_id, chunks in found.items()
        ]
        root = self.settings.data_dir / "uploads"
        uploads = [
            {"path": str(p.relative_to(root)), "bytes": p.stat().st_size}
            for p in await asyncio.to_thread(self._uploads, about)
        ]
        return {"curated_answers": answers, "documents": documents, "uploads": uploads}

    async def erase(self, about: AboutSubject) -> HolderErasure:
        """Delete or redact what names them (see the module docstring).

        Raises:
            bot.errors.BackendUnavailable: when the index cannot be written (for one, when
                another process is ingesting: try again when it ends).
            knowledge.ingest.IngestError: when the answers file is corrupt.
            OSError: when a file cannot be written or deleted.
        """
        scrub = about.needles.scrub
        items: list[dict[str, Any]] = []
        counts = dict.fromkeys(
            (
                "curated_answers_deleted",
                "curated_answers_redacted",
                "documents_removed",
                "documents_redacted",
                "chunks_redacted",
                "uploads_deleted",
            ),
            0,
        )

        def change(answers: list[CuratedAnswer]) -> list[CuratedAnswer]:
            kept: list[CuratedAnswer] = []
            for a in answers:
                fate = self._answer_fate(about, a)
                if fate is not None:
                    counts[ANSWER_COUNTS[fate]] += 1
                    items.append({"kind": "curated_answer", "id": scrub(a.id), "action": fate})
                if fate == "delete":
                    continue
                kept.append(_redacted(about, a) if fate == "redact" else a)
            return kept

        await asyncio.to_thread(AnswerStore.for_settings(self.settings).edit, change)
        async with self._open() as kb:
            docs = await self._documents(kb, about)
            remove = [d for d, chunks in docs.items() if _named_after(about, d, chunks[0])]
            rewrite = [
                {**c, **{k: scrub(c.get(k)) for k in REDACTED}}
                for d, chunks in docs.items()
                if d not in remove
                for c in chunks
            ]
            if kb is not None and (remove or rewrite):
                await kb.rewrite_chunks(rewrite, remove=remove)
        for doc_id, chunks in docs.items():
            action = "remove" if doc_id in remove else "redact"
            counts["documents_removed" if action == "remove" else "documents_redacted"] += 1
            items.append(
                {
                    "kind": "document",
                    "doc_id": scrub(doc_id),
                    "title": scrub(chunks[0].get("title")),
                    "origin": scrub(chunks[0].get("origin")),
                    "action": action,
                }
            )
        counts["chunks_redacted"] = len(rewrite)
        root = self.settings.data_dir / "uploads"
        for path in await asyncio.to_thread(self._uploads, about):
            await asyncio.to_thread(path.unlink, missing_ok=True)
            counts["uploads_deleted"] += 1
            items.append({"kind": "upload", "path": scrub(str(path.relative_to(root)))})
        log.info("knowledge.subject_erased", extra=counts)
        return HolderErasure(counts, items)


def _named_after(about: AboutSubject, doc_id: str, first: dict[str, Any]) -> bool:
    """Whether a document is about them by its name: its doc id or origin holds an identifier."""
    return about.mentions(doc_id) or about.mentions(first.get("origin"))


def _redacted(about: AboutSubject, answer: CuratedAnswer) -> CuratedAnswer:
    """``answer`` with their identifiers replaced (a session key naming them is dropped)."""
    scrub = about.needles.scrub
    return dataclasses.replace(
        answer,
        questions=tuple(scrub(q) for q in answer.questions),
        answer=scrub(answer.answer),
        sources=tuple(
            c.model_copy(update={"title": scrub(c.title), "url": scrub(c.url)})
            for c in answer.sources
        ),
        author=scrub(answer.author),
        session_key=None if about.mentions(answer.session_key) else answer.session_key,
    )
