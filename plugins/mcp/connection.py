"""One MCP server connection (stdio subprocess or Streamable HTTP) with the ``mcp`` SDK.

The SDK's ``Client`` is an async context manager built on anyio task groups, which must be
entered and left in one task: each connection runs in its own task that holds the client open
until :meth:`McpConnection.close`; tool calls from any turn go through the open client. A
server that died is reconnected once at the next call.

Protocol: https://modelcontextprotocol.io/specification (``tools/list``, ``tools/call`` with
``_meta``); transports: stdio (newline-delimited JSON-RPC on the child's stdin/stdout) and
Streamable HTTP (POST and SSE on one endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from bot.config import McpServer
from bot.errors import BackendUnavailable, ConfigError
from bot.tools import BackendCheck

log = logging.getLogger(__name__)

MAX_TOOL_PAGES = 20
"""``tools/list`` pages read at most (a server that pages forever cannot hang the start)."""

CALL_ERRORS: tuple[type[BaseException], ...] = (
    MCPError,
    TimeoutError,
    OSError,
    httpx2.HTTPError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    ExceptionGroup,  # the SDK's task groups wrap what failed inside them
)
"""What a failed connection or call raises (converted to :mod:`bot.errors` at the boundary)."""
_STOP_ERRORS: tuple[type[BaseException], ...] = (asyncio.CancelledError, *CALL_ERRORS)


def describe(exc: BaseException) -> str:
    """A short, secret-free reason for a failed connection or call (``HTTP 401``, the type).

    Exception groups are searched for the first HTTP status or MCP error code they hold.
    """
    leaves: list[BaseException] = [exc]
    while leaves:
        leaf = leaves.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            leaves.extend(leaf.exceptions)
            continue
        if isinstance(leaf, httpx2.HTTPStatusError):
            return f"HTTP {leaf.response.status_code}"
        if isinstance(leaf, MCPError):
            return f"MCP error {leaf.error.code}"
        if leaf.__cause__ is not None:
            leaves.append(leaf.__cause__)
    return type(exc).__name__


def _connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the connection is gone (not a tool's or a request's error)."""
    if isinstance(exc, MCPError):
        return exc.error.code == mcp_types.CONNECTION_CLOSED
    return not isinstance(exc, TimeoutError)


class McpConnection:
    """A connection to one configured MCP server.

    Args:
        server: the server's settings (``bot.config.McpServer``).

    Raises:
        ConfigError: a stdio server without ``command`` or an http server without ``url``.
    """

    def __init__(self, server: McpServer) -> None:
        if server.transport == "stdio" and not server.command:
            raise ConfigError(f"mcp server {server.name!r}: stdio needs a command")
        if server.transport == "http" and not server.url:
            raise ConfigError(f"mcp server {server.name!r}: http needs a url")
        self.server = server
        self.tools: list[mcp_types.Tool] = []
        """The server's tools as last listed (all of them, before the allow-list)."""
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._http_status: int | None = None

    @property
    def name(self) -> str:
        """The server's configured name."""
        return self.server.name

    @property
    def connected(self) -> bool:
        """True while the client is open."""
        return self._client is not None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Connect, then list the server's tools.

        Raises:
            bot.errors.BackendUnavailable: the server could not be started or reached within
                ``timeout_s`` seconds, or it refused the handshake.
        """
        async with self._lock:
            if self.connected:
                return
            await self._stop_task()
            self._stop = asyncio.Event()
            self._http_status = None
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(ready), name=f"mcp:{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.server.timeout_s)
            except CALL_ERRORS as exc:
                await self._stop_task()
                reason = self._reason(exc)
                log.warning("mcp.server_unavailable", extra={"server": self.name, "error": reason})
                raise BackendUnavailable(
                    f"mcp server {self.name!r} unavailable ({reason})"
                ) from exc
        log.info("mcp.connected", extra={"server": self.name, "tools": len(self.tools)})

    async def call(
        self, tool: str, arguments: dict[str, Any], meta: mcp_types.RequestParamsMeta
    ) -> mcp_types.CallToolResult:
        """Call ``tool`` with ``arguments`` and request ``_meta`` (reconnects once if down).

        Raises:
            bot.errors.BackendUnavailable: the server is down or the call failed or timed out.
        """
        if not self.connected:
            await self.start()
        client = self._client
        assert client is not None
        self._http_status = None
        try:
            with anyio.fail_after(self.server.timeout_s):
                return await client.call_tool(tool, arguments, meta=meta)
        except CALL_ERRORS as exc:
            reason = self._reason(exc)
            log.warning(
                "mcp.call_failed", extra={"server": self.name, "tool": tool, "error": reason}
            )
            if _connection_lost(exc):
                await self.close()  # the next call starts a new connection
            raise BackendUnavailable(f"mcp server {self.name!r} failed ({reason})") from exc

    async def check(self) -> BackendCheck:
        """Connect and list tools; report allow-listed tools the server does not have."""
        label = f"mcp:{self.name}"
        try:
            await self.start()
        except BackendUnavailable as exc:
            return BackendCheck(label, False, str(exc))
        names = {t.name for t in self.tools}
        missing = [t for t in self.server.allow_tools if t not in names]
        if missing:
            return BackendCheck(
                label, False, f"allow-listed tools not offered by the server: {', '.join(missing)}"
            )
        offered = len(self.server.allow_tools)
        return BackendCheck(label, True, f"{len(names)} tools listed, {offered} allow-listed")

    async def close(self) -> None:
        """Close the client (a stdio server process is stopped)."""
        await self._stop_task()

    # --- the connection's task --------------------------------------------------------------

    def _transport(self) -> Any:
        s = self.server
        if s.transport == "stdio":
            assert s.command is not None
            params = StdioServerParameters(
                command=s.command,
                args=list(s.args),
                env={k: v.get_secret_value() for k, v in s.env.items()} or None,
            )
            # The server's stderr may carry customer data: it is not mixed into our logs.
            errlog = open(os.devnull, "w")  # noqa: SIM115 (closed with the task)
            return stdio_client(params, errlog=errlog), errlog
        assert s.url is not None
        headers = {k: v.get_secret_value() for k, v in s.headers.items()}
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(s.timeout_s),
            event_hooks={"response": [self._note_status]},
        )
        return streamable_http_client(s.url, http_client=http), http

    async def _note_status(self, response: httpx2.Response) -> None:
        """Keep the last HTTP error status (the SDK turns it into a generic MCP error)."""
        if response.status_code >= 400:
            self._http_status = response.status_code

    def _reason(self, exc: BaseException) -> str:
        reason = describe(exc)
        if self._http_status is not None:
            reason = f"HTTP {self._http_status}; {reason}"
            if self._http_status in (401, 403):
                reason += ": check the server's headers (token)"
        return reason

    async def _run(self, ready: asyncio.Future[None]) -> None:
        transport, resource = self._transport()
        try:
            async with Client(transport, read_timeout_seconds=self.server.timeout_s) as client:
                self.tools = await self._list_tools(client)
                self._client = client
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else TimeoutError())
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning(
                    "mcp.connection_lost", extra={"server": self.name, "error": type(exc).__name__}
                )
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._client = None
            if isinstance(resource, httpx2.AsyncClient):
                await resource.aclose()
            else:
                resource.close()

    @staticmethod
    async def _list_tools(client: Client) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.server.timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(*_STOP_ERRORS):
                await task
        except _STOP_ERRORS:
            pass
