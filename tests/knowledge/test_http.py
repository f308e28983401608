"""The admin REST API of the knowledge base: ingest with progress, curated answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.compose import build_hub
from bot.hub import Hub
from bot.server import make_app
from bot.store.sql import SqlStore
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from knowledge.answers import CuratedAnswers
from tests.channels.support import serve
from tests.fakes.help_site import HelpSite
from tests.knowledge.documents import make_pdf
from tests.knowledge.embedders import CountingEmbedder
from tests.knowledge.hubs import started_kb_hub

Client = TestClient[web.Request, web.Application]
ADMIN = {"Authorization": "Bearer admin-key-123"}
PREFIX = "/api/v1/admin/knowledge"


@pytest_asyncio.fixture
async def kb_hub(tmp_path: Path, embedder: CountingEmbedder) -> AsyncIterator[Hub]:
    settings = make_settings(
        tmp_path / "data", api_keys=["channel-key-456"], admin_api_keys=["admin-key-123"]
    )
    async with started_kb_hub(settings, embedder, agent=ScriptedAgent()) as hub:
        yield hub


@pytest_asyncio.fixture
async def client(kb_hub: Hub) -> AsyncIterator[Client]:
    async with serve(make_app(kb_hub)) as c:
        yield c


async def _finished(client: Client, location: str) -> dict[str, Any]:
    for _ in range(600):
        job: dict[str, Any] = (await (await client.get(location, headers=ADMIN)).json())["job"]
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the ingest job did not finish")


async def test_admin_routes_need_an_admin_key(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer channel-key-456"}, {"Authorization": "x"}):
        resp = await client.get(f"{PREFIX}/answers", headers=headers)
        assert resp.status == 401
    # The channel key still works where it belongs, and the admin key does not open it.
    messages = "/api/v1/conversations/c1/messages"
    assert (await client.get(messages, headers=ADMIN)).status == 401


async def test_without_admin_keys_the_admin_api_is_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False, channels=[])
    async with serve(make_app(hub)) as c:
        resp = await c.get(f"{PREFIX}/answers", headers=ADMIN)
        assert resp.status == 403
        assert "SWITCHBOARD_ADMIN_API_KEYS" in (await resp.json())["error"]


async def test_upload_files_and_follow_the_job(client: Client, kb_hub: Hub) -> None:
    form = aiohttp.FormData()
    pdf = make_pdf(
        [["Paper jams", "Open the rear door (panel B) and pull the jammed sheet out."]],
        outline=[("Paper jams", 0, 1)],
        title="Printer manual",
    )
    form.add_field("file", pdf, filename="printer.pdf", content_type="application/pdf")
    form.add_field(
        "file",
        b"# Opening hours\n\nThe shop opens at nine.\n",
        filename="../../hours.md",
        content_type="text/markdown",
    )

    resp = await client.post(f"{PREFIX}/ingest", data=form, headers=ADMIN)

    assert resp.status == 202
    location = resp.headers["Location"]
    job = await _finished(client, location)
    assert job["state"] == "done", job
    assert job["report"]["documents_added"] == 2
    assert (job["done"], job["total"]) == (2, 2)
    assert job["phase"] == "embedding"
    kb = kb_hub.retriever
    assert kb is not None
    hit = (await kb.search("my printer has a paper jam", top_k=1))[0]
    assert (hit.doc_id, hit.title) == ("printer", "Printer manual")
    assert not list((kb_hub.settings.data_dir / "uploads").iterdir())  # uploads cleaned up


async def test_upload_refuses_unsupported_files(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"MZ...", filename="setup.exe")
    resp = await client.post(f"{PREFIX}/ingest", data=form, headers=ADMIN)
    assert resp.status == 400
    assert "unsupported file 'setup.exe'" in (await resp.json())["error"]


async def test_crawl_a_sitemap_through_the_api(client: Client) -> None:
    async with HelpSite() as site:
        resp = await client.post(
            f"{PREFIX}/ingest", json={"sitemaps": [site.url("/sitemap.xml")]}, headers=ADMIN
        )
        assert resp.status == 202
        job = await _finished(client, resp.headers["Location"])

    assert job["state"] == "done", job
    assert job["report"]["documents_added"] == 2
    assert {p["url"] for p in job["failed_pages"]} == {
        site.url("/help/gone"),
        site.url("/private/internal-notes"),
    }
    bad = await client.post(
        f"{PREFIX}/ingest", json={"urls": ["file:///etc/passwd"]}, headers=ADMIN
    )
    assert bad.status == 400
    unknown = await client.get(f"{PREFIX}/ingest/ing-nope", headers=ADMIN)
    assert unknown.status == 404


async def test_a_failed_crawl_is_reported_in_the_job(client: Client) -> None:
    async with HelpSite() as site:
        resp = await client.post(
            f"{PREFIX}/ingest", json={"sitemaps": [site.url("/no-sitemap.xml")]}, headers=ADMIN
        )
        job = await _finished(client, resp.headers["Location"])
    assert job["state"] == "failed"
    assert "cannot fetch the sitemap: HTTP 404" in job["error"]


async def test_curated_answers_through_the_api(
    client: Client, kb_hub: Hub, embedder: CountingEmbedder
) -> None:
    answer = {
        "questions": ["How do I reset my password?"],
        "answer": "Choose **Forgot password** on the sign-in page.",
        "sources": [{"doc_id": "kb-1042", "title": "Reset your password"}],
    }
    resp = await client.post(f"{PREFIX}/answers", json=answer, headers=ADMIN)
    assert resp.status == 201
    saved = (await resp.json())["answer"]
    assert saved["author"] == "api"

    curated = CuratedAnswers.for_settings(kb_hub.settings, embedder)
    match = await curated.match("how can I reset my password?")
    assert match is not None
    assert match.answer.id == saved["id"]

    listed = (await (await client.get(f"{PREFIX}/answers", headers=ADMIN)).json())["answers"]
    assert [a["id"] for a in listed] == [saved["id"]]
    bad = await client.post(f"{PREFIX}/answers", json={"questions": ["q?"]}, headers=ADMIN)
    assert bad.status == 400
    assert (await bad.json())["error"] == '"answer" must be a non-empty string'

    gone = await client.delete(f"{PREFIX}/answers/{saved['id']}", headers=ADMIN)
    assert gone.status == 204
    assert (await client.delete(f"{PREFIX}/answers/{saved['id']}", headers=ADMIN)).status == 404
    assert await curated.match("how can I reset my password?") is None
    # Audited with the admin API's actor (knowledge.admin), as the console's changes are.
    store = kb_hub.store
    assert isinstance(store, SqlStore)
    actions = [(r.actor, r.action, r.detail) for r in reversed(await store.audit_records())]
    assert [a for a in actions if a[1].startswith("knowledge.")] == [
        ("admin-api", "knowledge.answer_save", {"answer_id": saved["id"], "questions": 1}),
        ("admin-api", "knowledge.answer_delete", {"answer_id": saved["id"]}),
    ]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_ingest_body_must_be_json_or_multipart(client: Client, content_type: str) -> None:
    resp = await client.post(
        f"{PREFIX}/ingest", data=b"x=1", headers={**ADMIN, "Content-Type": content_type}
    )
    assert resp.status == 415
