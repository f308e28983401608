"""The ``privacy export|erase`` and ``audit verify|export`` commands, as users run them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Settings
from bot.envelope import InboundMessage, Participant, session_key
from bot.store import open_store

NORA = Participant(id="C0NORA42", name="Nora Berg", email="nora.berg@example.com")


async def _populate(data_dir: Path) -> None:
    store = await open_store(Settings(data_dir=data_dir))
    try:
        for who in (NORA, Participant(id="C0OTHER1", name="Ole Dahl")):
            key = session_key("webchat", "site", dm_peer=who.id)
            msg = InboundMessage(
                event_id=f"{who.id}-1",
                channel="webchat",
                account="site",
                session_key=key,
                sender=who,
                text=f"hello from {who.name}",
            )
            await store.append_inbound(msg)
            await store.audit("ann", "claim", key, {"from": "queue"})
    finally:
        await store.close()


def test_export_erase_and_verify_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    data = tmp_path / "data"
    asyncio.run(_populate(data))
    who = ["--channel", "webchat", "--user", NORA.id, "--data-dir", str(data)]
    out = tmp_path / "nora.json"

    assert main(["privacy", "export", *who, "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o077 == 0  # personal data: the owner's eyes only
    doc = json.loads(out.read_text())
    assert [m["text"] for m in doc["tables"]["messages"]] == ["hello from Nora Berg"]
    assert "Ole Dahl" not in out.read_text()

    capsys.readouterr()
    assert main(["privacy", "erase", *who]) == 2  # without --yes
    assert "--yes" in capsys.readouterr().err
    assert main(["privacy", "erase", "--user", NORA.id, "--yes", "--data-dir", str(data)]) == 2
    capsys.readouterr()
    assert main(["privacy", "erase", *who, "--yes"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sessions"] == 1
    assert report["audit_erased"] == 1

    assert main(["audit", "verify", "--data-dir", str(data)]) == 0
    assert "intact: 4 entries (1 erased, 0 not yet chained)" in capsys.readouterr().out
    log = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--data-dir", str(data), "--out", str(log)]) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["seq"], e["action"], e["erased"]) for e in lines] == [
        (1, "claim", True),
        (2, "claim", False),
        (3, "privacy.export", False),
        (4, "privacy.erase", False),
    ]
    assert NORA.id not in log.read_text()


def test_customer_export_and_erase_by_one_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    data = tmp_path / "data"
    asyncio.run(_populate(data))
    where = ["--data-dir", str(data)]
    capsys.readouterr()

    assert main(["customer", "export", f"webchat:{NORA.id}", *where]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["text"] for m in doc["tables"]["messages"]] == ["hello from Nora Berg"]
    assert main(["customer", "erase", "webchat", "--yes", *where]) == 2  # not CHANNEL:USER_ID
    assert "CHANNEL:USER_ID" in capsys.readouterr().err
    assert main(["customer", "erase", f"webchat:{NORA.id}", *where]) == 2  # without --yes
    assert main(["customer", "erase", f"webchat:{NORA.id}", "--yes", *where]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == 1

    assert main(["customer", "export", f"webchat:{NORA.id}", *where]) == 0
    assert "Nora" not in capsys.readouterr().out  # nothing of her is left
    assert main(["customer", "export", "webchat:C0OTHER1", *where]) == 0
    assert "hello from Ole Dahl" in capsys.readouterr().out  # the other customer is untouched
