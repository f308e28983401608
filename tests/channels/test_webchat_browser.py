"""The web chat widget in real headless Chromium, on the demo page of a real served hub.

Covers what only a browser shows: the widget mounts on the demo page, answers render Markdown
safely (markup in text stays text), citations are links, the connection comes back after the
server drops it and shows what was missed exactly once, the visitor keeps their conversation
across a reload, and "Talk to a person" reaches the human queue.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.agent import AgentReply, TurnInput
from bot.envelope import Citation, OutboundKind, OutboundMessage
from bot.store.base import SessionMode
from channels.memory.pytest_plugin import HubFactory, ScriptedAgent
from channels.webchat.plugin import WebchatChannel
from channels.webchat.translate import visitor_session_key
from tests.channels.support import serve_hub
from tests.csp_watch import csp_violations, watch_csp

CHROMIUM = Path(os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(90),
]


def markdown_reply(turn: TurnInput) -> AgentReply:
    question = turn.messages[-1].text
    return AgentReply(
        text=(
            f"You asked: {question}\n\n**Connect Slack** in three steps:\n\n"
            "- create the app at https://api.slack.com/apps.\n"
            "- add the token\n- invite the bot\n\n"
            "<img src=x onerror=alert(1)> [guide](https://docs.example.com/slack) "
            "[bad](javascript:alert(1))"
        ),
        citations=[
            Citation(doc_id="channels/slack", title="Slack setup", url="https://d.example/slack")
        ],
    )


async def test_widget_in_chromium(hub_factory: HubFactory, scripted_agent: ScriptedAgent) -> None:
    from playwright.async_api import async_playwright, expect

    scripted_agent.reply_fn = markdown_reply
    hub = await hub_factory(channels=(WebchatChannel,), bot_name="Sparky")
    channel = hub.channels["webchat"]
    async with serve_hub(hub) as client, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
            csp = await watch_csp(page)
            await page.goto(str(client.make_url("/")))
            await page.get_by_role("button", name="Open chat").click()
            await page.get_by_label("Message").fill("How do I connect Slack?")
            await page.get_by_label("Message").press("Enter")

            answer = page.locator('.sbw-msg[data-role="bot"]')
            await expect(answer).to_have_count(1)
            await expect(answer).to_contain_text("Connect Slack")
            await expect(answer.locator(".sbw-who")).to_have_text("Sparky")
            await expect(answer.locator("strong")).to_have_text("Connect Slack")
            await expect(answer.locator("li")).to_have_count(3)
            await expect(answer.locator('a[href="https://api.slack.com/apps"]')).to_have_count(1)
            await expect(answer.locator("img")).to_have_count(0)
            await expect(answer).to_contain_text("<img src=x onerror=alert(1)>")
            await expect(answer.locator('a[href^="javascript"]')).to_have_count(0)
            cite = answer.locator('.sbw-cites a[data-doc-id="channels/slack"]')
            await expect(cite).to_have_attribute("href", "https://d.example/slack")
            mine = page.locator('.sbw-msg[data-role="customer"], .sbw-customer')
            await expect(mine).to_have_count(1)
            await expect(mine).not_to_have_class("sbw-pending")

            visitor = await page.evaluate("window.SwitchboardChat.visitor()")
            key = visitor_session_key(visitor)

            # The server drops the socket; an agent reply lands while the widget is away.
            await channel.stop()
            await hub.deliver(
                OutboundMessage(
                    session_key=key,
                    text="Ann here, I'm looking into it.",
                    kind=OutboundKind.AGENT,
                    author="Ann",
                    idempotency_key="ann-1",
                )
            )
            agent_msg = page.locator('.sbw-msg[data-role="agent"]')
            await expect(agent_msg).to_have_count(1, timeout=10_000)
            await expect(agent_msg.locator(".sbw-who")).to_have_text("Ann")
            seqs = await page.locator(".sbw-log [data-seq]").evaluate_all(
                "els => els.map(e => Number(e.dataset.seq))"
            )
            assert seqs == [1, 2, 3]

            # A reload keeps the visitor and replays the conversation once.
            await page.reload()
            await page.get_by_role("button", name="Open chat").click()
            await expect(page.locator(".sbw-log [data-seq]")).to_have_count(3)
            assert await page.evaluate("window.SwitchboardChat.visitor()") == visitor

            # "Talk to a person" puts the session on the human queue and says so.
            await page.get_by_role("button", name="Talk to a person").first.click()
            await expect(page.locator(".sbw-status")).to_have_text("waiting for a person…")
            await expect(page.locator(".sbw-notice")).to_have_count(1)
            conv = await hub.store.conversation(key)
            assert conv is not None
            assert conv.mode == SessionMode.QUEUED
            assert errors == []
            # The demo page and the widget work under the hub's CSP (no inline style/script).
            assert await csp_violations(page, csp) == []
        finally:
            await browser.close()
