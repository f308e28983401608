"""No customer value in logs, spans or errors, on the real LLM path, failures included.

One turn with an e-mail, a phone and a card number runs through the LLM agent against the fake
OpenAI server; a tool crashes with an exception quoting the values (as a careless plugin
would), then the provider fails. Every captured log record is rendered by the production
formatters (JSON and plain), every span the agent made is exported in memory, and the
raised error is inspected: none may carry a value, nor the message's words.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bot import tracing
from bot.agent.llm import LLMAgent
from bot.agent.tools import load_tools
from bot.envelope import Participant, SessionKey
from bot.errors import LLMUnavailable
from bot.observability import JsonFormatter, PlainFormatter
from bot.tools import Ticket
from bot.tracing import Span
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.tickets import MemoryTickets
from tests.test_agent import make_turn, settings_for

EMAIL = "ana.lopez@example.org"
PHONE = "+1 415 555 0132"
CARD = "4111 1111 1111 1111"
MESSAGE = f"I'm {EMAIL}, phone {PHONE}; card {CARD} was charged twice."
VALUES = (EMAIL, PHONE, CARD, "ana.lopez", "555 0132", "4111 1111", "charged twice")


class CrashingTickets(MemoryTickets):
    """A ticket backend whose ``create`` fails with the request's values in its message."""

    async def create(
        self,
        *,
        subject: str,
        description: str,
        requester: Participant,
        channel: str,
        session_key: SessionKey | None,
        priority: str = "normal",
    ) -> Ticket:
        raise RuntimeError(f"cannot store ticket {subject!r}: {description!r}")


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Tracing on for this test only: the hub's spans go to an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_configured", provider)
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer(tracing.TRACER_NAME))
    return exporter


def span_text(span: ReadableSpan) -> str:
    """Everything a trace backend would store about ``span``."""
    data: dict[str, Any] = {
        "name": span.name,
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "status": span.status.description,
    }
    return json.dumps(data, default=str)


async def test_no_value_in_logs_spans_or_errors(
    llm: FakeOpenAI, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything: litellm, Presidio, aiohttp, the hub
    args = {"subject": "Refund for <EMAIL_1>", "description": "<CREDIT_CARD_1>"}
    llm.reply(tool_calls=[("create_ticket", args)])
    llm.reply("Sorry, I could not open a ticket; we will write to <EMAIL_1>.")
    llm.reply(status=400)
    agent = LLMAgent(settings_for(llm), load_tools())

    reply = await agent.respond(make_turn(MESSAGE, tickets=CrashingTickets()))
    with pytest.raises(LLMUnavailable) as failed:
        await agent.respond(make_turn(MESSAGE))

    assert EMAIL in reply.text  # the customer still gets the value...
    records = caplog.records
    assert {"agent.tool_crashed", "agent.llm_failed", "agent.turn_done"} <= {
        r.getMessage() for r in records
    }
    crashed = next(r for r in records if r.getMessage() == "agent.tool_crashed")
    assert crashed.exc_info is not None
    assert EMAIL in str(crashed.exc_info[1])  # the exception itself did quote the values
    json_lines = JsonFormatter()
    plain = PlainFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    rendered = [json_lines.format(r) for r in records] + [plain.format(r) for r in records]
    assert any("RuntimeError (message withheld)" in line for line in rendered)
    finished = spans.get_finished_spans()
    tool_span = next(s for s in finished if s.name == Span.TOOL_CALL)
    assert tool_span.status.status_code is StatusCode.ERROR
    assert tool_span.attributes is not None
    assert tool_span.attributes["error.type"] == "RuntimeError"
    assert {Span.LLM_CALL, Span.TOOL_CALL} <= {s.name for s in finished}
    exported = [span_text(s) for s in finished]
    errors = [str(failed.value), repr(failed.value)]
    # ...and nothing else does.
    for value in VALUES:
        for line in rendered + exported + errors:
            assert value not in line, (value, line[:300])


def test_email_addresses_in_log_fields_are_pseudonymized() -> None:
    """An e-mail conversation's session key and an SMTP error hold the customer's address: the
    JSON log line shows a keyed digest instead, the same one for the same address (a
    conversation's lines still match), a different one for another address."""
    import json as json_module
    import logging as logging_module

    from bot.observability import JsonFormatter

    key = "email:support@shop.example:dm:Ana.Lopez@example.org:thread:abc"
    record = logging_module.LogRecord("x", logging_module.WARNING, __file__, 1, "e", None, None)
    record.session_key = key
    record.error = "SMTPRecipientsRefused({'ana.lopez@example.org': (550, b'no such user')})"
    record.recipients = ["bob@example.com"]
    line = JsonFormatter().format(record)
    assert "example.org" not in line
    assert "example.com" not in line
    assert "Lopez" not in line
    out = json_module.loads(line)
    ana = out["session_key"].split(":dm:")[1].split(":thread:")[0]
    assert ana.startswith("<email:")
    assert ana in out["error"]
    assert out["recipients"][0].startswith("<email:")
    assert out["recipients"][0] != ana
    assert out["session_key"].endswith(":thread:abc")
