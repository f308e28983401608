"""``switchboard doctor``'s probes of the CRM and of the MCP servers (issue 12 part B).

The composition root's ``integration_checks(settings)`` adds :func:`crm_and_mcp_checks` to the
ticket backends' checks; each probe answers a :class:`bot.tools.BackendCheck` and never raises.
"""

from __future__ import annotations

from bot.config import Settings
from bot.errors import ConfigError
from bot.tools import BackendCheck, CheckFn


def crm_and_mcp_checks(settings: Settings) -> list[CheckFn]:
    """One probe for the configured CRM (if any) and one per configured MCP server.

    Each probe builds its own client, checks reachability and authorization (CRM: a search or
    limits call with the configured token; MCP: connect, list tools, and every allow-listed
    tool exists), and closes the client.

    Returns:
        The probes, CRM first then the MCP servers in configured order; a backend whose
        settings are incomplete gets a probe that reports the configuration error.
    """
    checks: list[CheckFn] = []
    if settings.crm_backend != "none":
        checks.append(_crm_check(settings))
    checks.extend(_mcp_check(settings, i) for i in range(len(settings.mcp_servers)))
    return checks


def _crm_check(settings: Settings) -> CheckFn:
    async def check() -> BackendCheck:
        from plugins.crm.backends import open_crm

        try:
            crm = open_crm(settings)
        except ConfigError as exc:
            return BackendCheck(settings.crm_backend, False, str(exc))
        assert crm is not None
        try:
            return await crm.check()
        finally:
            await crm.close()

    return check


def _mcp_check(settings: Settings, index: int) -> CheckFn:
    server = settings.mcp_servers[index]

    async def check() -> BackendCheck:
        from plugins.mcp.connection import McpConnection

        try:
            conn = McpConnection(server)
        except ConfigError as exc:
            return BackendCheck(f"mcp:{server.name}", False, str(exc))
        try:
            return await conn.check()
        finally:
            await conn.close()

    return check
