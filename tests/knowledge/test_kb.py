from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError
from bot.retrieval import Retriever
from knowledge import RECOMMENDED_MIN_CONFIDENCE, KnowledgeBase
from knowledge import kb as kb_module
from knowledge.embed import LiteLLMEmbedder, LocalEmbedder, Vectors
from tests.knowledge.embedders import CountingEmbedder

DOCS = {
    "channels/slack.md": """# Connect Slack

Create a Slack app from the manifest, install it to your workspace and paste the bot token
and the signing secret into switchboard.yaml.

## Events

Subscribe the app to message.channels and app_mention events.
""",
    "channels/telegram.md": """# Connect Telegram

Talk to BotFather, create a bot and set SWITCHBOARD_TELEGRAM_TOKEN to its token.
""",
    "console.md": """# Human console

Agents log in at /console, claim a waiting conversation from the queue and reply.
""",
    "deploy.md": """# Deployment

Run the Docker image behind a reverse proxy; mount a volume for the data directory.
""",
}


def write_docs(root: Path, docs: dict[str, str]) -> Path:
    for name, text in docs.items():
        path = root / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "docs"


async def test_ingest_then_search_finds_the_right_page(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path, DOCS)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        seen: list[tuple[int, int, str]] = []
        report = await kb.ingest(
            [docs], base_url="https://docs.example.com/", progress=lambda *a: seen.append(a)
        )

        assert (report.documents_added, report.documents_updated) == (4, 0)
        assert report.chunks_written == 5
        assert embedder.texts == 5
        assert seen[0] == (0, 5, "")
        assert seen[-1][:2] == (5, 5)
        assert await kb.document_count() == 4

        retriever: Retriever = kb
        passages = await retriever.search("How do I connect Slack?", top_k=3)
        assert passages[0].doc_id == "channels/slack"
        assert passages[0].title == "Connect Slack"
        assert passages[0].url == "https://docs.example.com/channels/slack"
        assert passages[0].confidence >= RECOMMENDED_MIN_CONFIDENCE
        assert passages[0].score >= passages[-1].score
        assert (await kb.search("Where do agents claim conversations?"))[0].doc_id == "console"

        off_topic = await kb.search("What is the best recipe for sourdough bread?", top_k=1)
        assert off_topic[0].confidence < RECOMMENDED_MIN_CONFIDENCE
        assert await kb.search("   ") == []
    finally:
        await kb.close()


async def test_reingest_is_incremental(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path, DOCS)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        await kb.ingest([docs])
        chunks_before = await kb.index.chunk_count()
        embedded = embedder.texts

        again = await kb.ingest([docs])

        assert again.documents_unchanged == 4
        assert (again.documents_added, again.documents_updated, again.chunks_written) == (0, 0, 0)
        assert embedder.texts == embedded  # no embedding work at all
        assert await kb.index.chunk_count() == chunks_before

        # Slack's page loses its "Events" section and changes its text.
        (docs / "channels" / "slack.md").write_text(
            "# Connect Slack\n\nUse Socket Mode with an app-level token instead of webhooks.\n",
            encoding="utf-8",
        )
        changed = await kb.ingest([docs])

        assert (changed.documents_updated, changed.documents_unchanged) == (1, 3)
        assert changed.chunks_written == 1
        assert embedder.texts == embedded + 1
        assert await kb.index.chunk_count() == chunks_before - 1
        texts = [p.text for p in await kb.search("Slack app events signing secret", top_k=20)]
        assert any("Socket Mode" in t for t in texts)
        assert not any("signing secret" in t or "app_mention" in t for t in texts)
    finally:
        await kb.close()


async def test_index_persists_across_reopen(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path, DOCS)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    await kb.ingest([docs])
    await kb.close()
    assert (settings.data_dir / "kb-edge" / "knowledge" / "CURRENT").is_file()

    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        assert await kb.document_count() == 4
        report = await kb.ingest([docs])
        assert report.documents_unchanged == 4
        assert report.chunks_written == 0
    finally:
        await kb.close()


async def test_jsonl_records_ingest_and_replace(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text(
        '{"id": "refunds", "title": "Refunds", "text": "Refunds reach your card in 5 days."}\n'
        '{"id": "shipping", "title": "Shipping", "text": "Orders ship within 24 hours."}\n',
        encoding="utf-8",
    )
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        first = await kb.ingest([path])
        assert first.documents_added == 2
        path.write_text(
            '{"id": "refunds", "title": "Refunds", "text": "Refunds now take 10 days."}\n',
            encoding="utf-8",
        )
        second = await kb.ingest([path])
        assert (second.documents_updated, second.documents_added) == (1, 0)
        [best] = await kb.search("How long do refunds take?", top_k=1)
        assert best.doc_id == "refunds"
        assert best.text == "Refunds now take 10 days."
        assert second.documents_removed == 1  # "shipping" is gone from the file
        assert await kb.document_count() == 1
        assert all(p.doc_id == "refunds" for p in await kb.search("When do orders ship?"))
    finally:
        await kb.close()


async def test_a_model_with_another_dimension_is_refused(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    await kb.ingest([write_docs(tmp_path, DOCS)])
    await kb.close()
    other = LiteLLMEmbedder("openai/none")
    other._dimension = 8  # as if probed from a remote model

    with pytest.raises(ConfigError, match="size 384"):
        await KnowledgeBase.open(settings, embedder=other)


async def test_local_mode_index_is_locked_to_one_process(
    settings: Settings, embedder: CountingEmbedder
) -> None:
    local = settings.model_copy(update={"kb_index": "local"})
    kb = await KnowledgeBase.open(local, embedder=embedder)
    try:
        with pytest.raises(BackendUnavailable, match="cannot open the Qdrant index"):
            await KnowledgeBase.open(local, embedder=embedder)
    finally:
        await kb.close()


class FailingEmbedder(CountingEmbedder):
    """Fails on its second call, as a remote model going away mid-ingest would."""

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self.calls == 1:
            self.calls += 1
            raise BackendUnavailable("embedding model went away")
        return await super().embed(texts)


async def test_an_interrupted_ingest_is_completed_by_the_next(
    settings: Settings,
    local_embedder: LocalEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kb_module, "EMBED_BATCH", 2)
    docs = write_docs(tmp_path, DOCS)
    failing = FailingEmbedder(local_embedder)
    kb = await KnowledgeBase.open(settings, embedder=failing)
    try:
        with pytest.raises(BackendUnavailable, match="went away"):
            await kb.ingest([docs])
        assert await kb.document_count() == 0  # no document is marked as stored

        report = await kb.ingest([docs])

        assert report.documents_added == 4
        assert await kb.index.chunk_count() == 5  # no orphans of the first attempt
        assert (await kb.search("How do I connect Telegram?"))[0].doc_id == "channels/telegram"
    finally:
        await kb.close()


async def test_documents_gone_from_a_folder_are_pruned_and_other_sources_kept(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    docs = write_docs(tmp_path, DOCS)
    faq = tmp_path / "faq.jsonl"
    faq.write_text(
        '{"id": "refunds", "title": "Refunds", "text": "Refunds reach your card in 5 days."}\n',
        encoding="utf-8",
    )
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    try:
        await kb.ingest([docs, faq])
        (docs / "channels" / "telegram.md").unlink()

        report = await kb.ingest([docs])  # the folder alone: faq.jsonl is another source

        assert report.documents_removed == 1
        assert report.chunks_written == 0
        assert await kb.document_count() == 4
        found = {p.doc_id for p in await kb.search("Telegram BotFather token", top_k=10)}
        assert "channels/telegram" not in found
        assert "refunds" in {p.doc_id for p in await kb.search("refund card", top_k=10)}
        kept = await kb.ingest([docs], prune=False)
        assert kept.documents_removed == 0
    finally:
        await kb.close()
