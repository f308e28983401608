"""OpenTelemetry traces: one trace per customer message, from ingest to the platform send.

The hub's stages each open a span on the tracer returned by :func:`tracer` (names in
:class:`Span`). The trace context crosses processes inside the lane entry: ingest stores the
W3C ``traceparent`` (and ``tracestate``) of its span in the envelope's ``trace_context``
(:func:`inject`), and the worker that takes the entry continues that trace (:func:`extract`),
so an ingress and a worker process show one trace per message.

Cost: with ``otel_endpoint`` unset no tracer provider is installed, the API's no-op tracer
serves every call, and spans cost a function call each. With it set, spans go through a
``BatchSpanProcessor`` to an OTLP/HTTP exporter (protobuf, ``POST {otel_endpoint}``;
https://opentelemetry.io/docs/specs/otlp/#otlphttp). aiohttp's server and client are
instrumented with the OpenTelemetry contrib packages when tracing is on.

Spans carry ids, names, counts and durations, never message text or customer data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from bot.config import Settings

TRACER_NAME: Final = "switchboard"
_PROPAGATOR: Final = TraceContextTextMapPropagator()


class Span:
    """Span names, one per stage of a customer message (``switchboard.<stage>``)."""

    INGEST: Final = "switchboard.ingest"
    ENQUEUE: Final = "switchboard.enqueue"
    LANE_WAIT: Final = "switchboard.lane_wait"
    TURN: Final = "switchboard.turn"
    RETRIEVAL: Final = "switchboard.retrieval"
    LLM_CALL: Final = "switchboard.llm_call"
    TOOL_CALL: Final = "switchboard.tool_call"
    DELIVER: Final = "switchboard.deliver"
    PLATFORM_SEND: Final = "switchboard.platform_send"


def tracer() -> trace.Tracer:
    """The hub's tracer: the global provider's, a no-op one when tracing is off."""
    return trace.get_tracer(TRACER_NAME)


_NOOP: Final = contextlib.nullcontext()


def enabled() -> bool:
    """True when :func:`configure` installed a tracer provider in this process."""
    return _configured is not None


def span(
    name: str,
    *,
    context: otel_context.Context | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """A context manager running its block inside a new current span called ``name``.

    When tracing is off it is a shared ``nullcontext``: no span object, no context switch.

    Args:
        name: one of :class:`Span`.
        context: the parent context (from :func:`extract`); the current one when None.
        attributes: span attributes (ids, counts, model names: never message text).
    """
    if _configured is None:
        return _NOOP
    return _error_safe_span(name, context, attributes)


@contextlib.contextmanager
def _error_safe_span(
    name: str,
    context: otel_context.Context | None,
    attributes: Mapping[str, str | int | float | bool] | None,
) -> Iterator[Any]:
    """A current span whose failure is recorded by exception type only.

    OpenTelemetry's default records the exception's message and stack trace as a span event
    and its message as the status description; messages may quote customer text, so the span
    gets status ERROR described by the type name and an ``error.type`` attribute instead.
    """
    with tracer().start_as_current_span(
        name,
        context=context,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            kind = type(exc).__qualname__
            current.set_status(trace.Status(trace.StatusCode.ERROR, description=kind))
            current.set_attribute("error.type", kind)
            raise


def record_lane_wait(trace_context: Mapping[str, str]) -> otel_context.Context:
    """The context of a message's trace, after recording its wait in the lane.

    Args:
        trace_context: the envelope's ``trace_context`` (see :func:`enqueue_context`).

    Returns:
        The context the turn's span continues (a new trace when the carrier is empty).
    """
    ctx = extract(trace_context)
    if _configured is not None and "enqueued_ns" in trace_context:
        wait = tracer().start_span(
            Span.LANE_WAIT, context=ctx, start_time=int(trace_context["enqueued_ns"])
        )
        wait.end()
    return ctx


def enqueue_context(now_ns: int) -> dict[str, str]:
    """The ``trace_context`` of a message entering its lane: W3C headers and ``enqueued_ns``.

    Args:
        now_ns: Unix time in nanoseconds (``time.time_ns()``).
    """
    return {**inject(), "enqueued_ns": str(now_ns)}


def inject() -> dict[str, str]:
    """The current span's context as W3C Trace Context headers.

    Returns:
        ``{"traceparent": "00-<trace id>-<span id>-<flags>"}`` plus ``tracestate`` when set
        (https://www.w3.org/TR/trace-context/); empty when no span is recording.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The context a span should continue, from headers written by :func:`inject`.

    Args:
        carrier: the ``trace_context`` of an envelope (``None`` or empty: a new trace).

    Returns:
        An OpenTelemetry context to pass as ``context=`` to ``start_as_current_span``.
    """
    return _PROPAGATOR.extract(dict(carrier or {}))


_configured: TracerProvider | None = None


def configure(settings: Settings, *, role: str, exporter: SpanExporter | None = None) -> bool:
    """Install the tracer provider and instrument aiohttp, once per process.

    Args:
        settings: ``otel_endpoint`` (OTLP/HTTP traces URL) and ``otel_service_name``.
        role: the process's part (``serve``, ``ingress``, ``worker``, ``bench``, ``chat``),
            recorded as the resource attribute ``service.instance.role``.
        exporter: a span exporter to use instead of OTLP (tests: an in-memory exporter).

    Returns:
        True when traces are exported; False when tracing is off (nothing installed).
    """
    global _configured
    if _configured is not None:
        return True
    if exporter is None and not settings.otel_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint)
    resource = Resource.create(
        {
            "service.name": settings.otel_service_name,
            "service.instance.id": f"{os.uname().nodename}:{os.getpid()}",
            "service.instance.role": role,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _instrument_aiohttp()
    _configured = provider
    return True


def _instrument_aiohttp() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    AioHttpClientInstrumentor().instrument(url_filter=_safe_url)
    AioHttpServerInstrumentor().instrument()


def _safe_url(url: Any) -> str:
    """A client request's URL as spans may show it: no query, no credential-like segment.

    Query strings carry search terms and ids; some platform APIs put the bot's token in the
    path (Telegram's ``/bot<token>/sendMessage``). Path segments holding a ``:`` or 32+
    characters are replaced by ``*``.
    """
    segments = ["*" if ":" in s or len(s) >= 32 else s for s in url.path.split("/")]
    port = f":{url.port}" if url.port and not url.is_default_port() else ""
    return f"{url.scheme}://{url.host}{port}" + "/".join(segments)


def shutdown() -> None:
    """Flush spans still buffered and stop the exporter (no-op when tracing is off)."""
    global _configured
    if _configured is not None:
        _configured.force_flush(timeout_millis=5_000)
        _configured.shutdown()
        _configured = None
