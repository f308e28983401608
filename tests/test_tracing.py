"""Tracing off costs nothing: no provider is installed and stages get a shared null context."""

from __future__ import annotations

import contextlib

from opentelemetry import trace

from bot import tracing
from bot.config import load_settings
from bot.tracing import Span


def test_without_an_endpoint_nothing_is_installed() -> None:
    assert tracing.configure(load_settings(None), role="serve") is False
    assert not tracing.enabled()
    first = tracing.span(Span.INGEST)
    assert isinstance(first, contextlib.nullcontext)
    assert tracing.span(Span.TURN) is first  # one shared object, no allocation per stage
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # the API default


def test_an_empty_carrier_starts_a_new_trace() -> None:
    ctx = tracing.extract({})
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    carrier = tracing.enqueue_context(123)
    assert carrier == {"enqueued_ns": "123"}  # no span recording: no traceparent to carry
