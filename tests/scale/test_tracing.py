"""One customer message across an ingress and a worker process is one trace.

The ingress (``serve --workers 0``) and the worker are real processes on shared Redis lanes and
PostgreSQL, exporting OTLP/HTTP to a fake receiver on 127.0.0.1; the worker's agent is the real
LLM agent against the fake OpenAI server, which first calls ``search_knowledge`` and then
answers. The spans of every stage must arrive, all with the same trace id, the ingest ones
from the ingress and the turn's from the worker.
"""

from __future__ import annotations

import asyncio

import aiohttp

from bot.tracing import Span
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp import FakeOtlpReceiver
from tests.scale.cluster import Deployment

STAGES = (
    Span.INGEST,
    Span.ENQUEUE,
    Span.LANE_WAIT,
    Span.TURN,
    Span.RETRIEVAL,
    Span.LLM_CALL,
    Span.TOOL_CALL,
    Span.DELIVER,
    Span.PLATFORM_SEND,
)


async def test_one_trace_follows_a_message_from_ingress_to_worker(
    deployment: Deployment,
) -> None:
    receiver = await FakeOtlpReceiver().start()
    async with FakeOpenAI() as llm:
        llm.reply(tool_calls=[("search_knowledge", {"query": "connect slack"})])
        llm.reply(text="Open Settings, then Integrations.")
        deployment.extra_env.update(
            {
                "SWITCHBOARD_OTEL_ENDPOINT": receiver.url,
                "SWITCHBOARD_AGENT": "auto",
                "SWITCHBOARD_LLM_MODEL": "openai/test-model",
                "SWITCHBOARD_LLM_API_BASE": llm.base_url,
                "SWITCHBOARD_LLM_API_KEY": "sk-test",
                "SWITCHBOARD_LLM_STREAM": "false",
            }
        )
        try:
            await deployment.create_schema()
            ingress = deployment.start("ingress", "serve", "--workers", "0")
            worker = deployment.start("worker", "worker")
            await deployment.wait_ready(ingress, worker)
            url = f"http://127.0.0.1:{ingress.port}/api/v1/conversations/t1/messages"
            body = {"text": "How do I connect Slack?", "user": {"id": "u1"}, "event_id": "e1"}
            async with aiohttp.ClientSession() as http, http.post(url, json=body) as r:
                assert r.status == 202, await r.text()
            assert await deployment.wait_replies(1, timeout_s=60) == 1
            for stage in STAGES:
                await receiver.wait_for(stage, timeout_s=30)
        finally:
            deployment.stop_all()
            await asyncio.sleep(0)
            await receiver.stop()

    by_name = {s.name: s for s in receiver.spans if s.name in STAGES}
    trace_ids = {by_name[name].trace_id for name in STAGES}
    assert len(trace_ids) == 1, {name: by_name[name].trace_id for name in STAGES}
    roles = {name: by_name[name].resource["service.instance.role"] for name in STAGES}
    assert roles[Span.INGEST] == roles[Span.ENQUEUE] == "ingress"
    for name in (Span.LANE_WAIT, Span.TURN, Span.LLM_CALL, Span.TOOL_CALL, Span.DELIVER):
        assert roles[name] == "worker", roles
    turn = by_name[Span.TURN]
    assert by_name[Span.LLM_CALL].attributes["gen_ai.request.model"] == "openai/test-model"
    assert by_name[Span.LLM_CALL].attributes["gen_ai.usage.input_tokens"] > 0
    assert by_name[Span.TOOL_CALL].attributes["gen_ai.tool.name"] == "search_knowledge"
    assert by_name[Span.DELIVER].trace_id == turn.trace_id
    # The lane wait ends where the turn starts and began when the message was enqueued.
    assert by_name[Span.LANE_WAIT].start_ns >= by_name[Span.ENQUEUE].start_ns
    # No message text in any span.
    for span in receiver.spans:
        for value in span.attributes.values():
            assert "connect Slack" not in str(value)
            assert "Integrations" not in str(value)
