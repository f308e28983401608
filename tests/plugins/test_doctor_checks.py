"""``crm_and_mcp_checks``: the doctor's probes of the CRM and the MCP servers, against fakes.

The MCP server here runs on Streamable HTTP behind a bearer token (a subprocess started and
stopped by PID), so the probe also covers the gateway's HTTP transport.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.config import McpServer, Settings
from plugins.doctor_checks import crm_and_mcp_checks
from plugins.mcp.gateway import McpGateway
from tests.fakes.hubspot_api import FakeHubSpot
from tests.fakes.redis_server import free_port
from tests.fakes.tickets import MemoryTickets
from tests.plugins.crm.contract import ALICE, ctx_for
from tests.plugins.mcp.test_gateway import calls

ROOT = Path(__file__).resolve().parents[2]
MCP_TOKEN = "mcp-test-token"


@pytest.fixture
def mcp_log(tmp_path: Path) -> Path:
    return tmp_path / "mcp.jsonl"


@pytest.fixture
def mcp_http(mcp_log: Path) -> Iterator[str]:
    """The fake MCP server on Streamable HTTP; yields its endpoint URL."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "FAKE_MCP_TOKEN": MCP_TOKEN,
        "FAKE_MCP_LOG": str(mcp_log),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mcp_server", "--http", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake MCP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def mcp_entry(url: str, token: str, allow: list[str], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "http",
        "url": url,
        "headers": {"Authorization": f"Bearer {token}"},
        "allow_tools": allow,
        "timeout_s": 10.0,
    }


async def test_checks_report_ok_bad_token_and_missing_tools(mcp_http: str) -> None:
    async with FakeHubSpot() as hubspot:
        settings = Settings.model_validate(
            {
                "crm_backend": "hubspot",
                "hubspot_access_token": hubspot.token,
                "hubspot_api_url": hubspot.base_url,
                "mcp_servers": [
                    mcp_entry(mcp_http, MCP_TOKEN, ["order_status"], "good"),
                    mcp_entry(mcp_http, "wrong-token", ["order_status"], "badtoken"),
                    mcp_entry(mcp_http, MCP_TOKEN, ["order_status", "teleport"], "missing"),
                ],
            }
        )
        results = await asyncio.gather(*(check() for check in crm_and_mcp_checks(settings)))
        by_name = {r.name: r for r in results}
        assert list(by_name) == ["hubspot", "mcp:good", "mcp:badtoken", "mcp:missing"]
        assert by_name["hubspot"].ok
        assert by_name["mcp:good"].ok, by_name["mcp:good"].detail
        assert "1 allow-listed" in by_name["mcp:good"].detail
        assert not by_name["mcp:badtoken"].ok, by_name["mcp:badtoken"].detail
        assert "HTTP 401" in by_name["mcp:badtoken"].detail
        assert "wrong-token" not in by_name["mcp:badtoken"].detail
        assert not by_name["mcp:missing"].ok
        assert "teleport" in by_name["mcp:missing"].detail

        bad = settings.model_copy(
            update={"hubspot_access_token": SecretStr("pat-na1-wrong"), "mcp_servers": []}
        )
        [refused] = [await check() for check in crm_and_mcp_checks(bad)]
        assert not refused.ok
        assert "401" in refused.detail
        assert "pat-na1-wrong" not in refused.detail


async def test_a_tool_call_over_streamable_http_carries_the_identity(
    mcp_http: str, mcp_log: Path
) -> None:
    server = McpServer.model_validate(mcp_entry(mcp_http, MCP_TOKEN, ["order_status"], "web"))
    gateway = McpGateway([server])
    await gateway.start()
    try:
        [tool] = gateway.tools()
        result = await tool(
            tool.args_model.model_validate({"order_id": "B2"}),
            ctx_for(ALICE, None, MemoryTickets()),
        )
    finally:
        await gateway.close()
    assert "Order B2 for U-alice" in result.content["output"]
    [call] = calls(mcp_log)
    assert call["customer"]["email"] == "alice@example.com"
    assert call["customer"]["verified"] is True


async def test_incomplete_settings_are_reported_not_raised() -> None:
    settings = Settings.model_validate(
        {
            "crm_backend": "salesforce",
            "mcp_servers": [{"name": "nocmd", "allow_tools": ["x"]}],
        }
    )
    results = [await check() for check in crm_and_mcp_checks(settings)]
    assert [(r.name, r.ok) for r in results] == [("salesforce", False), ("mcp:nocmd", False)]
    assert "SALESFORCE_INSTANCE_URL" in results[0].detail
    assert "needs a command" in results[1].detail
