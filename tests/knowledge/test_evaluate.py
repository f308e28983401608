from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.__main__ import main
from knowledge.evaluate import Question, load_questions, score
from knowledge.ingest import IngestError


def test_metrics_on_a_hand_checked_case() -> None:
    questions = [
        Question("q1", frozenset({"a"})),  # first relevant at rank 1
        Question("q2", frozenset({"c", "z"})),  # rank 3 (repeats of "b" collapse)
        Question("q3", frozenset({"e"})),  # rank 5
        Question("q4", frozenset({"k"})),  # rank 11: beyond MRR@10
    ]
    rankings = [
        ["a", "b"],
        ["b", "b", "d", "c", "z"],
        ["a", "b", "c", "d", "e"],
        [str(i) for i in range(10)] + ["k"],
    ]

    report = score(rankings, questions)

    assert report.questions == 4
    assert report.recall_at_1 == pytest.approx(1 / 4)
    assert report.recall_at_3 == pytest.approx(2 / 4)
    assert report.recall_at_5 == pytest.approx(3 / 4)
    assert report.mrr_at_10 == pytest.approx((1 + 1 / 3 + 1 / 5 + 0) / 4)


def test_score_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 rankings for 1 questions"):
        score([["a"], ["b"]], [Question("q", frozenset({"a"}))])


def test_load_galaxy_questions(galaxy: Path) -> None:
    questions = load_questions(galaxy / "qa.jsonl")

    assert len(questions) == 50
    assert questions[0].question.startswith("What are the advanced recording options")
    # Strict gold: only section 145 holds >= 0.8 of the answer (144: 0.51, 361: 0.429).
    assert questions[0].relevant == {"galaxy_s10:section_145"}
    assert sum(len(q.relevant) for q in questions) == 56


def test_load_questions_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"question": "ok?", "derived_best_kb_sections": [{"doc_id": "a"}]}\n'
        '{"question": "no answer", "derived_best_kb_sections": []}\n',
        encoding="utf-8",
    )
    with pytest.raises(IngestError, match=r"qa\.jsonl:2: record names no relevant doc_id"):
        load_questions(path)


def test_strict_gold_keeps_sections_holding_most_of_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    sections = [
        {"doc_id": "a", "answer_token_recall": 0.95},
        {"doc_id": "b", "answer_token_recall": 0.8},
        {"doc_id": "c", "answer_token_recall": 0.79},
    ]
    weak = [{"doc_id": "d", "answer_token_recall": 0.5}]
    path.write_text(
        json.dumps({"question": "q?", "derived_best_kb_sections": sections})
        + "\n"
        + json.dumps({"question": "weak?", "derived_best_kb_sections": weak})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(IngestError, match=r"qa\.jsonl:2: .*answer_token_recall >= 0\.8"):
        load_questions(path)
    path.write_text(path.read_text().splitlines()[0] + "\n", encoding="utf-8")

    assert load_questions(path)[0].relevant == {"a", "b"}


def test_command_line_ingests_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kb = tmp_path / "kb.jsonl"
    kb.write_text(
        '{"id": "wifi", "title": "Wi-Fi", "text": "Turn on Wi-Fi from the quick settings."}\n'
        '{"id": "battery", "title": "Battery", "text": "Power saving extends battery life."}\n',
        encoding="utf-8",
    )
    qa = tmp_path / "qa.jsonl"
    question = {
        "question": "How can I save battery?",
        "derived_best_kb_sections": [{"doc_id": "battery"}],
    }
    qa.write_text(json.dumps(question) + "\n", encoding="utf-8")

    assert main(["--data-dir", str(tmp_path / "data"), "--ingest", str(kb), str(qa)]) == 0

    ingest_line, eval_line = capsys.readouterr().out.splitlines()
    assert json.loads(ingest_line)["ingest"]["documents_added"] == 2
    result = json.loads(eval_line)["eval"]
    assert result["questions"] == 1
    assert result["recall_at_1"] == 1.0
    assert result["mrr_at_10"] == 1.0
