"""``lookup_customer`` inside an LLM turn (fake OpenAI server): the model is told when the CRM
is down, and the turn still ends with an answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from bot.agent.base import TurnInput
from bot.agent.llm import LLMAgent
from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import InboundMessage
from bot.privacy.injection import strip_markers
from bot.store.base import StoredMessage
from channels.memory.plugin import MemoryChannel
from plugins.crm.hubspot import HubSpotCrm
from plugins.crm.tools import LookupCustomer
from tests.fakes.crm_base import closed_port
from tests.fakes.hubspot_api import FakeHubSpot
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.tickets import MemoryTickets
from tests.plugins.crm.contract import ALICE, SESSION, crm_settings, ctx_for


async def test_crm_down_the_model_is_told_and_the_turn_goes_on() -> None:
    down = HubSpotCrm(
        crm_settings(
            hubspot_access_token=SecretStr("pat-x"),
            hubspot_api_url=f"http://127.0.0.1:{closed_port()}",
        )
    )
    async with FakeOpenAI() as llm:
        llm.reply(tool_calls=[("lookup_customer", {})])
        llm.reply(text="I cannot see your account right now; a colleague can help.")
        settings = Settings(
            llm_model="openai/test-model",
            llm_api_base=llm.base_url,
            llm_api_key=SecretStr("sk-test"),
            llm_max_retries=0,
            data_dir=Path("/nonexistent"),
        )
        agent = LLMAgent(settings, [LookupCustomer()])

        async def no_history() -> Sequence[StoredMessage]:
            return []

        message = InboundMessage(
            event_id="e1",
            channel="rest",
            account="default",
            session_key=SESSION,
            sender=ALICE,
            text="which plan am I on?",
        )
        reply = await agent.respond(
            TurnInput(
                session_key=SESSION,
                channel="rest",
                customer=ALICE,
                messages=[message],
                overflow=[],
                history=no_history,
                tools=ctx_for(ALICE, down, MemoryTickets()),
            )
        )
    assert reply.text == "I cannot see your account right now; a colleague can help."
    assert reply.escalate is None
    [tool_message] = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_message["content"].startswith('<<data source="tool_output"')  # marked as data
    told = json.loads(strip_markers(tool_message["content"]))
    assert told["error"] == "failed"
    assert "CRM is unavailable" in told["message"]


async def test_hub_wires_the_configured_crm_into_the_agents_tools(tmp_path: Path) -> None:
    """``crm_backend: hubspot`` in settings → build_hub → router → ToolContext → the tool."""
    async with FakeOpenAI() as llm, FakeHubSpot() as hubspot:
        hubspot.add("contacts", firstname="Max", lastname="Mem", switchboard_id="memory:u-9")
        llm.reply(tool_calls=[("lookup_customer", {})])
        llm.reply(text="Hello Max.")
        settings = Settings(
            data_dir=tmp_path,
            sample_kb=False,
            debounce_ms=10,
            llm_model="openai/test-model",
            llm_api_base=llm.base_url,
            llm_api_key=SecretStr("sk-test"),
            llm_max_retries=0,
            crm_backend="hubspot",
            hubspot_access_token=SecretStr(hubspot.token),
            hubspot_api_url=hubspot.base_url,
            crm_platform_id_field="switchboard_id",
        )
        channel = MemoryChannel(settings)
        hub = await build_hub(settings, channels=[channel], load_knowledge=False)
        await hub.start()
        try:
            await channel.push_message("who am I?", user_id="u-9")
            reply = await channel.pop_message(timeout_s=30.0)
        finally:
            await hub.stop(timeout_s=5.0)
    assert reply.text == "Hello Max."
    offered = [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert "lookup_customer" in offered
    [tool_message] = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert json.loads(strip_markers(tool_message["content"]))["name"] == "Max Mem"
    [search] = hubspot.requests_to("/contacts/search")
    assert search.body["filterGroups"][0]["filters"][0]["value"] == "memory:u-9"
