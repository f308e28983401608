"""The first thing a new user does: ask the demo bot about the bundled docs, over REST.

Real pieces only: the sample knowledge base (``docs/``) ingested into a local Qdrant index with
the embedded MiniLM model, the embedded extractive agent, the SQL store, memory lanes, and the
REST channel served over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bot.compose import build_hub
from bot.config import Settings
from bot.hub import Hub
from channels.rest.plugin import RestChannel
from tests.channels.support import serve_hub

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = Settings(data_dir=tmp_path)
    hub = await build_hub(settings, channels=[RestChannel(settings)])
    ingest = hub.retriever.ingest  # type: ignore[union-attr]
    report = await ingest([DOCS])
    assert report.documents_added >= 10
    await hub.start()
    yield hub
    await hub.stop(timeout_s=2.0)


async def _ask(client: TestClient, conversation: str, text: str) -> dict:  # type: ignore[type-arg]
    url = f"/api/v1/conversations/{conversation}/messages"
    posted = await client.post(url, json={"text": text, "user": {"id": conversation}})
    assert posted.status == 202
    got = await client.get(url, params={"after": "1", "wait": "20"})
    assert got.status == 200
    body: dict = await got.json()  # type: ignore[type-arg]
    return body


@pytest.mark.timeout(180)
async def test_demo_questions_are_answered_from_the_right_page(hub: Hub) -> None:
    async with serve_hub(hub) as client:
        slack = await _ask(client, "demo-slack", "How do I connect Slack?")
        [answer] = slack["messages"]
        assert answer["role"] == "bot"
        assert answer["kind"] == "answer"
        assert answer["citations"][0]["doc_id"] == "channels/slack"
        assert "signing secret" in answer["text"].lower() or "slack" in answer["text"].lower()
        assert slack["mode"] == "bot"

        console = await _ask(client, "demo-console", "How do I create an agent account?")
        assert console["messages"][0]["citations"][0]["doc_id"] in {"console", "quickstart"}

        # Nothing in the docs answers this: the embedded agent escalates instead of guessing.
        off_topic = await _ask(client, "demo-weather", "What will the weather be in Lisbon?")
        assert off_topic["mode"] == "queued"
        assert off_topic["messages"][0]["kind"] == "handoff"
