"""``switchboard teams ...`` and ``switchboard sla ...``, as users run them."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from bot import auth
from bot.cli import main


def _run(tmp_path: Path, *args: str) -> int:
    return main([args[0], args[1], "--data-dir", str(tmp_path), *args[2:]])


def test_teams_and_sla_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    monkeypatch.setattr(sys, "stdin", io.StringIO("agent password\n"))
    assert main(["agents", "add", "ann", "--data-dir", str(tmp_path), "--password-stdin"]) == 0
    capsys.readouterr()
    assert (
        _run(
            tmp_path,
            "teams",
            "add",
            "billing",
            "--channel",
            "email",
            "--topic",
            "refund",
            "--member",
            "ghost",
        )
        == 2
    )
    assert "no agent 'ghost'" in capsys.readouterr().err
    assert (
        _run(tmp_path, "teams", "add", "billing", "--channel", "email", "--topic", "refund") == 0
    )
    assert _run(tmp_path, "teams", "add", "billing") == 2  # taken
    assert _run(tmp_path, "teams", "add", "Bad Name") == 2
    assert _run(tmp_path, "teams", "set", "billing", "--display-name", "Billing desk") == 0
    assert _run(tmp_path, "teams", "capacity", "ann", "2") == 0
    capsys.readouterr()
    assert _run(tmp_path, "teams", "list", "--json") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "name": "billing",
        "display_name": "Billing desk",
        "channels": ["email"],
        "topics": ["refund"],
        "members": [],
    }
    assert _run(tmp_path, "teams", "set", "billing", "--member", "ann") == 0
    capsys.readouterr()
    assert _run(tmp_path, "teams", "list") == 0
    assert "members=ann" in capsys.readouterr().out
    assert _run(tmp_path, "teams", "capacity", "nobody", "3") == 2
    assert _run(tmp_path, "teams", "capacity", "ann", "lots") == 2

    hours = tmp_path / "hours.json"
    hours.write_text(json.dumps({"timezone": "Europe/Paris", "hours": {"mon": "09:00-17:00"}}))
    assert (
        _run(
            tmp_path,
            "sla",
            "add",
            "gold",
            "--first-response",
            "600",
            "--resolution",
            "7200",
            "--team",
            "billing",
            "--priority",
            "high",
            "--escalate-to",
            "urgent",
            "--business-hours",
            str(hours),
        )
        == 0
    )
    assert _run(tmp_path, "sla", "add", "bad", "--first-response", "0", "--resolution", "1") == 2
    assert (
        _run(
            tmp_path,
            "sla",
            "add",
            "x",
            "--first-response",
            "1",
            "--resolution",
            "1",
            "--team",
            "nope",
        )
        == 2
    )
    capsys.readouterr()
    assert _run(tmp_path, "sla", "list", "--json") == 0
    [policy] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (policy["name"], policy["team"], policy["priority"], policy["escalate_to"]) == (
        "gold",
        "billing",
        "high",
        "urgent",
    )
    assert policy["business_hours"]["hours"] == {"mon": "09:00-17:00"}
    assert _run(tmp_path, "sla", "remove", "gold") == 0
    assert _run(tmp_path, "sla", "remove", "gold") == 2
    assert _run(tmp_path, "teams", "remove", "billing") == 0
    assert _run(tmp_path, "teams", "remove", "billing") == 2
