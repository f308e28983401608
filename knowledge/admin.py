"""The knowledge base's admin operations: ingest jobs with progress, counts, curated answers.

One :class:`KnowledgeAdmin` per hub (:meth:`KnowledgeAdmin.of`) serves both doors to them: the
admin REST API (bearer admin keys, :mod:`knowledge.http`) and the console's Knowledge page (an
admin's console session, :mod:`knowledge.console`). A job started through one is followed
through the other, and one shutdown cancels it.

Every change is appended to the hub's audit log with the caller as actor (``admin-api`` for the
REST API, the admin's login name in the console):

- ``knowledge.ingest`` ``{"job", "files": [NAME...], "sitemaps": [URL...], "urls": [URL...]}``
  when an ingest starts;
- ``knowledge.answer_save`` ``{"answer_id", "questions": N}``, with the session key of the
  conversation it was taken from when there is one (so the entry's detail is erased with that
  customer);
- ``knowledge.answer_delete`` ``{"answer_id"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bot.config import Settings
from bot.envelope import SessionKey
from bot.errors import BackendUnavailable, NotFound, SwitchboardError
from bot.store.base import Store
from knowledge.answers import AnswerStore, CuratedAnswer
from knowledge.kb import KnowledgeBase
from knowledge.sync import Sources, ingest_sources

log = logging.getLogger(__name__)

#: Finished jobs kept for status requests.
KEPT_JOBS = 50


class AdminHub(Protocol):
    """What the admin operations need of the hub (:class:`bot.hub.Hub` has it).

    Its optional ``retriever`` attribute is the knowledge base.
    """

    @property
    def settings(self) -> Settings:
        """The hub's settings (data directory: the answers file, uploads)."""

    @property
    def store(self) -> Store:
        """The store whose audit log records every change."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as the two doors name them.

    Attributes:
        actor: the audit log's actor (``admin-api``, or the admin's login name).
        author: the ``author`` of answers saved without one (``api``, or the login name).
    """

    actor: str
    author: str


@dataclass(slots=True)
class IngestJob:
    """One ingest started by an admin (JSON form: :meth:`to_json`, see :mod:`knowledge.http`).

    Attributes:
        id: ``ing-`` and 16 hex digits.
        state: ``running``, ``done`` or ``failed``.
        phase: ``fetching`` (web pages) or ``embedding`` (chunks).
        done: pages fetched or chunks embedded so far, of ``total``.
        total: pages to fetch, or chunks to embed, in the current phase.
        current: the page or document being worked on.
        report: when done, the counts of :class:`knowledge.kb.IngestReport`.
        failed_pages: ``{"url", "reason"}`` of web pages that could not be read.
        error: why the job failed.
        started_at: ISO 8601, UTC.
        finished_at: ISO 8601, UTC, once done or failed.
    """

    id: str
    state: str = "running"
    phase: str = "fetching"
    done: int = 0
    total: int = 0
    current: str = ""
    report: dict[str, Any] | None = None
    failed_pages: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The job as the APIs return it."""
        return asdict(self)


# Hub id -> its admin. An admin holds its hub, so while an entry lives its id names that hub
# and no other; the entry goes when the last application holding the admin does.
_ADMINS: weakref.WeakValueDictionary[int, KnowledgeAdmin] = weakref.WeakValueDictionary()


class KnowledgeAdmin:
    """Ingest jobs, index counts and curated answers of one hub. Get it with :meth:`of`.

    Args:
        hub: the hub; its ``retriever`` must be a :class:`KnowledgeBase` for ingest and counts.
    """

    def __init__(self, hub: AdminHub) -> None:
        self.hub = hub
        self.jobs: dict[str, IngestJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, hub: AdminHub) -> KnowledgeAdmin:
        """The one admin of ``hub`` (created on first use)."""
        admin = _ADMINS.get(id(hub))
        if admin is None:
            admin = _ADMINS[id(hub)] = cls(hub)
        return admin

    # --- the knowledge base ---------------------------------------------------------------

    def reader(self) -> KnowledgeBase:
        """The hub's knowledge base.

        Raises:
            BackendUnavailable: this process has none.
        """
        kb = getattr(self.hub, "retriever", None)
        kb = getattr(kb, "inner", kb)  # bot.retrieval.TracedRetriever, with tracing on
        if not isinstance(kb, KnowledgeBase):
            raise BackendUnavailable("this process has no knowledge base")
        return kb

    def writer(self) -> KnowledgeBase:
        """The hub's knowledge base, when this process may write it.

        Raises:
            BackendUnavailable: no knowledge base, or only a read-only snapshot of a local
                index another process holds.
        """
        kb = self.reader()
        if kb.settings.qdrant_url is None and kb.settings.data_dir != self.hub.settings.data_dir:
            raise BackendUnavailable(
                "this process reads a snapshot of a local index another process holds: ingest "
                "through that process, or use a Qdrant server (qdrant_url)"
            )
        return kb

    def upload_folder(self) -> Path:
        """A new, empty folder for one request's uploaded files (removed when its job ends).

        Raises:
            BackendUnavailable: as :meth:`writer`.
        """
        root = self.writer().settings.data_dir / "uploads"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="upload-", dir=root))

    async def stats(self) -> dict[str, Any]:
        """The index's counts, the stored curated answers, and whether this process may ingest.

        Returns:
            ``{"documents", "chunks", "answers", "collection", "writable"}``.

        Raises:
            BackendUnavailable: no knowledge base, or the index cannot be queried.
            knowledge.ingest.IngestError: the answers file is corrupt.
        """
        kb = self.reader()
        try:
            self.writer()
            writable = True
        except BackendUnavailable:
            writable = False
        answers = await self.answers()
        return {
            "documents": await kb.document_count(),
            "chunks": await kb.index.chunk_count(),
            "answers": len(answers),
            "collection": kb.settings.kb_collection,
            "writable": writable,
        }

    # --- ingest ---------------------------------------------------------------------------

    async def start_ingest(
        self,
        sources: Sources,
        caller: Caller,
        *,
        folder: Path | None = None,
        files: Sequence[str] = (),
    ) -> IngestJob:
        """Audit, then start ingesting ``sources`` in the background.

        Args:
            sources: what to read.
            caller: who asked.
            folder: the folder of uploaded files (from :meth:`upload_folder`), removed when
                the job ends, or when it cannot start.
            files: the uploaded files' names, for the audit log.

        Returns:
            The job, running.

        Raises:
            BackendUnavailable: as :meth:`writer`, or the audit log cannot be written.
        """
        try:
            kb = self.writer()
            job = IngestJob(
                id=f"ing-{secrets.token_hex(8)}",
                phase="fetching" if sources.web else "embedding",
            )
            detail = {
                "job": job.id,
                "files": list(files),
                "sitemaps": list(sources.sitemaps),
                "urls": list(sources.urls),
            }
            await self.hub.store.audit(caller.actor, "knowledge.ingest", None, detail)
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self.jobs[job.id] = job
        self._forget_old_jobs()
        task = asyncio.create_task(self._run(job, kb, sources, folder))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("knowledge.ingest_started", extra={"job": job.id, "actor": caller.actor})
        return job

    async def _run(
        self, job: IngestJob, kb: KnowledgeBase, sources: Sources, folder: Path | None
    ) -> None:
        def progress(phase: str) -> Callable[[int, int, str], None]:
            def update(done: int, total: int, name: str) -> None:
                job.phase, job.done, job.total, job.current = phase, done, total, name

            return update

        try:
            result = await ingest_sources(
                kb, sources, progress=progress("embedding"), fetching=progress("fetching")
            )
        except SwitchboardError as exc:
            job.state, job.error = "failed", str(exc)
            log.warning("knowledge.ingest_failed", extra={"job": job.id, "error": str(exc)})
        except Exception as exc:  # the job's boundary: report, never crash the server
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
            log.exception("knowledge.ingest_crashed", extra={"job": job.id})
        else:
            job.state = "done"
            job.report = asdict(result.report)
            job.failed_pages = [{"url": u, "reason": r} for u, r in result.failed_pages]
        finally:
            job.finished_at = datetime.now(UTC).isoformat()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self.jobs.values() if j.state != "running"]
        for old in finished[: max(0, len(finished) - KEPT_JOBS)]:
            del self.jobs[old.id]

    def job(self, job_id: str) -> IngestJob:
        """The job ``job_id`` (one of the last :data:`KEPT_JOBS` finished, or running).

        Raises:
            NotFound: no such job in this process.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound("no such ingest job in this process")
        return job

    async def close(self, *_app: object) -> None:
        """Cancel running ingests (server shutdown; an ``on_shutdown`` signal handler)."""
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- curated answers ------------------------------------------------------------------

    def _store(self) -> AnswerStore:
        return AnswerStore.for_settings(self.hub.settings)

    async def answers(self) -> list[CuratedAnswer]:
        """Every stored answer, oldest first.

        Raises:
            knowledge.ingest.IngestError: the answers file is corrupt.
        """
        return await asyncio.to_thread(self._store().load)

    async def save_answer(
        self, answer: CuratedAnswer, caller: Caller, *, conversation: SessionKey | None = None
    ) -> CuratedAnswer:
        """Save ``answer`` (one with the id of a stored answer replaces it), then audit.

        Returns:
            The answer as saved (with ``session_key`` set from ``conversation``).

        Args:
            answer: the validated answer (:func:`knowledge.answers.parse_answer`).
            caller: who saves it.
            conversation: the conversation it was taken from, if any (default: the answer's
                own ``session_key``); kept as the answer's ``session_key``.

        Raises:
            NotFound: ``conversation`` names no stored conversation (nothing is saved).
            knowledge.ingest.IngestError: the answers file is corrupt.
            BackendUnavailable: the audit log cannot be written.
        """
        if conversation is None and answer.session_key is not None:
            conversation = SessionKey(answer.session_key)
        if conversation is not None:
            if await self.hub.store.conversation(conversation) is None:
                raise NotFound(f"no conversation {conversation!r}")
            # Kept with the answer: erasing that customer deletes it (knowledge.subjects).
            answer = dataclasses.replace(answer, session_key=str(conversation))
        await asyncio.to_thread(self._store().upsert, [answer])
        detail = {"answer_id": answer.id, "questions": len(answer.questions)}
        await self.hub.store.audit(caller.actor, "knowledge.answer_save", conversation, detail)
        log.info("knowledge.curated_answer_saved", extra={"answer_id": answer.id})
        return answer

    async def remove_answer(self, answer_id: str, caller: Caller) -> None:
        """Delete the answer ``answer_id``, then audit.

        Raises:
            NotFound: there is none.
            knowledge.ingest.IngestError: the answers file is corrupt.
            BackendUnavailable: the audit log cannot be written.
        """
        if not await asyncio.to_thread(self._store().remove, answer_id):
            raise NotFound("no such curated answer")
        detail = {"answer_id": answer_id}
        await self.hub.store.audit(caller.actor, "knowledge.answer_delete", None, detail)
        log.info("knowledge.curated_answer_removed", extra={"answer_id": answer_id})
