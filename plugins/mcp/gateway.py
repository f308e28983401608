"""The MCP tool gateway: connects the configured servers and offers their allow-listed tools.

Only tools named in a server's ``allow_tools`` are ever offered to the model; any other tool
the server lists is ignored (logged once as ``mcp.tool_not_allowed`` with its name). A server
that cannot be reached at start is skipped (``mcp.server_unavailable``): the hub runs without
its tools, and ``switchboard doctor`` reports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bot.config import McpServer
from bot.errors import BackendUnavailable
from bot.tools import CheckFn, Tool
from plugins.mcp.connection import McpConnection
from plugins.mcp.tools import mcp_tool

log = logging.getLogger(__name__)


class McpGateway:
    """The configured MCP servers' connections and their allowed tools.

    Args:
        servers: ``settings.mcp_servers``.

    Raises:
        bot.errors.ConfigError: a server's settings are incomplete.
    """

    def __init__(self, servers: Sequence[McpServer]) -> None:
        self.connections = [McpConnection(s) for s in servers]

    async def start(self) -> None:
        """Connect every server at once; unreachable ones are logged and skipped."""
        results = await asyncio.gather(
            *(c.start() for c in self.connections), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, BackendUnavailable):
                raise result

    def tools(self) -> list[Tool]:
        """The allow-listed tools of the connected servers, server by server."""
        out: list[Tool] = []
        for conn in self.connections:
            allowed = set(conn.server.allow_tools)
            for tool in conn.tools:
                if tool.name in allowed:
                    out.append(mcp_tool(conn, tool))
                else:
                    log.info(
                        "mcp.tool_not_allowed", extra={"server": conn.name, "tool": tool.name}
                    )
        return out

    def checks(self) -> list[CheckFn]:
        """One doctor check per server (see :meth:`McpConnection.check`)."""
        return [c.check for c in self.connections]

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(c.close() for c in self.connections))
