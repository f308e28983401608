"""A scripted OpenAI-compatible chat completions server for tests.

Serves ``POST /v1/chat/completions`` (and ``/chat/completions``) on 127.0.0.1, port 0. Each
request takes the next scripted :class:`Scripted` reply that matches its model, and is answered
as JSON or, when the request asks ``"stream": true``, as server-sent events in the format of the
OpenAI Chat Completions API (https://platform.openai.com/docs/api-reference/chat/streaming):
``data: {chat.completion.chunk}`` lines, ending with ``data: [DONE]``. Every request body is
recorded in :attr:`FakeOpenAI.requests` for assertions.

Usage::

    async with FakeOpenAI() as llm:
        llm.reply(text="Hello [1]")
        llm.reply(tool_calls=[("search_knowledge", {"query": "slack"})])
        llm.reply(status=500)
        llm.reply(delay_s=5.0, text="too late")
        # settings: llm_model="openai/test-model", llm_api_base=llm.base_url, llm_api_key="sk-test"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

ToolCallSpec = tuple[str, dict[str, Any] | str]
"""``(function name, arguments)``: arguments as a dict (JSON-encoded) or a raw string."""


@dataclass(slots=True)
class Scripted:
    """One scripted reply.

    Attributes:
        text: assistant content (may be None with tool calls).
        tool_calls: tool calls to make, as ``(name, arguments)``.
        status: when set, answer with this HTTP error status instead (500, 429...).
        delay_s: seconds to wait before answering (to trigger client timeouts).
        model: only requests for this model (without provider prefix) take this reply.
        times: how many requests it answers; None answers forever.
        chunk_delay_s: seconds between two streamed content deltas (a slow model).
    """

    text: str | None = None
    tool_calls: Sequence[ToolCallSpec] = ()
    status: int | None = None
    delay_s: float = 0.0
    model: str | None = None
    times: int | None = 1
    chunk_delay_s: float = 0.0


@dataclass(slots=True)
class _Counter:
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"


class FakeOpenAI:
    """The fake server (an async context manager).

    Attributes:
        requests: every request body received, in order (parsed JSON).
        paths: the request path of each request.
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._script: list[Scripted] = []
        self._ids = _Counter()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    # --- scripting ----------------------------------------------------------------------
    def reply(
        self,
        text: str | None = None,
        *,
        tool_calls: Sequence[ToolCallSpec] = (),
        status: int | None = None,
        delay_s: float = 0.0,
        model: str | None = None,
        times: int | None = 1,
        chunk_delay_s: float = 0.0,
    ) -> None:
        """Queue a reply (see :class:`Scripted` for the fields)."""
        self._script.append(
            Scripted(text, tool_calls, status, delay_s, model, times, chunk_delay_s)
        )

    def models(self) -> list[str]:
        """The ``model`` field of each recorded request, in order."""
        return [str(r.get("model")) for r in self.requests]

    # --- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # ends scripted delays at once
        if self._runner is not None:
            await self._runner.cleanup()

    # --- serving ------------------------------------------------------------------------
    def _take(self, model: str) -> Scripted | None:
        for i, item in enumerate(self._script):
            if item.model is not None and item.model != model:
                continue
            if item.times is not None:
                item.times -= 1
                if item.times <= 0:
                    del self._script[i]
            return item
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        self.paths.append(request.path)
        model = str(body.get("model", ""))
        item = self._take(model)
        if item is None:
            return _error(500, "no scripted reply left")
        if item.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), item.delay_s)
            if self._closing.is_set():
                return _error(503, "server closing")
        if item.status is not None:
            return _error(item.status, f"scripted error {item.status}")
        calls = [
            {
                "id": self._ids.next("call"),
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for name, args in item.tool_calls
        ]
        if body.get("stream"):
            return await self._stream(request, body, item, calls)
        message: dict[str, Any] = {"role": "assistant", "content": item.text}
        if calls:
            message["tool_calls"] = calls
        return web.json_response(
            {
                "id": self._ids.next("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if calls else "stop",
                    }
                ],
                "usage": _usage(body, item),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        item: Scripted,
        calls: list[dict[str, Any]],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        cid = self._ids.next("chatcmpl")
        created = int(time.time())
        model = str(body.get("model", ""))

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        text = item.text or ""
        for start in range(0, len(text), 7):  # several small deltas
            await send({"content": text[start : start + 7]})
            await asyncio.sleep(item.chunk_delay_s)
        for index, call in enumerate(calls):
            args: str = call["function"]["arguments"]
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            await send({"tool_calls": [head]})
            for start in range(0, len(args), 10):
                piece = {"index": index, "function": {"arguments": args[start : start + 10]}}
                await send({"tool_calls": [piece]})
        await send({}, "tool_calls" if calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(body, item),
            }
            await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _usage(body: dict[str, Any], item: Scripted) -> dict[str, int]:
    """A rough usage figure: 4 characters per token."""
    prompt = len(json.dumps(body.get("messages", []))) // 4
    completion = max(1, len(item.text or "") // 4 + 10 * len(item.tool_calls))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _error(status: int, message: str) -> web.Response:
    """An error in the OpenAI error format."""
    kind = "rate_limit_error" if status == 429 else "server_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        status=status,
    )
