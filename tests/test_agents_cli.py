"""``switchboard agents add|list|disable|enable|set-role|reset-password``, as users run it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from bot import auth
from bot.cli import main
from bot.config import Settings
from bot.errors import Unauthorized
from bot.store import open_store
from bot.store.base import AgentRole


class _Stdin:
    def __init__(self, text: str) -> None:
        self.text = text

    def readline(self) -> str:
        line, _, self.text = self.text.partition("\n")
        return line + "\n"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


def _agents(tmp_path: Path, *args: str, stdin: str = "") -> int:
    if stdin:
        sys.stdin = _Stdin(stdin)
    return main(["agents", args[0], "--data-dir", str(tmp_path), *args[1:]])


def _login(tmp_path: Path, name: str, password: str) -> AgentRole:
    async def run() -> AgentRole:
        store = await open_store(Settings(data_dir=tmp_path))
        try:
            return (await auth.authenticate(store, name, password)).role
        finally:
            await store.close()

    return asyncio.run(run())


def test_account_lifecycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", sys.stdin)  # restored after the test
    assert _agents(tmp_path, "add", "root", "--role", "admin", "--password-stdin",
                   stdin="root password 1\n") == 0  # fmt: skip
    assert _agents(tmp_path, "add", "vic", "--role", "viewer", "--display-name", "Vic V",
                   "--password-stdin", stdin="viewer password\n") == 0  # fmt: skip
    assert _agents(tmp_path, "add", "ann", "--password-stdin", stdin="agent password\n") == 0
    capsys.readouterr()
    assert _agents(tmp_path, "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed == [
        {"name": "ann", "display_name": "ann", "role": "agent", "active": True},
        {"name": "root", "display_name": "root", "role": "admin", "active": True},
        {"name": "vic", "display_name": "Vic V", "role": "viewer", "active": True},
    ]
    assert _login(tmp_path, "vic", "viewer password") is AgentRole.VIEWER

    # The last active admin can be neither demoted nor disabled.
    assert _agents(tmp_path, "set-role", "root", "agent") == 2
    assert "last active admin" in capsys.readouterr().err
    assert _agents(tmp_path, "disable", "root") == 2
    assert _agents(tmp_path, "set-role", "ann", "admin") == 0
    assert _agents(tmp_path, "set-role", "root", "viewer") == 0
    assert _login(tmp_path, "root", "root password 1") is AgentRole.VIEWER

    # Disabled accounts cannot log in; enabling lets them again.
    assert _agents(tmp_path, "disable", "vic") == 0
    with pytest.raises(Unauthorized):
        _login(tmp_path, "vic", "viewer password")
    assert _agents(tmp_path, "enable", "vic") == 0
    assert _login(tmp_path, "vic", "viewer password") is AgentRole.VIEWER

    # A reset password replaces the old one; short ones are refused.
    assert _agents(tmp_path, "reset-password", "vic", "--password-stdin", stdin="short\n") == 2
    assert _agents(tmp_path, "reset-password", "vic", "--password-stdin",
                   stdin="a brand new one\n") == 0  # fmt: skip
    with pytest.raises(Unauthorized):
        _login(tmp_path, "vic", "viewer password")
    assert _login(tmp_path, "vic", "a brand new one") is AgentRole.VIEWER

    assert _agents(tmp_path, "set-role", "nobody", "agent") == 2
    assert _agents(tmp_path, "list") == 0
    out = capsys.readouterr().out
    assert "vic\tviewer\tactive\tVic V" in out

    async def audit_actions() -> list[tuple[str, str]]:
        store = await open_store(Settings(data_dir=tmp_path))
        try:
            records = await store.audit_records()
        finally:
            await store.close()
        return [(r.actor, r.action) for r in records]

    actions = asyncio.run(audit_actions())
    assert ("cli", "agent.create") in actions
    assert actions.count(("cli", "agent.update")) == 5
