"""The support agent: LLMAgent through real HTTP (litellm → fake OpenAI server), and the
extractive default."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import litellm
import pytest

from bot.agent import tools as agent_tools
from bot.agent.base import AgentReply, TurnInput
from bot.agent.citations import strip_citation_markers
from bot.agent.extractive import ExtractiveAgent
from bot.agent.llm import LLMAgent
from bot.agent.tools import BUILTIN_TOOLS, load_tools
from bot.config import Settings
from bot.envelope import TALK_TO_HUMAN, InboundMessage, Participant, SessionKey, utcnow
from bot.errors import ConfigError, LLMUnavailable
from bot.privacy.injection import strip_markers
from bot.retrieval import Passage
from bot.store.base import Role, StoredMessage
from bot.tools import ToolContext
from plugins.escalation.registry import builtin_tools
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.retriever import FixedRetriever, passage
from tests.fakes.tickets import MemoryTickets

CUSTOMER = Participant(id="U-alice", name="Alice", verified=True)
KEY = SessionKey("rest:default:dm:U-alice")

SLACK = passage(
    "channels-slack",
    "To connect Slack, create a Slack app, enable Event Subscriptions and paste the "
    "signing secret into the Switchboard configuration.",
    title="Slack setup",
    heading="Channels > Slack",
    url="https://docs.example/slack",
    confidence=0.82,
)
EMAIL = passage(
    "channels-email",
    "The email channel polls an IMAP mailbox and answers over SMTP.",
    title="Email setup",
    score=0.4,
    confidence=0.41,
)
BILLING = passage(
    "billing",
    "Invoices are listed under Billing > Invoices; download them as PDF.",
    title="Billing",
    confidence=0.7,
)


class Escalations:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, reason: str, summary: str) -> None:
        self.calls.append((reason, summary))


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def settings_for(llm: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_model": "openai/test-model",
        "llm_api_base": llm.base_url,
        "llm_api_key": "sk-test",
        "llm_max_retries": 0,
        "llm_timeout_s": 5.0,
        "data_dir": Path("/nonexistent"),
    }
    values.update(overrides)
    return Settings(**values)


def make_turn(
    text: str,
    *,
    retriever: FixedRetriever | None = None,
    tickets: MemoryTickets | None = None,
    escalations: Escalations | None = None,
    customer: Participant = CUSTOMER,
    history: Sequence[StoredMessage] = (),
    overflow: Sequence[str] = (),
    stream: Any = None,
) -> TurnInput:
    def message(i: int, body: str) -> InboundMessage:
        return InboundMessage(
            event_id=f"e{i}",
            channel="rest",
            account="default",
            session_key=KEY,
            sender=customer,
            text=body,
        )

    stored = list(history)

    async def load_history() -> Sequence[StoredMessage]:
        return stored

    ctx = ToolContext(
        session_key=KEY,
        channel="rest",
        customer=customer,
        retriever=retriever if retriever is not None else FixedRetriever([SLACK, EMAIL]),
        tickets=tickets if tickets is not None else MemoryTickets(),
        escalate=escalations if escalations is not None else Escalations(),
        max_citations=3,
    )
    return TurnInput(
        session_key=KEY,
        channel="rest",
        customer=customer,
        messages=[message(100, text)],
        overflow=[message(50 + i, t) for i, t in enumerate(overflow)],
        history=load_history,
        tools=ctx,
        stream=stream,
    )


def tool_messages(request: dict[str, Any]) -> list[str]:
    """Tool results as the model read them, without their data markers."""
    return [
        strip_markers(str(m["content"])).strip()
        for m in request["messages"]
        if m["role"] == "tool"
    ]


# --- LLMAgent -------------------------------------------------------------------------------


class TestLLMAgentAnswers:
    async def test_plain_answer_with_citations(self, llm: FakeOpenAI) -> None:
        llm.reply("Create a Slack app and paste the signing secret [1].")
        retriever = FixedRetriever([SLACK, EMAIL])
        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("How do I connect Slack?", retriever=retriever))

        assert reply.text == "Create a Slack app and paste the signing secret."
        assert [c.doc_id for c in reply.citations] == ["channels-slack"]
        assert reply.citations[0].url == "https://docs.example/slack"
        assert reply.escalate is None
        assert reply.actions == [TALK_TO_HUMAN]
        assert reply.usage_tokens > 0
        (request,) = llm.requests
        assert llm.paths == ["/v1/chat/completions"]
        assert request["model"] == "test-model"
        system = request["messages"][0]
        assert system["role"] == "system"
        assert (
            "[1] Slack setup — Channels > Slack (https://docs.example/slack)" in system["content"]
        )
        assert "[2] Email setup" in system["content"]
        user = request["messages"][-1]
        assert user["role"] == "user"
        assert user["content"].startswith('<<data source="customer_message" id="')
        assert strip_markers(user["content"]).strip() == "How do I connect Slack?"
        names = {t["function"]["name"] for t in request["tools"]}
        assert names == {
            "search_knowledge",
            "create_ticket",
            "get_ticket",
            "add_ticket_comment",
            "escalate_to_human",
            "lookup_customer",
        }
        assert retriever.queries == ["How do I connect Slack?"]

    async def test_uncited_answer_cites_the_sources_that_support_it(self, llm: FakeOpenAI) -> None:
        llm.reply("Enable Event Subscriptions in your Slack app, then paste the signing secret.")
        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("Slack?"))
        assert [c.doc_id for c in reply.citations] == ["channels-slack"]

    async def test_search_knowledge_tool_then_answer(self, llm: FakeOpenAI) -> None:
        retriever = FixedRetriever([SLACK], answers={"invoice": [BILLING]})
        llm.reply(tool_calls=[("search_knowledge", {"query": "invoice download"})])
        llm.reply("Open Billing > Invoices and download the PDF [2].")
        agent = LLMAgent(settings_for(llm), load_tools())
        turn = make_turn("Where are my bills?", retriever=retriever)
        reply = await agent.respond(turn)

        assert retriever.queries == ["Where are my bills?", "invoice download"]
        assert reply.text == "Open Billing > Invoices and download the PDF."
        assert [c.doc_id for c in reply.citations] == ["billing"]
        assert [c.doc_id for c in turn.tools.citations] == ["billing"]
        first, second = llm.requests
        assert first["tool_choice"] == "auto"
        assistant = second["messages"][-2]
        assert assistant["tool_calls"][0]["function"]["name"] == "search_knowledge"
        (result,) = tool_messages(second)
        assert "Invoices are listed under Billing" in result
        assert "[2] Billing (doc_id billing)" in result

    async def test_create_ticket_uses_the_session_customer(self, llm: FakeOpenAI) -> None:
        tickets = MemoryTickets()
        llm.reply(
            tool_calls=[
                (
                    "create_ticket",
                    {
                        "subject": "Refund",
                        "description": "Charged twice",
                        "requester_id": "U-mallory",
                        "requester": {"id": "U-mallory", "email": "m@evil.example"},
                    },
                )
            ]
        )
        llm.reply("I opened ticket T-000001 for you.")
        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("I was charged twice", tickets=tickets))

        (ticket,) = tickets.tickets.values()
        assert (ticket.requester_id, ticket.requester_channel) == ("U-alice", "rest")
        assert ticket.session_key == KEY
        (result,) = tool_messages(llm.requests[1])
        assert json.loads(result)["id"] == "T-000001"
        assert reply.text == "I opened ticket T-000001 for you."

    async def test_someone_elses_ticket_is_refused_and_the_model_sees_it(
        self, llm: FakeOpenAI
    ) -> None:
        tickets = MemoryTickets()
        other = await tickets.create(
            subject="Bob's salary question",
            description="secret",
            requester=Participant(id="U-bob"),
            channel="rest",
            session_key=None,
        )
        llm.reply(tool_calls=[("get_ticket", {"ticket_id": other.id})])
        llm.reply("Sorry, I can't show that ticket.")
        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn(f"Show me {other.id}", tickets=tickets))

        (result,) = tool_messages(llm.requests[1])
        assert json.loads(result)["error"] == "refused"
        assert "salary" not in result
        assert reply.text == "Sorry, I can't show that ticket."
        assert reply.escalate is None

    async def test_invalid_tool_arguments_go_back_to_the_model(self, llm: FakeOpenAI) -> None:
        llm.reply(tool_calls=[("get_ticket", {"id": 5}), ("no_such_tool", "{}")])
        llm.reply("Which ticket do you mean?")
        agent = LLMAgent(settings_for(llm), load_tools())
        turn = make_turn("my ticket?")
        audited: list[tuple[str, str]] = []

        async def audit(tool: str, outcome: str) -> None:
            audited.append((tool, outcome))

        turn.tools.audit = audit
        reply = await agent.respond(turn)

        errors = [json.loads(m)["error"] for m in tool_messages(llm.requests[1])]
        assert errors == ["invalid_arguments", "unknown_tool"]
        assert reply.text == "Which ticket do you mean?"
        # Every call the model made is in the audit log, the refused ones too.
        assert audited == [("get_ticket", "invalid_arguments"), ("no_such_tool", "unknown_tool")]

    async def test_escalate_to_human_tool(self, llm: FakeOpenAI) -> None:
        escalations = Escalations()
        llm.reply(
            tool_calls=[("escalate_to_human", {"reason": "customer asked", "summary": "refund"})]
        )
        llm.reply("A colleague will take over shortly.")
        agent = LLMAgent(settings_for(llm), load_tools())
        turn = make_turn("I want a refund, get me someone", escalations=escalations)
        reply = await agent.respond(turn)

        assert reply.escalate == "agent_tool"
        assert turn.tools.escalated
        assert [r for r, _ in escalations.calls] == ["agent_tool"]
        assert reply.text == "A colleague will take over shortly."
        assert reply.actions == []

    async def test_empty_answer_escalates_no_answer(self, llm: FakeOpenAI) -> None:
        llm.reply("")
        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("??"))
        assert (reply.text, reply.escalate, reply.citations) == ("", "no_answer", [])

    async def test_overflow_is_summarized_into_the_prompt(self, llm: FakeOpenAI) -> None:
        llm.reply("Noted.")
        agent = LLMAgent(settings_for(llm), load_tools())
        await agent.respond(make_turn("and Teams?", overflow=["hello?", "anyone there"]))
        user = llm.requests[0]["messages"][-1]["content"]
        assert "also sent" in user
        assert '"hello?"' in user
        assert '"anyone there"' in user
        assert strip_markers(user).rstrip().endswith("and Teams?")

    async def test_knowledge_base_down_still_answers(self, llm: FakeOpenAI) -> None:
        llm.reply("I can't look that up right now.")
        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("Slack?", retriever=FixedRetriever(fail=True)))
        assert reply.text == "I can't look that up right now."
        assert "(none found" in llm.requests[0]["messages"][0]["content"]


class TestLLMAgentStreaming:
    async def test_deltas_are_delivered_and_the_final_text_matches(self, llm: FakeOpenAI) -> None:
        llm.reply("Create a Slack app, enable Event Subscriptions and paste the secret [1].")
        seen: list[str] = []

        async def on_delta(text: str) -> None:
            seen.append(text)

        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("Slack?", stream=on_delta))

        assert llm.requests[0]["stream"] is True
        assert len(seen) > 3
        assert all(b.startswith(a.rstrip()) for a, b in itertools.pairwise(seen))
        assert not any("[" in s for s in seen)  # citation markers never flash on screen
        assert seen[-1] == reply.text
        assert reply.text == (
            "Create a Slack app, enable Event Subscriptions and paste the secret."
        )
        assert [c.doc_id for c in reply.citations] == ["channels-slack"]
        assert reply.usage_tokens > 0

    async def test_streamed_tool_calls_run(self, llm: FakeOpenAI) -> None:
        retriever = FixedRetriever([SLACK], answers={"invoice": [BILLING]})
        llm.reply(tool_calls=[("search_knowledge", {"query": "invoice pdf"})])
        llm.reply("Download it as PDF from Billing [2].")
        seen: list[str] = []

        async def on_delta(text: str) -> None:
            seen.append(text)

        agent = LLMAgent(settings_for(llm), load_tools())
        reply = await agent.respond(make_turn("bills?", retriever=retriever, stream=on_delta))

        assert retriever.queries == ["bills?", "invoice pdf"]
        assert all(r["stream"] for r in llm.requests)
        assert seen[-1] == reply.text == "Download it as PDF from Billing."
        assert [c.doc_id for c in reply.citations] == ["billing"]


class TestLLMAgentFailures:
    @pytest.mark.parametrize("status", [500, 429])
    async def test_error_then_fallback_model_answers(self, llm: FakeOpenAI, status: int) -> None:
        llm.reply(status=status, model="test-model", times=None)
        llm.reply("From the fallback [1].", model="fallback-model")
        settings = settings_for(llm, llm_fallbacks=["openai/fallback-model"])
        agent = LLMAgent(settings, load_tools())
        reply = await agent.respond(make_turn("Slack?"))

        assert reply.text == "From the fallback."
        assert llm.models() == ["test-model", "fallback-model"]

    async def test_every_model_failing_raises_llm_unavailable(self, llm: FakeOpenAI) -> None:
        llm.reply(status=500, times=None)
        settings = settings_for(llm, llm_fallbacks=["openai/fallback-model"])
        with pytest.raises(LLMUnavailable):
            await LLMAgent(settings, load_tools()).respond(make_turn("Slack?"))
        assert llm.models() == ["test-model", "fallback-model"]

    async def test_timeout_raises_llm_unavailable_within_the_bound(self, llm: FakeOpenAI) -> None:
        llm.reply("too late", delay_s=30, times=None)
        settings = settings_for(llm, llm_timeout_s=0.5, llm_fallbacks=["openai/fallback-model"])
        agent = LLMAgent(settings, load_tools())
        started = time.monotonic()
        with pytest.raises(LLMUnavailable):
            await agent.respond(make_turn("Slack?"))
        elapsed = time.monotonic() - started
        # Two models, one attempt each, 0.5 s per attempt (plus litellm's own overhead).
        assert 0.9 < elapsed < 3.0
        assert llm.models() == ["test-model", "fallback-model"]

    async def test_connection_refused_raises_llm_unavailable(self) -> None:
        async with FakeOpenAI() as gone:
            pass  # started and stopped: its port now refuses connections
        agent = LLMAgent(settings_for(gone), load_tools())
        with pytest.raises(LLMUnavailable):
            await agent.respond(make_turn("Slack?"))

    async def test_tool_loop_is_bounded(self, llm: FakeOpenAI) -> None:
        llm.reply(tool_calls=[("search_knowledge", {"query": "again"})], times=None)
        agent = LLMAgent(settings_for(llm, agent_max_tool_rounds=2), load_tools())
        reply = await agent.respond(make_turn("Slack?"))

        assert len(llm.requests) == 3  # two tool rounds, then one call for the answer
        assert [r["tool_choice"] for r in llm.requests] == ["auto", "auto", "none"]
        assert reply.escalate == "tool_loop"
        assert reply.text == ""


class TestLLMAgentHistory:
    @staticmethod
    def history(n: int) -> list[StoredMessage]:
        filler = "lorem ipsum dolor sit amet consectetur adipiscing elit " * 8
        return [
            StoredMessage(
                session_key=KEY,
                seq=i + 1,
                role=Role.CUSTOMER if i % 2 == 0 else Role.BOT,
                text=f"msg-{i:02d} {filler}",
                kind="message" if i % 2 == 0 else "answer",
                event_id=f"h{i}" if i % 2 == 0 else None,
                reply_to=None,
                citations=(),
                author=None,
                internal=False,
                created_at=utcnow(),
            )
            for i in range(n)
        ]

    async def test_short_history_is_sent_whole_as_chat_roles(self, llm: FakeOpenAI) -> None:
        llm.reply("ok")
        agent = LLMAgent(settings_for(llm), load_tools())
        await agent.respond(make_turn("next", history=self.history(4)))
        roles = [m["role"] for m in llm.requests[0]["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user"]

    async def test_human_agent_replies_are_assistant_turns(self, llm: FakeOpenAI) -> None:
        llm.reply("ok")
        history = [
            dataclasses.replace(self.history(1)[0], text="my VPN is down"),
            dataclasses.replace(
                self.history(2)[1], role=Role.AGENT, author="Sam", text="Restart it"
            ),
            dataclasses.replace(self.history(3)[2], internal=True, text="internal note"),
        ]
        agent = LLMAgent(settings_for(llm), load_tools())
        await agent.respond(make_turn("it works, thanks", history=history))
        dialogue = [
            {**m, "content": strip_markers(m["content"]).strip()}
            for m in llm.requests[0]["messages"][1:]
        ]
        assert dialogue == [
            {"role": "user", "content": "my VPN is down"},
            {"role": "assistant", "content": "(Sam, human support agent): Restart it"},
            {"role": "user", "content": "it works, thanks"},
        ]

    async def test_compaction_keeps_the_request_inside_the_window(self, llm: FakeOpenAI) -> None:
        llm.reply("ok")
        window, answer = 3000, 300  # room for a few history turns beside prompt and tools
        settings = settings_for(
            llm, llm_context_window_tokens=window, llm_max_answer_tokens=answer
        )
        agent = LLMAgent(settings, load_tools())
        await agent.respond(make_turn("What about Teams?", history=self.history(40)))

        request = llm.requests[0]
        prompt = litellm.token_counter(
            model="gpt-3.5-turbo", messages=request["messages"], tools=request["tools"]
        )
        assert prompt + request["max_tokens"] <= window
        messages = request["messages"]
        text = json.dumps(messages)
        assert messages[0]["role"] == "system"
        assert "Slack setup" in messages[0]["content"]  # sources kept
        assert strip_markers(messages[-1]["content"]).strip() == "What about Teams?"
        assert "msg-39" in text  # the latest history is kept
        dialogue = [m["content"] for m in messages if m["role"] in ("user", "assistant")]
        assert not any("msg-00" in c for c in dialogue)  # the oldest is dropped...
        digest = [m["content"] for m in messages[1:] if m["role"] == "system"]
        assert digest
        assert "older messages" in digest[0]  # ...and summarized


class TestLoadTools:
    def test_all_and_named(self) -> None:
        assert [t.name for t in load_tools()] == [
            "search_knowledge",
            "create_ticket",
            "get_ticket",
            "add_ticket_comment",
            "escalate_to_human",
            "lookup_customer",
        ]
        assert [t.name for t in load_tools(["escalate_to_human", "get_ticket"])] == [
            "escalate_to_human",
            "get_ticket",
        ]

    def test_unknown_name(self) -> None:
        with pytest.raises(ConfigError, match="nope"):
            load_tools(["nope"])

    def test_builtin_order_is_the_registry_order(self) -> None:
        assert tuple(t.name for t in builtin_tools()) == BUILTIN_TOOLS

    def test_no_entry_points_uses_the_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(agent_tools, "entry_points", lambda group: ())
        assert [type(t) for t in load_tools(fallback=builtin_tools)] == [
            type(t) for t in builtin_tools()
        ]
        assert [t.name for t in load_tools(["get_ticket"], fallback=builtin_tools)] == [
            "get_ticket"
        ]
        assert load_tools() == []
        with pytest.raises(ConfigError, match="get_ticket"):
            load_tools(["get_ticket"])


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("Do this [1].", "Do this."),
        ("Both [1][2], see [1, 3].", "Both, see."),
        ("Keep [a link](https://x) and [docs-id].", "Keep [a link](https://x) and [docs-id]."),
        ("See [1](https://x/1) [2].", "See [1](https://x/1)."),
    ],
)
def test_strip_citation_markers(text: str, clean: str) -> None:
    assert strip_citation_markers(text) == clean


# --- ExtractiveAgent ------------------------------------------------------------------------


def extractive(*passages: Passage) -> tuple[ExtractiveAgent, FixedRetriever]:
    retriever = FixedRetriever(list(passages))
    return ExtractiveAgent(Settings(data_dir=Path("/nonexistent")), retriever), retriever


class TestExtractiveAgent:
    async def test_confident_answer_quotes_the_passage_with_a_citation(self) -> None:
        agent, _ = extractive(SLACK, EMAIL)
        reply: AgentReply = await agent.respond(make_turn("How do I connect Slack?"))
        assert reply.escalate is None
        assert "**Slack setup**" in reply.text
        assert "paste the signing secret" in reply.text
        assert "IMAP" not in reply.text  # the unconfident passage is not quoted
        assert [c.doc_id for c in reply.citations] == ["channels-slack"]
        assert reply.actions == [TALK_TO_HUMAN]
        assert reply.usage_tokens == 0

    async def test_unconfident_escalates_no_answer(self) -> None:
        agent, _ = extractive(EMAIL)
        reply = await agent.respond(make_turn("Can I pay in bitcoin?"))
        assert (reply.text, reply.escalate, reply.citations) == ("", "no_answer", [])

    async def test_threshold_is_a_parameter(self) -> None:
        agent = ExtractiveAgent(
            Settings(data_dir=Path("/nonexistent")), FixedRetriever([EMAIL]), min_confidence=0.4
        )
        reply = await agent.respond(make_turn("email?"))
        assert reply.escalate is None
        assert "IMAP" in reply.text

    async def test_long_passages_are_trimmed(self) -> None:
        long = passage("guide", "A sentence about setup. " * 200, confidence=0.9)
        agent, _ = extractive(long)
        reply = await agent.respond(make_turn("setup"))
        assert 100 < len(reply.text) < 1000
        assert reply.text.endswith(".")

    @pytest.mark.parametrize("text", ["hi", "Hello there!", "thanks!", "Thank you so much"])
    async def test_small_talk_gets_a_friendly_reply(self, text: str) -> None:
        agent, retriever = extractive(EMAIL)
        reply = await agent.respond(make_turn(text))
        assert reply.text
        assert reply.escalate is None
        assert retriever.queries == []

    async def test_asking_for_a_person_escalates(self) -> None:
        agent, _ = extractive(SLACK)
        reply = await agent.respond(make_turn("I want to talk to a human"))
        assert reply.escalate == "customer_request"
