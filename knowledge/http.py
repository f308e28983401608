"""HTTP routes of the knowledge base's admin operations, and the admin REST API that serves them.

:class:`KnowledgeRoutes` is the one implementation of the routes; each door gives it its own
authentication: the admin REST API here (:func:`setup_admin`, under :data:`PREFIX`) and the
console's Knowledge page (:mod:`knowledge.console`, under ``/console/api/knowledge``). Both act
on the hub's one :class:`knowledge.admin.KnowledgeAdmin`, which audits every change.

REST API: every route needs ``Authorization: Bearer KEY`` (RFC 6750) with a key of
``settings.admin_api_keys`` (compared in constant time, all keys every time); without any admin
key configured the routes answer 403, whatever the address. These keys are separate from the
REST channel's ``api_keys``: an integration that posts customer messages cannot change what the
bot answers. Its audit-log actor is ``admin-api``.

Routes, relative to the prefix:

- ``POST /ingest``: start an ingest; answers 202 ``{"job": JOB}`` with a ``Location`` of the
  job. The body is either ``multipart/form-data`` with one or more files (parts named ``file``:
  Markdown, HTML, text, PDF, DOCX, JSONL; at most :data:`MAX_UPLOAD_BYTES` in all), or JSON
  ``{"sitemaps": [URL...], "urls": [URL...]}``. An uploaded file's doc id is its file name
  without extension, so uploading it again updates it.
- ``GET /ingest/{job_id}``: ``{"job": JOB}``; 404 for an unknown id. ``JOB`` is ``{"id",
  "state": "running" | "done" | "failed", "phase": "fetching" | "embedding", "done", "total"
  (pages while fetching, chunks while embedding), "current", "report" (when done:
  documents_added, documents_updated, documents_unchanged, documents_empty, documents_removed,
  chunks_written, seconds), "failed_pages": [{"url", "reason"}], "error" (when failed),
  "started_at", "finished_at"}``. Jobs live in the process that runs them (the last
  :data:`knowledge.admin.KEPT_JOBS`); ingests run one at a time.
- ``GET /stats``: ``{"documents", "chunks", "answers", "collection", "writable"}``.
- ``GET /answers``: ``{"answers": [ANSWER...]}``; ``POST /answers`` with an answer object (see
  :mod:`knowledge.answers`; ``"conversation": SESSION_KEY`` names the conversation it was taken
  from, for the audit log) → 201 ``{"answer": ANSWER}``; ``DELETE /answers/{answer_id}`` → 204,
  or 404.

Errors are ``{"error": message}`` with 400, 401, 403, 404, 413, 415 or 503 (no knowledge base in
this process, or only a read-only snapshot of a local index locked by another process).
Crawling fetches the URLs an admin gives from this server: only admins can reach it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from bot.auth import require_admin_key
from bot.desk.markdown import render_markdown
from bot.envelope import SessionKey
from bot.errors import PayloadInvalid, PayloadTooLarge
from bot.payload import bounds_own_body
from knowledge.admin import AdminHub, Caller, KnowledgeAdmin
from knowledge.answers import parse_answer
from knowledge.ingest import SUPPORTED_SUFFIXES, IngestError
from knowledge.sync import Sources

PREFIX = "/api/v1/admin/knowledge"
#: Largest upload (all files of one request together), in bytes.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Web sources one request may name.
MAX_WEB_SOURCES = 100
#: Who the REST API's callers are in the audit log and as answers' author.
API_CALLER = Caller(actor="admin-api", author="api")

Authorize = Callable[[web.Request], Awaitable[Caller]]
"""Checks a request's credentials and names its caller; raises ``bot.errors`` types."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class KnowledgeRoutes:
    """The knowledge admin routes behind one door (see the module docstring).

    Args:
        admin: the hub's admin operations.
        authorize: the door's check; every handler calls it first.
        location: the routes' prefix as clients see it (``Location`` of a job).
        max_body_bytes: the largest JSON body.
    """

    def __init__(
        self, admin: KnowledgeAdmin, authorize: Authorize, *, location: str, max_body_bytes: int
    ) -> None:
        self.admin = admin
        self._authorize = authorize
        self._location = location
        self._max_body_bytes = max_body_bytes

    def table(self, prefix: str) -> list[web.RouteDef]:
        """The routes under ``prefix`` (as the application they are added to sees it)."""
        return [
            web.post(f"{prefix}/ingest", self.start_ingest),
            web.get(f"{prefix}/ingest/{{job_id}}", self.ingest_status),
            web.get(f"{prefix}/stats", self.stats),
            web.get(f"{prefix}/answers", self.list_answers),
            web.post(f"{prefix}/answers", self.add_answer),
            web.delete(f"{prefix}/answers/{{answer_id}}", self.remove_answer),
        ]

    # --- bodies ---------------------------------------------------------------------------

    async def _json(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise PayloadInvalid("send application/json", field="content-type", status=415)
        limit = self._max_body_bytes
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

    async def _uploads(self, request: web.Request, folder: Path) -> list[str]:
        """Stream the ``file`` parts of a multipart body into ``folder``; their names."""
        reader = await request.multipart()
        saved: list[str] = []
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
            with (folder / name).open("wb") as out:
                while chunk := await part.read_chunk(256 * 1024):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise PayloadTooLarge(
                            f"the upload is over {MAX_UPLOAD_BYTES} bytes",
                            limit_bytes=MAX_UPLOAD_BYTES,
                        )
                    out.write(chunk)
            saved.append(name)
        if not saved:
            raise PayloadInvalid("send at least one part named file", field="file")
        return saved

    # --- handlers -------------------------------------------------------------------------

    @bounds_own_body
    async def start_ingest(self, request: web.Request) -> web.Response:
        """Start an ingest of uploaded files or web pages: 202 and the job.

        Multipart parts named ``file`` (Markdown, HTML, text, PDF, DOCX, JSONL; 64 MiB in all),
        or JSON ``{"sitemaps": [URL...], "urls": [URL...]}``. Answers ``{"job": JOB}`` with
        the job's ``Location``; follow it with ``GET .../ingest/{job_id}``.
        """
        caller = await self._authorize(request)
        folder: Path | None = None
        files: list[str] = []
        if request.content_type == "multipart/form-data":
            folder = self.admin.upload_folder()
            try:
                files = await self._uploads(request, folder)
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
        job = await self.admin.start_ingest(sources, caller, folder=folder, files=files)
        return web.json_response(
            {"job": job.to_json()},
            status=202,
            headers={"Location": f"{self._location}/ingest/{job.id}"},
        )

    async def ingest_status(self, request: web.Request) -> web.Response:
        """An ingest job's progress and, once done, its report.

        ``{"job": {"id", "state", "phase", "done", "total", "current", "report",
        "failed_pages", "error", "started_at", "finished_at"}}``; 404 for an unknown job.
        """
        await self._authorize(request)
        return web.json_response({"job": self.admin.job(request.match_info["job_id"]).to_json()})

    async def stats(self, request: web.Request) -> web.Response:
        """The knowledge base's documents, chunks and curated answers.

        ``{"documents", "chunks", "answers", "collection", "writable"}``; 503 when this process
        has no knowledge base.
        """
        await self._authorize(request)
        return web.json_response(await self.admin.stats())

    async def list_answers(self, request: web.Request) -> web.Response:
        """Every curated answer: ``{"answers": [{"id", "questions", "answer", "html"...}]}``.

        ``html`` is the answer's Markdown rendered and sanitized
        (:func:`bot.desk.markdown.render_markdown`), as the console shows it.
        """
        await self._authorize(request)
        answers = await self.admin.answers()
        return web.json_response(
            {"answers": [{**a.to_json(), "html": render_markdown(a.answer)} for a in answers]}
        )

    async def add_answer(self, request: web.Request) -> web.Response:
        """Save a curated answer (an ``id`` of a stored one replaces it): 201 and the answer.

        ``{"questions": [TEXT...], "answer": TEXT, "sources"?: [{"doc_id", "title"?, "url"?}],
        "conversation"?: SESSION_KEY}``; ``conversation`` names the conversation it was taken
        from (kept as the answer's ``session_key`` and in the audit log: erasing that customer
        deletes the answer).
        """
        caller = await self._authorize(request)
        data = await self._json(request)
        conversation = data.pop("conversation", None)
        if conversation is not None and (not isinstance(conversation, str) or not conversation):
            raise PayloadInvalid("conversation must be a session key", field="conversation")
        try:
            answer = parse_answer(data, source="body", author=caller.author)
        except IngestError as exc:
            raise PayloadInvalid(str(exc).removeprefix("body: ")) from exc
        key = SessionKey(conversation) if conversation else None
        saved = await self.admin.save_answer(answer, caller, conversation=key)
        return web.json_response({"answer": saved.to_json()}, status=201)

    async def remove_answer(self, request: web.Request) -> web.Response:
        """Delete a curated answer: 204, or 404 when there is none."""
        caller = await self._authorize(request)
        await self.admin.remove_answer(request.match_info["answer_id"], caller)
        return web.Response(status=204)


def _urls(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name) or []
    if not isinstance(value, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in value
    ):
        raise PayloadInvalid(f"{name} must be a list of http(s) URLs", field=name)
    if len(value) > MAX_WEB_SOURCES:
        raise PayloadInvalid(f"at most {MAX_WEB_SOURCES} {name} per request", field=name)
    return value


def setup_admin(app: web.Application, hub: AdminHub) -> KnowledgeRoutes:
    """Add the admin REST API's knowledge routes to the server's application (before it starts).

    The server's API-key middleware and body cap leave ``/api/v1/admin/`` to these handlers,
    which check admin keys and body sizes themselves.
    """
    keys = [k.get_secret_value().encode() for k in hub.settings.admin_api_keys]

    async def authorize(request: web.Request) -> Caller:
        require_admin_key(request, keys)
        return API_CALLER

    admin = KnowledgeAdmin.of(hub)
    routes = KnowledgeRoutes(
        admin, authorize, location=PREFIX, max_body_bytes=hub.settings.max_body_bytes
    )
    app.add_routes(routes.table(PREFIX))
    app.on_shutdown.append(admin.close)
    return routes
