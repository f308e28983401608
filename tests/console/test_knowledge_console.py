"""The console's Knowledge API (knowledge.console) on a real hub and server: admins ingest and
curate answers; agents and viewers are refused; changes need the CSRF token and are audited; a
saved answer is what the hub answers a paraphrase with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from openapi_spec_validator import validate

from bot import auth
from bot.compose import build_hub
from bot.envelope import session_key
from bot.hub import Hub
from bot.server import make_app
from bot.store.base import AgentRole
from bot.store.sql import SqlStore
from channels.memory.pytest_plugin import make_settings
from knowledge.embed import LocalEmbedder
from tests.channels.support import serve
from tests.console.test_console_api import PASSWORD, Client, login
from tests.knowledge.embedders import CountingEmbedder
from tests.knowledge.hubs import started_kb_hub

API = "/console/api/knowledge"
ADMIN_KEY = {"Authorization": "Bearer admin-key-123"}
RETURNS = (
    "# Returns and refunds\n\n"
    "You can return an unworn item within 30 days of delivery. Print the prepaid label from "
    "your order page, pack the item and drop it at any post office. The refund reaches your "
    "card within five working days after the parcel arrives at our warehouse.\n"
)
ANSWER = {
    "questions": ["How do I reset my password?"],
    "answer": "Choose **Forgot password** on the sign-in page.",
    "sources": [{"doc_id": "kb-1042", "title": "Reset your password"}],
}


@pytest.fixture(scope="module")
def local_embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest_asyncio.fixture
async def hub(
    tmp_path: Path, local_embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hub]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    # A small body cap: uploads bound their own size (bot.payload.bounds_own_body).
    settings = make_settings(
        tmp_path / "data", admin_api_keys=["admin-key-123"], max_body_bytes=2048
    )
    async with started_kb_hub(settings, CountingEmbedder(local_embedder)) as hub:
        await auth.add_agent(hub.store, "root", PASSWORD, "Root", role=AgentRole.ADMIN)
        await auth.add_agent(hub.store, "alice", PASSWORD, "Alice")
        await auth.add_agent(hub.store, "vic", PASSWORD, "Vic", role=AgentRole.VIEWER)
        yield hub


@pytest_asyncio.fixture
async def client(hub: Hub) -> AsyncIterator[Client]:
    async with serve(make_app(hub)) as c:
        yield c


def _csrf(token: str) -> dict[str, str]:
    return {auth.CSRF_HEADER: token}


async def _finished(client: Client, location: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(600):
        resp = await client.get(location, headers=headers)
        assert resp.status == 200, await resp.text()
        job: dict[str, Any] = (await resp.json())["job"]
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the ingest job did not finish")


async def _audit(hub: Hub, action: str) -> list[Any]:
    store = hub.store
    assert isinstance(store, SqlStore)
    return [r for r in await store.audit_records() if r.action == action]


async def _customer_asks(client: Client, conversation: str, text: str) -> dict[str, Any]:
    """Post ``text`` on the REST channel; the first answer the customer sees (long poll).

    The bot's reply, or the handoff notice when the bot found nothing to answer with.
    """
    url = f"/api/v1/conversations/{conversation}/messages"
    body = {"text": text, "user": {"id": f"cust-{conversation}", "name": "Dana Customer"}}
    resp = await client.post(url, json=body)
    assert resp.status == 202, await resp.text()
    seen = 0
    async with asyncio.timeout(20):
        while True:
            page = await client.get(url, params={"after": seen, "wait": 5})
            messages: list[dict[str, Any]] = (await page.json())["messages"] if page.ok else []
            for m in messages:
                seen = m["seq"]
                if m["role"] != "customer":
                    return m
            await asyncio.sleep(0.02)


async def test_an_admin_uploads_a_file_and_follows_the_job(client: Client, hub: Hub) -> None:
    csrf = await login(client, "root")
    form = aiohttp.FormData()
    extra = "".join(
        f"\n## Store {n}\n\nOur store number {n} is open from nine to six on weekdays.\n"
        for n in range(40)
    )
    body = (RETURNS + extra).encode()  # over max_body_bytes: an upload is not bound by it
    assert len(body) > hub.settings.max_body_bytes
    form.add_field("file", body, filename="returns.md", content_type="text/markdown")

    resp = await client.post(f"{API}/ingest", data=form, headers=_csrf(csrf))

    assert resp.status == 202, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith(f"{API}/ingest/ing-")
    job = await _finished(client, location, {})
    assert job["state"] == "done", job
    assert job["report"]["documents_added"] == 1
    assert job["report"]["chunks_written"] > 0
    assert job["done"] == job["total"] == job["report"]["chunks_written"]
    kb = hub.retriever
    assert kb is not None
    hit = (await kb.search("how long does a refund take to reach my card", top_k=1))[0]
    assert hit.doc_id == "returns"
    stats = await (await client.get(f"{API}/stats")).json()
    assert stats == {
        "documents": 1,
        "chunks": job["report"]["chunks_written"],
        "answers": 0,
        "collection": hub.settings.kb_collection,
        "writable": True,
    }
    # One implementation, two doors: the REST API follows the same job.
    rest = f"/api/v1/admin/knowledge/ingest/{job['id']}"
    assert (await (await client.get(rest, headers=ADMIN_KEY)).json())["job"] == job
    [entry] = await _audit(hub, "knowledge.ingest")
    assert (entry.actor, entry.detail["job"], entry.detail["files"]) == (
        "root",
        job["id"],
        ["returns.md"],
    )


async def test_agents_and_viewers_are_refused_every_knowledge_call(
    client: Client, hub: Hub
) -> None:
    answers_file = hub.settings.data_dir / "curated_answers.jsonl"
    for name in ("alice", "vic"):
        csrf = await login(client, name)
        calls = [
            client.get(f"{API}/stats"),
            client.get(f"{API}/answers"),
            client.get(f"{API}/ingest/ing-0000"),
            client.post(f"{API}/answers", json=ANSWER, headers=_csrf(csrf)),
            client.delete(f"{API}/answers/ca-0000", headers=_csrf(csrf)),
            client.post(f"{API}/ingest", json={"urls": ["https://x.test/"]}, headers=_csrf(csrf)),
        ]
        for call in calls:
            resp = await call
            assert resp.status == 403, (name, resp.url, await resp.text())
        await client.post("/console/api/logout", headers=_csrf(csrf), json={})
    # Signed out: 401.
    assert (await client.get(f"{API}/answers")).status == 401
    assert not answers_file.exists()
    assert await _audit(hub, "knowledge.ingest") == []


async def test_changes_need_the_csrf_token(client: Client, hub: Hub) -> None:
    csrf = await login(client, "root")
    form = aiohttp.FormData()
    form.add_field("file", RETURNS.encode(), filename="returns.md")
    for headers in ({}, _csrf("not-the-token")):
        refused = [
            await client.post(f"{API}/ingest", data=form, headers=headers),
            await client.post(
                f"{API}/ingest", json={"urls": ["https://x.test/"]}, headers=headers
            ),
            await client.post(f"{API}/answers", json=ANSWER, headers=headers),
            await client.delete(f"{API}/answers/ca-0000", headers=headers),
        ]
        assert [r.status for r in refused] == [403, 403, 403, 403]
    assert (await (await client.get(f"{API}/answers")).json())["answers"] == []
    assert await _audit(hub, "knowledge.ingest") == []
    # With the token the same upload is taken.
    assert (await client.post(f"{API}/ingest", data=form, headers=_csrf(csrf))).status == 202


async def test_a_saved_answer_is_served_to_a_paraphrase_and_audited(
    client: Client, hub: Hub
) -> None:
    first = await _customer_asks(client, "c1", "How do I reset my password?")
    assert first["text"] != ANSWER["answer"]  # nothing curated yet
    key = session_key("rest", "default", chat="c1")

    csrf = await login(client, "root")
    resp = await client.post(
        f"{API}/answers", json={**ANSWER, "conversation": key}, headers=_csrf(csrf)
    )
    assert resp.status == 201, await resp.text()
    saved = (await resp.json())["answer"]
    assert (saved["author"], saved["questions"]) == ("root", ANSWER["questions"])
    assert saved["session_key"] == key  # kept with the answer, for erasure
    listed = (await (await client.get(f"{API}/answers")).json())["answers"]
    assert [a["id"] for a in listed] == [saved["id"]]
    assert "<strong>Forgot password</strong>" in listed[0]["html"]  # rendered, sanitized
    [entry] = await _audit(hub, "knowledge.answer_save")
    assert (entry.actor, entry.session_key) == ("root", key)
    assert entry.detail == {"answer_id": saved["id"], "questions": 1}

    reply = await _customer_asks(client, "c2", "I forgot my password, what do I do?")
    assert reply["text"] == ANSWER["answer"]
    assert [c["doc_id"] for c in reply["citations"]] == ["kb-1042"]

    bad = await client.post(f"{API}/answers", json={"questions": ["q?"]}, headers=_csrf(csrf))
    assert (bad.status, (await bad.json())["error"]) == (
        400,
        '"answer" must be a non-empty string',
    )
    ghost = {**ANSWER, "conversation": "rest:default:nobody"}
    assert (await client.post(f"{API}/answers", json=ghost, headers=_csrf(csrf))).status == 404

    gone = await client.delete(f"{API}/answers/{saved['id']}", headers=_csrf(csrf))
    assert gone.status == 204
    again = await client.delete(f"{API}/answers/{saved['id']}", headers=_csrf(csrf))
    assert again.status == 404
    [removal] = await _audit(hub, "knowledge.answer_delete")
    assert (removal.actor, removal.detail) == ("root", {"answer_id": saved["id"]})
    later = await _customer_asks(client, "c3", "I forgot my password, what do I do?")
    assert later["text"] != ANSWER["answer"]


async def test_the_knowledge_calls_are_in_the_console_openapi_document(client: Client) -> None:
    # Mounted at /console (as served), the document lists every call, these included.
    doc = await (await client.get("/console/api/openapi.json")).json()
    validate(doc)
    paths = doc["paths"]
    assert "/console/api/conversations/{session_key}/claim" in paths
    assert set(paths[f"{API}/answers"]) == {"get", "post"}
    assert set(paths[f"{API}/answers/{{answer_id}}"]) == {"delete"}
    assert paths[f"{API}/ingest"]["post"]["summary"].startswith("Start an ingest")
    assert paths[f"{API}/ingest"]["post"]["security"] == [{"session": [], "csrf": []}]
    assert "get" in paths[f"{API}/ingest/{{job_id}}"]
    assert "get" in paths[f"{API}/stats"]


async def test_without_a_knowledge_base_answers_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    hub = await build_hub(settings, load_knowledge=False, channels=[])
    try:
        await auth.add_agent(hub.store, "root", PASSWORD, "Root", role=AgentRole.ADMIN)
        async with serve(make_app(hub)) as client:
            csrf = await login(client, "root")
            stats = await client.get(f"{API}/stats")
            assert stats.status == 503
            assert "no knowledge base" in (await stats.json())["error"]
            upload = await client.post(
                f"{API}/ingest", json={"urls": ["https://x.test/"]}, headers=_csrf(csrf)
            )
            assert upload.status == 503
            saved = await client.post(f"{API}/answers", json=ANSWER, headers=_csrf(csrf))
            assert saved.status == 201
    finally:
        await hub.stop(timeout_s=1.0)


async def test_erasing_the_customer_deletes_an_answer_saved_from_their_conversation(
    client: Client, hub: Hub
) -> None:
    await _customer_asks(client, "c1", "How do I reset my password?")
    key = session_key("rest", "default", chat="c1")
    csrf = await login(client, "root")
    resp = await client.post(
        f"{API}/answers", json={**ANSWER, "conversation": key}, headers=_csrf(csrf)
    )
    assert resp.status == 201, await resp.text()

    erase = await client.post(
        "/console/api/customers/erase",
        json={"id": "rest:cust-c1", "confirm": True},
        headers=_csrf(csrf),
    )

    assert erase.status == 200, await erase.text()
    assert (await (await client.get(f"{API}/answers")).json())["answers"] == []
