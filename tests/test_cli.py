"""The ``switchboard`` command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Settings
from bot.store import open_store

ROOT = Path(__file__).resolve().parents[1]


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_parse_prints_one_json_line_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"text": "Where is my order?", "user": {"id": "u7"}}))
    bad = tmp_path / "bad.json"
    bad.write_text('{"text": "no user"')
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"text": "hi", "user": {}}))
    code = main(["parse", "--data-dir", str(tmp_path), "rest", str(good), str(bad), str(schema)])
    assert code == 0
    lines = _lines(capsys.readouterr().out)
    assert [line["file"] for line in lines] == [str(good), str(bad), str(schema)]
    envelope = lines[0]["envelope"]
    assert isinstance(envelope, dict)
    assert envelope["text"] == "Where is my order?"
    assert envelope["sender"]["id"] == "u7"
    assert envelope["channel"] == "rest"
    assert "error" in lines[1]
    assert "user.id" in str(lines[2]["error"])


def test_parse_unknown_channel_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "--data-dir", str(tmp_path), "fax", str(tmp_path)]) == 2
    assert "unknown channel" in capsys.readouterr().err


def test_agents_add_stores_an_argon2_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin("correct horse battery\n"))
    args = ["agents", "add", "--data-dir", str(tmp_path), "alice", "--password-stdin"]
    assert main(args) == 0
    assert "alice" in capsys.readouterr().out

    async def check() -> str:
        store = await open_store(Settings(data_dir=tmp_path))
        try:
            account = await store.agent("alice")
        finally:
            await store.close()
        assert account is not None
        return account.password_hash

    digest = asyncio.run(check())
    assert digest.startswith("$argon2id$")
    assert "correct horse" not in digest
    # A second account with the same name is refused.
    monkeypatch.setattr(sys, "stdin", _Stdin("another password\n"))
    assert main(args) == 2


def test_agents_add_refuses_short_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin("short\n"))
    assert main(["agents", "add", "--data-dir", str(tmp_path), "bob", "--password-stdin"]) == 2


class _Stdin:
    def __init__(self, text: str) -> None:
        self.text = text

    def readline(self) -> str:
        line, _, self.text = self.text.partition("\n")
        return line + "\n"


def test_ingest_is_incremental_and_kb_eval_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text(
        "# Refunds\n\n## Asking for a refund\n\nOpen Orders, pick the order and press Refund. "
        "Refunds reach your card within five business days.\n"
    )
    (docs / "shipping.md").write_text(
        "# Shipping\n\n## Delivery times\n\nParcels ship within two days and arrive in a week.\n"
    )
    data = tmp_path / "data"
    assert main(["ingest", "--data-dir", str(data), str(docs)]) == 0
    first = capsys.readouterr().out
    assert "2 added" in first
    assert main(["ingest", "--data-dir", str(data), str(docs)]) == 0
    second = capsys.readouterr().out
    assert "0 added" in second
    assert "2 unchanged" in second

    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {
                    "question": "How long until my refund arrives?",
                    "derived_best_kb_sections": [{"doc_id": "refunds"}],
                },
                {
                    "question": "When will my parcel be delivered?",
                    "derived_best_kb_sections": [{"doc_id": "shipping"}],
                },
            ]
        )
    )
    assert main(["kb", "eval", "--data-dir", str(data), str(qa), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["questions"] == 2
    assert figures["recall@1"] == 1.0
    assert figures["MRR@10"] == 1.0


def test_ingest_missing_path_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--data-dir", str(tmp_path), str(tmp_path / "nope.md")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_chat_talks_through_the_hub(tmp_path: Path) -> None:
    env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(tmp_path), "SWITCHBOARD_LOG_LEVEL": "ERROR"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bot> " in proc.stdout


def test_db_upgrade_migrates_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    assert "revision" in capsys.readouterr().out
    assert (tmp_path / "switchboard.db").is_file()
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        check=False,
    )


def test_serve_refuses_an_open_rest_api_beyond_loopback(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "--host", "0.0.0.0", "--port", "0")
    assert proc.returncode == 2
    assert "refusing to listen on '0.0.0.0' without API keys" in proc.stderr
    assert "SWITCHBOARD_API_KEYS" in proc.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was created
    # Admin keys open the admin API only; the REST API would still be open.
    proc = _serve(tmp_path, "--host", "::", "--port", "0", SWITCHBOARD_ADMIN_API_KEYS="adm-1")
    assert proc.returncode == 2
    assert "refusing to listen on '::'" in proc.stderr


def test_serve_rejects_a_malformed_trusted_proxy(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "--port", "0", SWITCHBOARD_TRUSTED_PROXIES="10.0.0.0/8,proxy.lan")
    assert proc.returncode == 2
    assert "'proxy.lan' is not an IP address or network" in proc.stderr
