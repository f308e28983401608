"""Admin REST API of the knowledge base: ingest with progress, curated answers.

Every route needs ``Authorization: Bearer KEY`` (RFC 6750) with a key of
``settings.admin_api_keys`` (compared in constant time, all keys every time); without any admin
key configured the routes answer 403, whatever the address. These keys are separate from the
REST channel's ``api_keys``: an integration that posts customer messages cannot change what the
bot answers.

- ``POST /api/v1/admin/knowledge/ingest``: start an ingest; answers 202 ``{"job": JOB}`` with a
  ``Location`` of the job. The body is either ``multipart/form-data`` with one or more files
  (parts named ``file``: Markdown, HTML, text, PDF, DOCX, JSONL; at most
  :data:`MAX_UPLOAD_BYTES` in all), or JSON ``{"sitemaps": [URL...], "urls": [URL...]}``. An
  uploaded file's doc id is its file name without extension, so uploading it again updates it.
- ``GET /api/v1/admin/knowledge/ingest/{job_id}``: ``{"job": JOB}``; 404 for an unknown id.
  ``JOB`` is ``{"id", "state": "running" | "done" | "failed", "phase": "fetching" | "embedding",
  "done", "total" (pages while fetching, chunks while embedding), "current", "report" (when
  done: documents_added, documents_updated, documents_unchanged, documents_empty,
  documents_removed, chunks_written, seconds), "failed_pages": [{"url", "reason"}], "error"
  (when failed), "started_at", "finished_at"}``. Jobs live in the process that runs them (the last
  :data:`KEPT_JOBS`); ingests run one at a time.
- ``GET /api/v1/admin/knowledge/answers``: ``{"answers": [ANSWER...]}``;
  ``POST .../answers`` with an answer object (see :mod:`knowledge.answers`) → 201
  ``{"answer": ANSWER}``; ``DELETE .../answers/{answer_id}`` → 204, or 404.

Errors are ``{"error": message}`` with 400, 401, 403, 404, 413, 415 or 503 (no knowledge base in
this process, or only a read-only snapshot of a local index locked by another process).
Crawling fetches the URLs an admin gives from this server: only admins can reach it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from bot.auth import require_admin_key
from bot.errors import (
    BackendUnavailable,
    NotFound,
    PayloadInvalid,
    PayloadTooLarge,
    SwitchboardError,
)
from knowledge.answers import AnswerStore, parse_answer
from knowledge.ingest import SUPPORTED_SUFFIXES, IngestError
from knowledge.kb import KnowledgeBase
from knowledge.sync import Sources, ingest_sources

if TYPE_CHECKING:
    from bot.hub import Hub

log = logging.getLogger(__name__)

PREFIX = "/api/v1/admin/knowledge"
#: Largest upload (all files of one request together), in bytes.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Finished jobs kept for status requests.
KEPT_JOBS = 50
#: Web sources one request may name.
MAX_WEB_SOURCES = 100

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class IngestJob:
    """One ingest started through the API (see the module docstring for the JSON form)."""

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
        """The job as the API returns it."""
        return asdict(self)


class AdminKnowledge:
    """The admin routes of one hub process. Mount with :func:`setup_admin`.

    Args:
        hub: the hub; its ``retriever`` must be a :class:`KnowledgeBase` for ingest routes.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.jobs: dict[str, IngestJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys = [k.get_secret_value().encode() for k in hub.settings.admin_api_keys]

    # --- helpers --------------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        require_admin_key(request, self._keys)

    def _kb(self) -> KnowledgeBase:
        kb = self.hub.retriever
        if not isinstance(kb, KnowledgeBase):
            raise BackendUnavailable("this process has no knowledge base")
        if kb.settings.qdrant_url is None and kb.settings.data_dir != self.hub.settings.data_dir:
            raise BackendUnavailable(
                "this process reads a snapshot of a local index another process holds: ingest "
                "through that process, or use a Qdrant server (qdrant_url)"
            )
        return kb

    async def _json(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json")
        limit = self.hub.settings.max_body_bytes
        raw = await request.content.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", limit_bytes=limit)
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise PayloadInvalid(f"malformed JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PayloadInvalid("the body must be a JSON object")
        return data

    async def _uploads(self, request: web.Request, folder: Path) -> list[Path]:
        """Stream the ``file`` parts of a multipart body into ``folder``."""
        reader = await request.multipart()
        saved: list[Path] = []
        size = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name != "file":
                continue
            name = _SAFE_NAME.sub("_", Path(part.filename or "").name).lstrip(".")
            if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                raise PayloadInvalid(
                    f"unsupported file {part.filename!r} (supported: "
                    f"{', '.join(sorted(SUPPORTED_SUFFIXES))})",
                    field="file",
                )
            target = folder / name
            with target.open("wb") as out:
                while chunk := await part.read_chunk(256 * 1024):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise PayloadTooLarge(
                            f"the upload is over {MAX_UPLOAD_BYTES} bytes",
                            limit_bytes=MAX_UPLOAD_BYTES,
                        )
                    out.write(chunk)
            saved.append(target)
        if not saved:
            raise PayloadInvalid("send at least one part named file", field="file")
        return saved

    # --- ingest ---------------------------------------------------------------------------

    async def start_ingest(self, request: web.Request) -> web.Response:
        """``POST .../ingest``: files (multipart) or web sources (JSON) → 202 and the job."""
        self._authorize(request)
        kb = self._kb()
        folder: Path | None = None
        if request.content_type == "multipart/form-data":
            folder = Path(tempfile.mkdtemp(prefix="upload-", dir=_uploads_root(kb)))
            try:
                await self._uploads(request, folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            sources = Sources(paths=(folder,))
        else:
            data = await self._json(request)
            sitemaps, urls = _urls(data, "sitemaps"), _urls(data, "urls")
            if not sitemaps and not urls:
                raise PayloadInvalid("name sitemaps or urls (or upload files)", field="sitemaps")
            sources = Sources(sitemaps=tuple(sitemaps), urls=tuple(urls))
        job = IngestJob(
            id=f"ing-{secrets.token_hex(8)}", phase="fetching" if sources.web else "embedding"
        )
        self.jobs[job.id] = job
        self._forget_old_jobs()
        task = asyncio.create_task(self._run(job, kb, sources, folder))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("knowledge.api_ingest_started", extra={"job": job.id})
        return web.json_response(
            {"job": job.to_json()},
            status=202,
            headers={"Location": f"{PREFIX}/ingest/{job.id}"},
        )

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
            log.warning("knowledge.api_ingest_failed", extra={"job": job.id, "error": str(exc)})
        except Exception as exc:  # the job's boundary: report, never crash the server
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
            log.exception("knowledge.api_ingest_crashed", extra={"job": job.id})
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

    async def ingest_status(self, request: web.Request) -> web.Response:
        """``GET .../ingest/{job_id}``: the job."""
        self._authorize(request)
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            raise NotFound("no such ingest job in this process")
        return web.json_response({"job": job.to_json()})

    # --- curated answers ------------------------------------------------------------------

    def _store(self) -> AnswerStore:
        return AnswerStore.for_settings(self.hub.settings)

    async def list_answers(self, request: web.Request) -> web.Response:
        """``GET .../answers``: every stored answer."""
        self._authorize(request)
        answers = await asyncio.to_thread(self._store().load)
        return web.json_response({"answers": [a.to_json() for a in answers]})

    async def add_answer(self, request: web.Request) -> web.Response:
        """``POST .../answers``: save one answer (an ``id`` of a stored one replaces it)."""
        self._authorize(request)
        data = await self._json(request)
        try:
            answer = parse_answer(data, source="body", author="api")
        except IngestError as exc:
            raise PayloadInvalid(str(exc).removeprefix("body: ")) from exc
        await asyncio.to_thread(self._store().upsert, [answer])
        log.info("knowledge.curated_answer_saved", extra={"answer_id": answer.id})
        return web.json_response({"answer": answer.to_json()}, status=201)

    async def remove_answer(self, request: web.Request) -> web.Response:
        """``DELETE .../answers/{answer_id}``."""
        self._authorize(request)
        if not await asyncio.to_thread(self._store().remove, request.match_info["answer_id"]):
            raise NotFound("no such curated answer")
        return web.Response(status=204)

    async def close(self, app: web.Application) -> None:
        """Cancel running ingests (server shutdown)."""
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _uploads_root(kb: KnowledgeBase) -> Path:
    root = kb.settings.data_dir / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _urls(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name) or []
    if not isinstance(value, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in value
    ):
        raise PayloadInvalid(f"{name} must be a list of http(s) URLs", field=name)
    if len(value) > MAX_WEB_SOURCES:
        raise PayloadInvalid(f"at most {MAX_WEB_SOURCES} {name} per request", field=name)
    return value


def setup_admin(app: web.Application, hub: Hub) -> AdminKnowledge:
    """Add the admin knowledge routes to the server's application (before it starts).

    The server's API-key middleware and body cap leave ``/api/v1/admin/`` to these handlers,
    which check admin keys and body sizes themselves.
    """
    admin = AdminKnowledge(hub)
    app.add_routes(
        [
            web.post(f"{PREFIX}/ingest", admin.start_ingest),
            web.get(f"{PREFIX}/ingest/{{job_id}}", admin.ingest_status),
            web.get(f"{PREFIX}/answers", admin.list_answers),
            web.post(f"{PREFIX}/answers", admin.add_answer),
            web.delete(f"{PREFIX}/answers/{{answer_id}}", admin.remove_answer),
        ]
    )
    app.on_shutdown.append(admin.close)
    return admin
