"""Curated answers: the store, the JSONL import and the matcher."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from knowledge.answers import AnswerStore, CuratedAnswers, parse_answer, read_answers_file
from knowledge.ingest import IngestError
from tests.knowledge.embedders import CountingEmbedder

RESET = {
    "id": "reset",
    "questions": ["How do I reset my password?"],
    "answer": "Open the sign-in page and choose **Forgot password**.",
    "sources": [{"doc_id": "kb-1042", "title": "Reset your password", "url": "https://x/1042"}],
}
SHIPPING = {
    "questions": ["Do you ship to Canada?", "Can I get a parcel delivered to Canada?"],
    "answer": "Yes: parcels to Canada take 5 to 8 days.",
    "sources": ["shipping"],
}


async def test_paraphrases_match_and_other_questions_do_not(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    store = AnswerStore(tmp_path / "answers.jsonl")
    store.upsert(
        [parse_answer(RESET, source="t"), parse_answer(SHIPPING, source="t", author="cli")]
    )
    curated = CuratedAnswers(store, embedder)

    match = await curated.match("I forgot my password, what do I do?")
    assert match is not None
    assert match.answer.id == "reset"
    assert match.similarity >= curated.min_similarity
    assert [(c.doc_id, c.title, c.url) for c in match.citations] == [
        ("kb-1042", "Reset your password", "https://x/1042")
    ]
    assert match.citations[0].score == pytest.approx(match.similarity, abs=1e-5)

    canada = await curated.match("do you deliver to canada")
    assert canada is not None
    assert canada.answer.author == "cli"
    assert canada.answer.sources[0].title == "shipping"

    for other in (
        "Do you ship to Mexico?",
        "How do I reset my PIN?",
        "What is your refund policy?",
    ):
        assert await curated.match(other) is None, other
    assert await curated.match("   ") is None


async def test_an_answer_saved_by_another_process_is_served_without_restart(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    path = tmp_path / "answers.jsonl"
    curated = CuratedAnswers(AnswerStore(path), embedder)
    assert await curated.match("How do I reset my password?") is None
    assert embedder.texts == 0  # nothing stored: no embedding at all

    AnswerStore(path).upsert([parse_answer(RESET, source="t")])  # e.g. the CLI
    match = await curated.match("how can i reset my password")
    assert match is not None
    assert match.answer.id == "reset"

    texts = embedder.texts
    await curated.match("how can i reset my password")
    assert embedder.texts == texts + 1  # only the question: stored phrasings stay embedded

    edited = {**RESET, "answer": "Use the new self-service page."}
    AnswerStore(path).upsert([parse_answer(edited, source="t")])
    again = await curated.match("how can i reset my password")
    assert again is not None
    assert again.answer.answer == "Use the new self-service page."
    assert len(await curated.answers()) == 1

    assert AnswerStore(path).remove("reset") is True
    assert AnswerStore(path).remove("reset") is False
    assert await curated.match("how can i reset my password") is None


def test_import_file_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "import.jsonl"
    path.write_text(
        json.dumps(RESET) + "\n\n" + json.dumps({"questions": ["Q?"], "answer": ""}) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(IngestError, match=r"import\.jsonl:3: \"answer\" must be a non-empty"):
        read_answers_file(path)
    path.write_text(json.dumps(SHIPPING) + "\n", encoding="utf-8")
    (answer,) = read_answers_file(path, author="cli")
    assert answer.id.startswith("ca-")
    assert answer.questions == (
        "Do you ship to Canada?",
        "Can I get a parcel delivered to Canada?",
    )
    assert answer.author == "cli"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"answer": "a"}, '"questions" must be'),
        ({"question": "q?", "answer": "a", "sources": [{"title": "t"}]}, 'needs a "doc_id"'),
        ({"question": "q?", "answer": "a", "created_at": "yesterday"}, "ISO 8601"),
        ({"question": "q?", "answer": "x" * 9000}, "over 8000 characters"),
    ],
)
def test_invalid_records_are_refused(record: dict[str, object], message: str) -> None:
    with pytest.raises(IngestError, match=message):
        parse_answer(record, source="body")


def test_command_line_add_import_list_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    data = ["--data-dir", str(tmp_path)]
    source = json.dumps({"doc_id": "kb-1042", "title": "Reset your password"})
    add = ["kb", "answers", "add", *data, "--question", "How do I reset my password?"]
    add += ["--question", "I forgot my password", "--answer", "Use Forgot password."]
    add += ["--source", source, "--source", "faq", "--id", "reset"]
    assert main(add) == 0
    assert capsys.readouterr().out.strip() == "reset"
    imported = tmp_path / "more.jsonl"
    imported.write_text(json.dumps(SHIPPING) + "\n", encoding="utf-8")
    assert main(["kb", "answers", "import", *data, str(imported)]) == 0
    assert "1 answers saved" in capsys.readouterr().out

    assert main(["kb", "answers", "list", *data, "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["questions"][0] for a in listed] == [
        "How do I reset my password?",
        "Do you ship to Canada?",
    ]
    assert listed[0]["sources"] == [
        {"doc_id": "kb-1042", "title": "Reset your password", "url": None},
        {"doc_id": "faq", "title": "faq", "url": None},
    ]
    assert listed[0]["author"] == "cli"

    assert main(["kb", "answers", "remove", *data, "reset"]) == 0
    assert main(["kb", "answers", "remove", *data, "reset"]) == 2
    imported.write_text('{"questions": ["Q?"]}\n', encoding="utf-8")
    assert main(["kb", "answers", "import", *data, str(imported)]) == 2
    assert 'more.jsonl:1: "answer" must be' in capsys.readouterr().err


class _Inner:
    def __init__(self) -> None:
        self.turns = 0

    async def respond(self, turn: Any) -> Any:
        from bot.agent import AgentReply

        self.turns += 1
        return AgentReply("from the knowledge base")


def _turn(*texts: str) -> Any:
    return SimpleNamespace(messages=[SimpleNamespace(text=t) for t in texts])


async def test_curated_first_agent_answers_before_the_inner_agent(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    from bot.envelope import TALK_TO_HUMAN
    from knowledge.answers import CuratedFirstAgent

    store = AnswerStore(tmp_path / "answers.jsonl")
    store.upsert([parse_answer(RESET, source="t")])
    inner = _Inner()
    agent = CuratedFirstAgent(inner, CuratedAnswers(store, embedder))

    reply = await agent.respond(_turn("hi", "how can I reset my password"))  # joined lines
    assert inner.turns == 0
    assert reply.text == RESET["answer"]
    assert [c.doc_id for c in reply.citations] == ["kb-1042"]
    assert reply.actions == [TALK_TO_HUMAN]
    assert reply.escalate is None

    other = await agent.respond(_turn("Where is my parcel?"))
    assert (other.text, inner.turns) == ("from the knowledge base", 1)

    (tmp_path / "answers.jsonl").write_text("not json\n", encoding="utf-8")
    assert (await agent.respond(_turn("how can I reset my password"))).text == (
        "from the knowledge base"
    )


async def test_the_hub_serves_a_saved_answer_before_its_own_agent(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    from bot.compose import build_hub
    from channels.memory.pytest_plugin import make_settings
    from knowledge import KnowledgeBase

    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    hub = await build_hub(settings, retriever=kb, channels=[])
    try:
        AnswerStore.for_settings(settings).upsert([parse_answer(RESET, source="t")])
        reply = await hub.agent.respond(_turn("I forgot my password, what do I do?"))
        assert reply.text == RESET["answer"]
        assert [c.doc_id for c in reply.citations] == ["kb-1042"]
    finally:
        # Closes the store too: a store left open is closed by the garbage collector in a
        # later test, whose event loop is gone by then (aiosqlite's worker thread fails).
        await hub.stop(timeout_s=1.0)
        await kb.close()
