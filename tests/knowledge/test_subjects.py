"""Data-subject requests reach the knowledge base: curated answers, indexed documents, uploads.

Zofia wrote to the hub; an admin saved a curated answer from her conversation, another answer
names her, an uploaded ticket export is named after her platform id, a refund guide quotes her
address, and an interrupted ingest left an upload behind. Export lists all of it; after the
erasure no file of the answers, the index or the uploads holds any of her identifiers, while
the other material is still served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.hub import Hub
from bot.server import make_app
from bot.store.sql import SqlStore
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from knowledge import KnowledgeBase
from knowledge.answers import CuratedAnswers
from tests.channels.support import serve
from tests.knowledge.embedders import CountingEmbedder
from tests.knowledge.hubs import started_kb_hub
from tests.store.test_subjects import ZOFIA, dm, said

Client = TestClient[web.Request, web.Application]
ADMIN = {"Authorization": "Bearer admin-key-123"}
EMAIL = "zofia.w@example.org"  # ZOFIA's (tests.store.test_subjects)
SECRETS = [ZOFIA.id, EMAIL, "Zofia Wiśniewska", "4242"]
HER_DM = dm(ZOFIA)

GUIDE = f"""# Refund guide

## Who can ask for a refund

Anyone who paid for an order in the last 30 days can ask for a refund from the order page.

## Double charges

When a card is charged twice, like it happened to {EMAIL} in May, the second charge is
released by the bank within five working days. Do not ask the customer to call the bank.

## Shipping refunds

Shipping costs are refunded when the parcel arrives more than five days late.
"""
TICKET = f"# Ticket of customer {ZOFIA.id}\n\nCard ending 4242 charged twice; wants a call.\n"
HOURS = "# Opening hours\n\nThe shop opens at nine and closes at six.\n"


@pytest_asyncio.fixture
async def kb_hub(tmp_path: Path, embedder: CountingEmbedder) -> AsyncIterator[Hub]:
    settings = make_settings(tmp_path / "data", admin_api_keys=["admin-key-123"])
    async with started_kb_hub(settings, embedder, agent=ScriptedAgent()) as hub:
        yield hub


async def _upload(client: Client, files: dict[str, str]) -> None:
    form = aiohttp.FormData()
    for name, text in files.items():
        form.add_field("file", text.encode(), filename=name, content_type="text/markdown")
    resp = await client.post("/api/v1/admin/knowledge/ingest", data=form, headers=ADMIN)
    assert resp.status == 202
    for _ in range(600):
        job = (await (await client.get(resp.headers["Location"], headers=ADMIN)).json())["job"]
        if job["state"] != "running":
            assert job["state"] == "done", job
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the ingest did not finish")


async def _answer(client: Client, body: dict[str, Any]) -> str:
    resp = await client.post("/api/v1/admin/knowledge/answers", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    answer_id: str = (await resp.json())["answer"]["id"]
    return answer_id


def _files_holding(data_dir: Path, values: list[str]) -> list[str]:
    """Files of the answers, the index and the uploads whose bytes hold one of ``values``."""
    forms = [v.encode() for v in values] + [json.dumps(v)[1:-1].encode() for v in values]
    files = [data_dir / "curated_answers.jsonl"]
    for folder in ("kb-edge", "uploads"):
        files += (p for p in (data_dir / folder).rglob("*") if p.is_file())
    return sorted(
        str(p.relative_to(data_dir)) for p in files if any(f in p.read_bytes() for f in forms)
    )


async def test_export_lists_and_erase_removes_her_knowledge_base_material(
    kb_hub: Hub,
) -> None:
    store = kb_hub.store
    assert isinstance(store, SqlStore)
    data_dir = kb_hub.settings.data_dir
    msg = said(ZOFIA, HER_DM, "t1", f"My card ending 4242 was charged twice, mail me at {EMAIL}")
    await store.append_inbound(msg)
    async with serve(make_app(kb_hub)) as client:
        await _upload(client, {"refund-guide.md": GUIDE, f"ticket-{ZOFIA.id}.md": TICKET})
        await _upload(client, {"hours.md": HOURS})
        from_chat = await _answer(
            client,
            {
                "questions": [msg.text],
                "answer": "We released the second charge.",
                "session_key": HER_DM,
            },
        )
        naming = await _answer(
            client,
            {
                "questions": ["Who reported the double charge?"],
                "answer": "Zofia Wiśniewska did, in May.",
            },
        )
        other = await _answer(
            client,
            {"questions": ["When do you open?"], "answer": "At nine.", "sources": ["hours"]},
        )
        left = data_dir / "uploads" / "upload-crashed"
        left.mkdir(parents=True)
        (left / "notes.md").write_text(f"call back {EMAIL}\n")
        (left / "unrelated.md").write_text("nothing personal here\n")
        who = {"channel": "telegram", "user_id": ZOFIA.id}

        resp = await client.post("/api/v1/admin/privacy/export", json=who, headers=ADMIN)
        assert resp.status == 200
        kb_part = (await resp.json())["knowledge_base"]
        assert {(a["id"], a["match"]) for a in kb_part["curated_answers"]} == {
            (from_chat, "from_their_conversation"),
            (naming, "mentions"),
        }
        docs = {d["doc_id"]: d for d in kb_part["documents"]}
        assert set(docs) == {"refund-guide", f"ticket-{ZOFIA.id}"}
        assert [EMAIL in c["text"] for c in docs["refund-guide"]["chunks"]] == [True]
        size = (left / "notes.md").stat().st_size
        assert kb_part["uploads"] == [{"path": "upload-crashed/notes.md", "bytes": size}]
        holding = _files_holding(data_dir, [EMAIL])
        assert "curated_answers.jsonl" in holding
        assert any(f.startswith("kb-edge/") for f in holding)  # the index holds her address

        body = {**who, "confirm": True}
        resp = await client.post("/api/v1/admin/privacy/erase", json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        report = await resp.json()

    erased = report["elsewhere"]["knowledge_base"]
    assert {k: v for k, v in erased.items() if k != "items"} == {
        "curated_answers_deleted": 1,
        "curated_answers_redacted": 1,
        "documents_removed": 1,
        "documents_redacted": 1,
        "chunks_redacted": 1,
        "uploads_deleted": 1,
    }
    assert not any(s in json.dumps(erased, ensure_ascii=False) for s in SECRETS)
    # No file of the answers, the index or the uploads holds anything of hers ...
    assert _files_holding(data_dir, SECRETS) == []
    # ... while the rest is still served.
    kb = kb_hub.retriever
    assert isinstance(kb, KnowledgeBase)
    hits = await kb.search("my card was charged twice", top_k=5)
    assert "refund-guide" in {h.doc_id for h in hits}
    assert f"ticket-{ZOFIA.id}" not in {h.doc_id for h in hits}
    assert any("[erased]" in h.text for h in hits)
    assert (await kb.search("when does the shop open", top_k=1))[0].doc_id == "hours"
    answers = await CuratedAnswers.for_settings(kb_hub.settings, kb.embedder).answers()
    assert {a.id for a in answers} == {naming, other}
    assert [a.answer for a in answers if a.id == naming] == ["[erased] did, in May."]
    assert (left / "unrelated.md").exists()
    actions = [r.detail for r in await store.audit_records() if r.action == "privacy.erase"]
    assert actions[0]["elsewhere"]["knowledge_base"]["documents_removed"] == 1
