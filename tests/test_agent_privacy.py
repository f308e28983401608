"""PII never reaches the model; the customer and the tools still see the real values.

The LLM agent runs against the fake OpenAI server (real litellm, real HTTP); the server records
every request body, so "the provider never sees a value" is checked on what it received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from bot.agent.llm import MAX_TOOL_RESULT_CHARS, LLMAgent
from bot.agent.tools import load_tools
from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import utcnow
from bot.privacy.injection import strip_markers
from bot.store.base import Role, StoredMessage
from bot.store.sql import SqlStore
from bot.tools import ToolContext, ToolResult
from channels.memory.plugin import MemoryChannel
from channels.memory.pytest_plugin import make_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.tickets import MemoryTickets
from tests.test_agent import KEY, make_turn, settings_for

EMAIL = "ana.lopez@example.org"
PHONE = "+1 415 555 0132"
CARD = "4111 1111 1111 1111"
MESSAGE = f"Hi, I'm {EMAIL}, call me on {PHONE}. My card {CARD} was charged twice!"


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def dialogue(*texts: str) -> list[StoredMessage]:
    """Stored history: customer and bot messages alternating, the customer first."""
    return [
        StoredMessage(
            session_key=KEY,
            seq=i + 1,
            role=Role.CUSTOMER if i % 2 == 0 else Role.BOT,
            text=text,
            kind="message" if i % 2 == 0 else "answer",
            event_id=f"h{i}" if i % 2 == 0 else None,
            reply_to=None,
            citations=(),
            author=None,
            internal=False,
            created_at=utcnow(),
        )
        for i, text in enumerate(texts)
    ]


def sent(llm: FakeOpenAI) -> str:
    """Every request body the provider received, as one string."""
    return json.dumps(llm.requests, ensure_ascii=False)


async def test_pii_never_reaches_the_provider_and_the_customer_gets_the_real_email(
    llm: FakeOpenAI, tmp_path: Path
) -> None:
    """A whole hub (memory channel, router, LLM agent, local tickets) on the default settings."""
    llm.reply(
        tool_calls=[
            (
                "create_ticket",
                {"subject": "Double charge", "description": "Card <CREDIT_CARD_1> charged twice"},
            )
        ]
    )
    llm.reply("I opened a ticket and we will write to you at <EMAIL_1> within a day.")
    settings = make_settings(
        tmp_path / "data",
        llm_model="openai/test-model",
        llm_api_base=llm.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
    )
    settings.data_dir.mkdir(parents=True)
    channel = MemoryChannel(settings)
    hub = await build_hub(settings, channels=[channel], load_knowledge=False)
    await hub.start()
    try:
        await channel.push_message(MESSAGE, user_id="u-ana", conversation="c-ana")
        answer = await channel.pop_message(timeout_s=30)
        tickets = await hub.tickets.list_for("u-ana", "memory")
        assert isinstance(hub.store, SqlStore)
        audited = [r for r in await hub.store.audit_records() if r.action == "tool_call"]
    finally:
        await hub.stop(timeout_s=2.0)

    assert len(llm.requests) == 2
    for value in (EMAIL, PHONE, CARD, "4111111111111111", "555 0132"):
        assert value not in sent(llm), value
    user = strip_markers(llm.requests[0]["messages"][-1]["content"])
    assert "<EMAIL_1>" in user
    assert "<PHONE_1>" in user
    assert "<CREDIT_CARD_1>" in user
    # The customer reads the real address the model referred to by token...
    assert answer.text == f"I opened a ticket and we will write to you at {EMAIL} within a day."
    # ...and the tool acted on the real card number the model wrote as a token.
    (ticket,) = tickets
    assert ticket.description == f"Card {CARD} charged twice"
    # The call is in the audit log: the tool and its outcome, never its arguments.
    (entry,) = audited
    assert (entry.actor, entry.detail) == ("bot", {"tool": "create_ticket", "outcome": "done"})


async def test_streamed_tokens_split_across_chunks_are_restored(llm: FakeOpenAI) -> None:
    """The fake streams 7-character deltas, so ``<EMAIL_1>`` always arrives in pieces."""
    llm.reply("Sure, we will write to <EMAIL_1> and call <PHONE_1>.", chunk_delay_s=0.001)
    shown: list[str] = []

    async def stream(text: str) -> None:
        shown.append(text)

    agent = LLMAgent(settings_for(llm), load_tools())
    reply = await agent.respond(make_turn(MESSAGE, stream=stream))

    final = f"Sure, we will write to {EMAIL} and call {PHONE}."
    assert reply.text == final
    assert shown[-1] == final
    assert len(shown) > 3
    assert not any("<EMAIL" in s or "<PHO" in s for s in shown)
    assert all(final.startswith(s) for s in shown)
    assert EMAIL not in sent(llm)


async def test_history_and_tool_results_are_redacted(llm: FakeOpenAI) -> None:
    """Values in stored history and in a tool's result reach the model as tokens only."""
    tickets = MemoryTickets()
    llm.reply(tool_calls=[("create_ticket", {"subject": "Call <PHONE_1>", "description": "x"})])
    llm.reply("Done.")
    history = dialogue(f"My number is {PHONE}", f"Thanks, noted {PHONE}.")
    agent = LLMAgent(settings_for(llm), load_tools())
    await agent.respond(make_turn("Please call me back", tickets=tickets, history=history))

    (ticket,) = tickets.tickets.values()
    assert ticket.subject == f"Call {PHONE}"  # the tool got the value
    assert PHONE not in sent(llm)  # the tool's result echoing it went back as a token
    first, second = llm.requests
    assert "Thanks, noted <PHONE_1>." in json.dumps(first["messages"])
    assert "<PHONE_1>" in next(m["content"] for m in second["messages"] if m["role"] == "tool")


async def test_a_turn_resumed_by_another_worker_issues_the_same_tokens(llm: FakeOpenAI) -> None:
    """Two agents (two worker processes) answering the same turn send the same tokens."""
    history = dialogue(f"Card {CARD}, mail bob@example.com", "Noted.")
    requests = []
    for _worker in range(2):
        llm.reply("ok")
        agent = LLMAgent(settings_for(llm), load_tools())
        await agent.respond(make_turn(f"Also {EMAIL}", history=history))
        requests.append([strip_markers(str(m["content"])) for m in llm.requests[-1]["messages"]])
    assert requests[0] == requests[1]
    assert "<EMAIL_1>" in requests[0][1]  # the history's address was numbered first
    assert "<EMAIL_2>" in requests[0][-1]


async def test_per_channel_entities_and_off_switch(llm: FakeOpenAI) -> None:
    """``pii_channel_entities`` narrows the types on one channel; [] sends text unchanged."""
    llm.reply("ok", times=2)
    only_email = settings_for(llm, pii_channel_entities={"rest": ["EMAIL_ADDRESS"]})
    await LLMAgent(only_email, load_tools()).respond(make_turn(MESSAGE))
    assert EMAIL not in sent(llm)
    assert PHONE in sent(llm)

    off = settings_for(llm, pii_entities=[])
    await LLMAgent(off, load_tools()).respond(make_turn(MESSAGE))
    assert EMAIL in json.dumps(llm.requests[-1])


def test_default_settings_redact() -> None:
    """Redaction is on by default, for the types the issue names."""
    defaults = Settings(data_dir=Path("/nonexistent"))
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"} <= set(
        defaults.pii_entities_for(KEY.split(":")[0])
    )


class _Args(BaseModel):
    order: str


class LongOrderTool:
    """Returns a long record whose card number straddles the tool-result cut."""

    name: ClassVar[str] = "get_order"
    description: ClassVar[str] = "Look up an order."
    args_model: ClassVar[type[BaseModel]] = _Args

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        # JSON adds a leading quote; the cut falls after "4111 1111 1111".
        head = MAX_TOOL_RESULT_CHARS - 2 - len("4111 1111 1111")
        return ToolResult(content="x" * head + " " + CARD + " paid")


async def test_a_value_cut_by_the_tool_result_limit_does_not_leak(llm: FakeOpenAI) -> None:
    """Tool results are redacted before they are cut to MAX_TOOL_RESULT_CHARS."""
    llm.reply(tool_calls=[("get_order", {"order": "A-1"})])
    llm.reply("Found it.")
    agent = LLMAgent(settings_for(llm), [LongOrderTool()])
    await agent.respond(make_turn("Where is order A-1?"))
    assert "4111 1111 1111" not in sent(llm)
