"""Streamed answers on Slack, end to end: signed events into a served hub, the real LLMAgent
(litellm) streaming from the fake OpenAI server, the real Slack plugin editing one message on
the fake Slack Web API."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from bot.agent import LLMAgent, load_tools
from bot.compose import build_hub
from bot.envelope import OutboundMessage
from bot.hub import Hub
from channels.memory.pytest_plugin import make_settings
from channels.slack.plugin import SlackChannel
from channels.slack.render import STREAMING_BLOCK_ID, to_mrkdwn
from tests.channels.slack.harness import (
    DM_CHANNEL,
    Client,
    dm,
    event_callback,
    post_signed,
    slack_settings,
)
from tests.channels.support import serve_hub
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.retriever import FixedRetriever, passage
from tests.fakes.slack_api import ApiCall, FakeSlackApi

SETUP = passage(
    "channels-slack",
    "To connect Slack, create a Slack app, enable Event Subscriptions and paste the signing "
    "secret into the Switchboard configuration.",
    title="Slack setup",
    url="https://docs.example/slack",
    confidence=0.82,
)
ANSWER = (
    "To connect Slack, **create a Slack app** in your workspace, turn on *Event Subscriptions* "
    "with the request URL of your hub, and paste the app's signing secret into the "
    "configuration [1]. Then invite the bot to a channel & mention it."
)
FINAL = ANSWER.replace(" [1]", "")

StreamingHub = Callable[..., Awaitable[tuple[Hub, Client]]]


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest_asyncio.fixture
async def streaming_hub(
    tmp_path: Path, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> AsyncIterator[StreamingHub]:
    """``await streaming_hub(**overrides) -> (hub, client)``: LLMAgent + Slack, served."""
    stack: list[tuple[Hub, Any]] = []

    async def make(**overrides: Any) -> tuple[Hub, Client]:
        values: dict[str, Any] = {
            "llm_model": "openai/test-model",
            "llm_api_base": llm.base_url,
            "llm_api_key": "sk-test",
            "llm_max_retries": 0,
            "llm_timeout_s": 5.0,
            "stream_interval_s": 0.05,
            **slack_settings(slack_api),
            **overrides,
        }
        settings = make_settings(tmp_path / f"hub{len(stack)}", **values)
        settings.data_dir.mkdir(parents=True)
        hub = await build_hub(
            settings,
            agent=LLMAgent(settings, load_tools()),
            retriever=FixedRetriever([SETUP]),
            channels=[SlackChannel(settings)],
            load_knowledge=False,
        )
        await hub.start()
        cm = serve_hub(hub)
        client = await cm.__aenter__()
        stack.append((hub, cm))
        return hub, client

    yield make
    for hub, cm in reversed(stack):
        await cm.__aexit__(None, None, None)
        await hub.stop(timeout_s=2.0)


def has_block(call: ApiCall, block_id: str) -> bool:
    return any(b.get("block_id") == block_id for b in call.blocks)


def is_final(call: ApiCall) -> bool:
    return has_block(call, "switchboard.actions")


async def ask(client: Client, text: str, event_id: str) -> None:
    status, body = await post_signed(client, event_callback(dm(text), event_id=event_id))
    assert status == 200, body


async def final_answer(api: FakeSlackApi, timeout_s: float = 20.0) -> ApiCall:
    """Wait for the message that carries the answer's buttons (the final rendering).

    The wait ends as soon as it is there; the bound only has to hold on a loaded machine.
    """
    await api.wait_until(lambda: any(is_final(c) for c in api.calls), timeout_s)
    await asyncio.sleep(0.2)  # anything sent after the final answer would show up by now
    return next(c for c in api.calls if is_final(c))


async def test_the_answer_is_posted_once_then_edited_into_the_final_answer(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub()
    llm.reply(ANSWER, chunk_delay_s=0.01)
    await ask(client, "How do I connect Slack?", "EvStream1")

    final = await final_answer(slack_api)

    [post] = slack_api.of("chat.postMessage")
    updates = slack_api.of("chat.update")
    assert llm.requests[0]["stream"] is True
    assert post.channel == DM_CHANNEL
    assert has_block(post, STREAMING_BLOCK_ID)  # shown as "writing…"
    assert post.button_ids == []
    assert FINAL.startswith(post.args["text"].split("*")[0])
    assert len(updates) >= 2  # at least one partial edit, then the final one
    assert all(u.args["ts"] == post.result["ts"] and u.channel == DM_CHANNEL for u in updates)
    assert updates[-1] is final
    assert final.section_text == to_mrkdwn(FINAL)
    assert "&amp;" in final.section_text  # rendered as mrkdwn, escaped
    assert not has_block(final, STREAMING_BLOCK_ID)
    assert has_block(final, "switchboard.citations")
    assert "Slack setup" in str(final.blocks)
    assert final.button_ids == ["handoff.request"]
    payload = final.metadata["event_payload"]
    assert payload["idempotency_key"] == "answer:EvStream1"
    assert [c["doc_id"] for c in payload["citations"]] == ["channels-slack"]
    partials = [len(u.section_text) for u in updates[:-1]]
    assert partials == sorted(partials)  # partial edits only ever grow


async def test_a_long_stream_makes_far_fewer_edits_than_chunks(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub(stream_interval_s=0.1)
    text = " ".join(f"Step {i}: open the settings page and check the value." for i in range(12))
    chunks = len(text) // 7
    llm.reply(text, chunk_delay_s=0.008)
    await ask(client, "Walk me through it", "EvStream2")

    await final_answer(slack_api)

    assert len(slack_api.of("chat.postMessage")) == 1
    partial_updates = [u for u in slack_api.of("chat.update") if not is_final(u)]
    edits = 1 + len(partial_updates)  # the post, then the partial edits
    assert chunks > 80
    assert 2 <= edits <= chunks / 5
    times = [c.at for c in slack_api.calls if c.method in ("chat.postMessage", "chat.update")]
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the final edit is not throttled
    assert min(gaps) >= 0.08  # 0.1 s between starts, minus the jitter of answer times


async def test_a_429_on_a_partial_edit_does_not_hold_or_lose_the_final_answer(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub()
    slack_api.fail_next("chat.update", 429, retry_after=30.0)
    llm.reply(ANSWER, chunk_delay_s=0.01)
    await ask(client, "How do I connect Slack?", "EvStream3")

    final = await final_answer(slack_api, timeout_s=15.0)  # < 30 s: the pause is partial-only

    assert len(slack_api.of("chat.postMessage")) == 1
    assert final.method == "chat.update"
    assert final.section_text == to_mrkdwn(FINAL)
    assert has_block(final, "switchboard.citations")
    # after the 429 no partial edit was tried: the only successful update is the final one
    assert slack_api.of("chat.update") == [final]


async def test_a_429_on_the_final_edit_is_retried_by_the_hub(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub(stream_interval_s=60.0)  # only the first post streams
    llm.reply(ANSWER, chunk_delay_s=0.005)
    await ask(client, "How do I connect Slack?", "EvStream4")
    await slack_api.wait_for("chat.postMessage")
    slack_api.fail_next("chat.update", 429, retry_after=0.2)

    final = await final_answer(slack_api)

    assert len(slack_api.of("chat.postMessage")) == 1
    assert slack_api.of("chat.update") == [final]
    assert final.section_text == to_mrkdwn(FINAL)


async def test_a_long_final_answer_edits_the_first_part_and_posts_the_rest(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub()
    paragraphs = [
        f"Paragraph {i}. " + "All good things take a while to write. " * 12 for i in range(10)
    ]
    llm.reply("\n\n".join(paragraphs), chunk_delay_s=0.0)
    await ask(client, "Tell me everything", "EvStream5")

    last = await final_answer(slack_api)

    posts = slack_api.of("chat.postMessage")
    first_ts = posts[0].result["ts"]
    final_edit = [u for u in slack_api.of("chat.update") if not has_block(u, STREAMING_BLOCK_ID)]
    assert len(posts) == 2  # the streamed message, then the second part
    assert has_block(posts[0], STREAMING_BLOCK_ID)
    assert [u.args["ts"] for u in final_edit] == [first_ts]
    assert final_edit[0].section_text.startswith("Paragraph 0.")
    assert last is posts[1]
    assert last.section_text.rstrip().endswith("write.")
    assert last.metadata["event_payload"]["part"] == 1


async def test_streaming_off_posts_the_answer_once(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub(llm_stream=False)
    llm.reply(ANSWER, chunk_delay_s=0.01)
    await ask(client, "How do I connect Slack?", "EvStream6")

    final = await final_answer(slack_api)

    assert not llm.requests[0].get("stream")
    assert slack_api.of("chat.postMessage") == [final]
    assert slack_api.of("chat.update") == []


async def test_an_escalation_removes_the_partial_message(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub()
    llm.reply(
        "Let me check this with the billing team for you.",
        tool_calls=[("escalate_to_human", {"reason": "refund", "summary": "wants a refund"})],
    )
    llm.reply("")
    await ask(client, "I want a refund", "EvStream7")

    [deleted] = await slack_api.wait_for("chat.delete")
    posts = slack_api.of("chat.postMessage")
    assert has_block(posts[0], STREAMING_BLOCK_ID)
    assert deleted.args["ts"] == posts[0].result["ts"]
    assert deleted.channel == DM_CHANNEL
    notices = [p for p in posts[1:] if p.metadata["event_payload"]["kind"] == "handoff"]
    assert len(notices) == 1  # the customer is told, in a message of its own
    assert all(has_block(u, STREAMING_BLOCK_ID) for u in slack_api.of("chat.update"))


async def test_a_resumed_stream_edits_the_same_message_even_in_another_process(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    hub, client = await streaming_hub()
    llm.reply("Hello! How can I help?")
    await ask(client, "hello", "EvSeed")  # the conversation exists from here on
    await final_answer(slack_api)
    [conv] = await hub.store.conversations()
    first = hub.channels["slack"]
    assert isinstance(first, SlackChannel)
    partial = OutboundMessage(
        session_key=conv.session_key, text="Half an answer", idempotency_key="answer:X"
    )
    await first.stream(partial)  # then this process dies

    other = SlackChannel(hub.settings)  # another process resumes the turn
    await other.start(hub)
    again = SlackChannel(hub.settings)  # and a third one gets the turn redelivered late
    await again.start(hub)
    try:
        await other.stream(partial.model_copy(update={"text": "Half an answer, then more of it"}))
        await other.send(partial.model_copy(update={"text": "The whole answer."}))
        await again.stream(partial.model_copy(update={"text": "Half an answer again"}))
        await again.discard_stream(partial)
    finally:
        await other.stop()
        await again.stop()

    [post] = [p for p in slack_api.of("chat.postMessage") if "answer:X" in str(p.metadata)]
    updates = [u for u in slack_api.of("chat.update") if u.args["ts"] == post.result["ts"]]
    assert len(updates) == 2
    assert updates[-1].section_text == "The whole answer."
    assert not has_block(updates[-1], STREAMING_BLOCK_ID)
    assert slack_api.of("chat.delete") == []


async def test_a_final_answer_sent_from_another_process_edits_the_streamed_message(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    """The outbox, or a resumed turn that did not stream, sends from a process that never
    streamed this answer: it still edits the partial message instead of posting beside it."""
    hub, client = await streaming_hub()
    llm.reply("Hello! How can I help?")
    await ask(client, "hello", "EvSeed")
    await final_answer(slack_api)
    [conv] = await hub.store.conversations()
    first = hub.channels["slack"]
    assert isinstance(first, SlackChannel)
    partial = OutboundMessage(
        session_key=conv.session_key, text="Half an answer", idempotency_key="answer:Y"
    )
    await first.stream(partial)  # then this process dies

    other = SlackChannel(hub.settings)
    await other.start(hub)
    try:
        await other.send(partial.model_copy(update={"text": "The whole answer."}))
    finally:
        await other.stop()

    posts = [p for p in slack_api.of("chat.postMessage") if "answer:Y" in str(p.metadata)]
    assert len(posts) == 1  # the partial; the final answer was not posted beside it
    updates = [u for u in slack_api.of("chat.update") if u.args["ts"] == posts[0].result["ts"]]
    assert len(updates) == 1
    assert updates[0].section_text == "The whole answer."
    assert not has_block(updates[0], STREAMING_BLOCK_ID)


async def test_a_streamed_message_deleted_meanwhile_gets_the_final_answer_posted_anew(
    streaming_hub: StreamingHub, llm: FakeOpenAI, slack_api: FakeSlackApi
) -> None:
    _, client = await streaming_hub(stream_interval_s=60.0)  # only the first post streams
    llm.reply(ANSWER, chunk_delay_s=0.005)
    await ask(client, "How do I connect Slack?", "EvStream8")
    await slack_api.wait_for("chat.postMessage")
    slack_api.refuse_next("chat.update", "message_not_found")  # someone deleted it

    final = await final_answer(slack_api)

    partial, again = slack_api.of("chat.postMessage")
    assert has_block(partial, STREAMING_BLOCK_ID)
    assert again is final
    assert final.section_text == to_mrkdwn(FINAL)
    assert slack_api.of("chat.update") == []
