"""The copilot and the agent with an LLM (the fake OpenAI server): PII redacted before the
model sees the transcript, restored in the suggestion; token use recorded for the analytics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.agent import LLMAgent, load_tools
from bot.console.copilot import copilot
from bot.desk.store import DeskStore
from bot.envelope import utcnow
from tests.console.desk import Desk, open_desk
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.retriever import FixedRetriever, passage
from tests.test_agent import make_turn

LLM_ANSWER = {
    "wants": "A refund for an order; reachable at <EMAIL_ADDRESS_1>",
    "tried": ["Explained the refund policy"],
    "suggestion": "I have started the refund [1]; the receipt goes to <EMAIL_ADDRESS_1>.",
}


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def desk(tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[Desk]:
    async with open_desk(
        tmp_path,
        llm_model="openai/test-model",
        llm_api_base=llm.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        llm_timeout_s=5.0,
        pii_entities=["EMAIL_ADDRESS"],
    ) as d:
        yield d


async def _usage(store: DeskStore) -> list[tuple[str, int, int]]:
    now = utcnow()
    rows = await store.usage(since=now - timedelta(hours=1), until=now + timedelta(minutes=1))
    return [(u.purpose, u.input_tokens, u.output_tokens) for u in rows]


async def test_llm_copilot_redacts_pii_and_records_its_tokens(desk: Desk, llm: FakeOpenAI) -> None:
    key = await desk.customer_says("I want a refund for order 1182, mail me at dana@example.org")
    conv = await desk.handoff.escalate(key, "customer_request")
    retriever = FixedRetriever([passage("refunds", "Refunds are paid within 5 days.")])
    # The model answers with the tokens it was given; the fake counts them as usage.
    token = "<EMAIL_ADDRESS_1>"
    llm.reply(json.dumps(LLM_ANSWER).replace("<EMAIL_ADDRESS_1>", token))
    history = await desk.store.messages(key)
    body = await copilot(desk.settings, conv, history, retriever, desk.handoff.desk)

    (request,) = llm.requests
    sent = json.dumps(request["messages"])
    assert "dana@example.org" not in sent  # redacted before it left
    assert "Refunds are paid within 5 days." in sent
    shown = sent.split("Customer: ", 1)[1]
    token = shown.split("mail me at ", 1)[1].split("\\n", 1)[0]
    assert token.startswith("<")
    assert token.endswith(">")
    assert body["suggestion"]["source"] == "llm"
    assert [c["doc_id"] for c in body["suggestion"]["citations"]] == ["refunds"]
    assert body["summary"]["tried"] == ["Explained the refund policy"]
    [(purpose, tokens_in, tokens_out)] = await _usage(desk.handoff.desk)
    assert purpose == "copilot"
    assert tokens_in > 0
    assert tokens_out > 0


async def test_llm_copilot_restores_pii_in_its_answer(desk: Desk, llm: FakeOpenAI) -> None:
    key = await desk.customer_says("Refund please, my address is dana@example.org")
    conv = await desk.handoff.escalate(key, "customer_request")
    history = await desk.store.messages(key)
    retriever = FixedRetriever([passage("refunds", "Refunds are paid within 5 days.")])
    # First call: learn the token the redactor uses for the address.
    llm.reply("not json")
    fallback = await copilot(desk.settings, conv, history, retriever, desk.handoff.desk)
    assert fallback["suggestion"]["source"] == "knowledge"  # the model's junk: extractive
    assert fallback["suggestion"]["text"] == "Refunds are paid within 5 days."
    sent = json.dumps(llm.requests[0]["messages"])
    token = sent.split("my address is ", 1)[1].split("\\n", 1)[0]
    llm.reply(json.dumps({**LLM_ANSWER, "suggestion": f"Your receipt goes to {token} [1]."}))
    body = await copilot(desk.settings, conv, history, retriever, desk.handoff.desk)
    assert body["suggestion"]["text"] == "Your receipt goes to dana@example.org."
    llm.reply(status=500)
    down = await copilot(desk.settings, conv, history, retriever, desk.handoff.desk)
    assert down["suggestion"]["source"] == "knowledge"


async def test_the_agent_records_its_token_use(tmp_path: Path, llm: FakeOpenAI) -> None:
    async with open_desk(tmp_path) as d:
        desk_store = DeskStore(d.store)
        settings = d.settings.model_copy(
            update={
                "llm_model": "openai/test-model",
                "llm_api_base": llm.base_url,
                "llm_api_key": SecretStr("sk-test"),
                "llm_max_retries": 0,
            }
        )
        agent = LLMAgent(settings, load_tools(), on_usage=desk_store.usage_recorder())
        llm.reply("Create a Slack app and paste the signing secret [1].")
        reply = await agent.respond(make_turn("How do I connect Slack?"))
        [(purpose, tokens_in, tokens_out)] = await _usage(desk_store)
        assert purpose == "answer"
        assert tokens_in + tokens_out == reply.usage_tokens
