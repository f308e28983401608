"""``switchboard doctor`` against the fake Zendesk and Jira: ok, a bad token, a missing setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import build_parser, main
from bot.config import Settings
from bot.doctor_cli import run
from tests.fakes.jira_api import FakeJira
from tests.fakes.zendesk_api import FakeZendesk
from tests.plugins.ticketing.test_contract import jira_settings, zendesk_settings


async def _doctor(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = await run(build_parser().parse_args(["doctor", "--json"]), settings)
    return code, json.loads(capsys.readouterr().out)


async def test_doctor_reports_each_configured_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeZendesk() as zd, FakeJira() as jira:
        code, report = await _doctor(zendesk_settings(zd, tmp_path), capsys)
        assert code == 0
        [check] = report["checks"]
        assert (check["name"], check["ok"]) == ("zendesk", True)
        assert zd.calls("GET", "/api/v2/users/me.json")

        code, report = await _doctor(jira_settings(jira, tmp_path), capsys)
        assert code == 0
        assert report["checks"][0]["ok"] is True
        assert jira.calls("GET", "/rest/api/2/myself")
        assert jira.calls("GET", f"/rest/servicedeskapi/servicedesk/{jira.desk_id}")

        # A wrong token: not authorized, exit 1, and the token is never printed.
        bad = zendesk_settings(zd, tmp_path)  # the token Zendesk is about to revoke
        zd.token = "rotated-token"
        code, report = await _doctor(bad, capsys)
        assert code == 1
        assert report["checks"][0]["ok"] is False
        assert "401" in report["checks"][0]["detail"]
        assert "zd-token" not in json.dumps(report)

        jira.token = "rotated-token"
        code, report = await _doctor(jira_settings(jira, tmp_path), capsys)
        assert code == 0  # the settings carry the new token: still authorized
        wrong = jira_settings(jira, tmp_path, jira_service_desk_id="99")
        code, report = await _doctor(wrong, capsys)
        assert code == 1
        assert "jira_service_desk_id" in report["checks"][0]["detail"]

    # The product is gone: unreachable.
    code, report = await _doctor(zendesk_settings(zd, tmp_path), capsys)
    assert code == 1
    assert "unreachable" in report["checks"][0]["detail"]


async def test_doctor_with_missing_settings_and_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = await _doctor(
        Settings(data_dir=tmp_path, ticket_backend="jira", jira_url="http://127.0.0.1:9"), capsys
    )
    assert code == 1
    assert "jira_api_token" in report["checks"][0]["detail"]
    code = await run(build_parser().parse_args(["doctor"]), Settings(data_dir=tmp_path))
    assert code == 0
    assert "no external system" in capsys.readouterr().out


def test_the_doctor_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["doctor", "--data-dir", str(tmp_path)]) == 0
    assert "no external system" in capsys.readouterr().out
    monkeypatch.setenv("SWITCHBOARD_TICKET_BACKEND", "zendesk")
    monkeypatch.setenv("SWITCHBOARD_ZENDESK_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("SWITCHBOARD_ZENDESK_EMAIL", "bot@example.com")
    monkeypatch.setenv("SWITCHBOARD_ZENDESK_API_TOKEN", "s3cret-token")
    assert main(["doctor", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  zendesk")
    assert "unreachable" in out
    assert "s3cret-token" not in out
