"""A fake OTLP/HTTP trace receiver on 127.0.0.1.

Accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` body, as the OTLP/HTTP
exporter sends it (https://opentelemetry.io/docs/specs/otlp/#otlphttp-request), answers an
empty ``ExportTraceServiceResponse`` and records every span it received.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received: ids in lowercase hex, attributes as plain values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class FakeOtlpReceiver:
    """The receiver; ``url`` is the traces endpoint to give ``otel_endpoint``."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeOtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1/traces"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                        )
                    )
        self._arrived.set()
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def wait_for(self, name: str, timeout_s: float = 20.0) -> list[ReceivedSpan]:
        """Wait until a span called ``name`` arrived; all spans of that name."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not any(s.name == name for s in self.spans):
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                got = sorted({s.name for s in self.spans})
                raise TimeoutError(f"no span {name!r} within {timeout_s} s; got {got}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue
        return [s for s in self.spans if s.name == name]
