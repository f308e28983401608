from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def test_redact_prints_one_line_per_record_with_input_offsets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [
        "Ça marche ? Écrivez à zoë.müller@example.de ou au +49 30 901820 — merci 🙏",
        "Card 5555 5555 5555 4444 from 10.0.0.12",
        "nothing personal here",
    ]
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    assert main(["redact", "--data-dir", str(tmp_path), str(src)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["text"] == "Ça marche ? Écrivez à <EMAIL_1> ou au <PHONE_1> — merci 🙏"
    assert [(e["type"], texts[0][e["start"] : e["end"]]) for e in first["entities"]] == [
        ("EMAIL_ADDRESS", "zoë.müller@example.de"),
        ("PHONE_NUMBER", "+49 30 901820"),
    ]
    assert set(first["entities"][0]) == {"type", "start", "end"}
    assert lines[1]["text"] == "Card <CREDIT_CARD_1> from <IP_ADDRESS_1>"
    assert lines[2] == {"text": "nothing personal here", "entities": []}


def test_redact_entities_option_and_bad_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a@example.com +1 415 555 0132"}\nnot json\n\n{"text": 3}\n')
    args = ["redact", "--data-dir", str(tmp_path), "--entities", "PHONE_NUMBER", str(src)]
    assert main(args) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["text"] == "a@example.com <PHONE_1>"
    assert lines[1]["error"].startswith("line 2: not JSON")
    assert lines[2]["error"].startswith("line 4: not an object")


def test_redact_unknown_entity_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    assert main(["redact", "--data-dir", str(tmp_path), "--entities", "SHOE_SIZE", str(src)]) == 2
    assert "SHOE_SIZE" in capsys.readouterr().err


def test_redact_runs_as_a_fresh_process_with_no_caches(tmp_path: Path) -> None:
    """A fresh install: empty HOME (no model or suffix-list cache), input on stdin."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "redact", "--data-dir", str(tmp_path), "-"],
        input='{"text": "reach me at ana@example.org"}\n',
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "text": "reach me at <EMAIL_1>",
        "entities": [{"type": "EMAIL_ADDRESS", "start": 12, "end": 27}],
    }
    assert "Public Suffix" not in run.stderr
    assert not (home / ".cache" / "python-tldextract").exists()


def test_privacy_bench_pii_prints_figures_per_entity_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], datasets: Path
) -> None:
    cases = datasets / "safety" / "presidio_pii_dev.jsonl"
    args = ["privacy", "bench", "pii", "--data-dir", str(tmp_path), "--json", str(cases)]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    for entity in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"):
        row = figures["by_type"][entity]
        assert row["records"] > 0
        assert set(row) >= {"precision", "recall"}


def test_privacy_bench_injection_prints_precision_and_recall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], datasets: Path
) -> None:
    cases = datasets / "safety" / "llm_guard_tests" / "test_prompt_injection_cases.jsonl"
    args = ["privacy", "bench", "injection", "--data-dir", str(tmp_path), "--json", str(cases)]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["injections"] + figures["benign"] == 60
    assert figures["true_positives"] + figures["false_negatives"] == figures["injections"]
