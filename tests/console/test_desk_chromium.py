"""The desk in real headless Chromium: a web chat escalates, an agent answers and resolves, the
customer rates the help, and the rating shows on the analytics page.

On the way: the bot's Markdown renders in the widget and in the console with nothing that runs
(``<img onerror>`` and a ``javascript:`` link stay inert), what a hostile customer types
(``<img onerror>``, ``<a href="javascript:...">``, ``<script>``) shows as plain text in both,
the copilot summarizes the conversation and suggests the best knowledge passage, a canned reply
is inserted with its placeholders filled, the conversation is found by search. With
``SWITCHBOARD_SCREENSHOTS=1`` the pages are saved to ``docs/images/`` for docs/console.md.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.agent import AgentReply, TurnInput
from bot.auth import add_agent
from bot.compose import build_hub
from bot.config import Settings
from bot.desk import csat
from bot.envelope import Citation
from bot.hub import Hub
from bot.store.base import AgentRole, SessionMode
from channels.webchat.translate import visitor_session_key
from tests.console.screens import shot
from tests.console.test_e2e_chromium import CHROMIUM, CHROMIUM_ARGS, serving
from tests.csp_watch import csp_violations, watch_csp
from tests.fakes.retriever import FixedRetriever, passage

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ATTACK = (
    "**Connect Slack** in three steps:\n\n- create the app\n- add the token\n- invite the bot\n\n"
    '<img src=x onerror="window.__xss=1"> [click me](javascript:window.__xss=2) '
    "[guide](https://docs.example.com/slack)"
)
PASSAGE = "Invite the bot to the channel with /invite @Switchboard, then mention it in a thread."
TYPED = (
    '<img src=x onerror="window.__xss=3"> <a href="javascript:window.__xss=4">see</a> '
    "[here](javascript:window.__xss=5) <script>window.__xss=6</script>"
)
"""What a hostile customer types: shown as text, never as markup, in the widget and console."""


async def assert_shown_as_text(page: Any, message: Any) -> None:
    """The customer's hostile text is on screen character for character and nothing of it runs."""
    await message.wait_for()
    assert TYPED in await message.inner_text()
    assert await message.locator("img, a, script").count() == 0
    await message.click()
    await page.wait_for_timeout(100)
    assert await page.evaluate("window.__xss === undefined")


class MarkdownAgent:
    """Answers every question with :data:`ATTACK` (Markdown with hostile HTML and a link)."""

    async def respond(self, turn: TurnInput) -> AgentReply:
        return AgentReply(
            text=ATTACK,
            citations=[Citation(doc_id="slack", title="Slack setup", url="https://d.example/s")],
        )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Hub, str]]:
    settings = Settings(data_dir=tmp_path / "data", debounce_ms=20, demo_site=True)
    retriever = FixedRetriever([passage("slack-threads", PASSAGE, title="Slack threads")])
    hub = await build_hub(settings, agent=MarkdownAgent(), retriever=retriever)
    await add_agent(hub.store, "root", "correct horse battery", "Alice", role=AgentRole.ADMIN)
    await hub.handoff.desk.save_canned(
        shortcut="greet",
        title="Greeting",
        body="Hi {customer.name}, {agent.name} here. I'm looking at your Slack setup now.",
        actor="root",
    )
    async with serving(hub) as base:
        yield hub, base


async def assert_inert(page: Any, scope: Any) -> None:
    """Formatting rendered, hostile markup inert: no image, no script URL, the flag unset."""
    await scope.locator("strong", has_text="Connect Slack").first.wait_for()
    assert await scope.locator("img").count() == 0
    assert await scope.locator('a[href^="javascript" i]').count() == 0
    hrefs = await scope.locator("a").evaluate_all("as => as.map(a => a.href)")
    assert "https://docs.example.com/slack" in hrefs
    assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs
    link = scope.locator("text=click me").first
    await link.click()  # plain text: clicking it runs nothing
    await page.wait_for_timeout(100)
    assert await page.evaluate("window.__xss === undefined")


async def test_web_chat_to_csat_on_the_analytics_page(served: tuple[Hub, str]) -> None:
    from playwright.async_api import async_playwright, expect

    hub, base = served
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            errors: list[str] = []
            widget = await browser.new_page(viewport={"width": 1100, "height": 760})
            widget.on("pageerror", lambda exc: errors.append(str(exc)))
            widget_csp = await watch_csp(widget)
            console = await browser.new_page(viewport={"width": 1400, "height": 900})
            console.on("pageerror", lambda exc: errors.append(str(exc)))
            console_csp = await watch_csp(console)

            # 1. The customer asks in the widget; the bot's Markdown renders, inertly.
            await widget.goto(f"{base}/")
            await widget.get_by_role("button", name="Open chat").click()
            await widget.get_by_label("Message").fill("How do I connect Slack?")
            await widget.get_by_label("Message").press("Enter")
            answer = widget.locator('.sbw-msg[data-role="bot"]')
            await expect(answer).to_have_count(1)
            await assert_inert(widget, answer)
            await expect(answer.locator("li")).to_have_count(3)
            visitor = await widget.evaluate("window.SwitchboardChat.visitor()")
            key = visitor_session_key(visitor)
            await widget.get_by_role("button", name="Talk to a person").first.click()
            await expect(widget.locator(".sbw-status")).to_have_text("waiting for a person…")
            await widget.get_by_label("Message").fill(TYPED)
            await widget.get_by_label("Message").press("Enter")
            typed = widget.locator(".sbw-customer", has_text="onerror").last
            await assert_shown_as_text(widget, typed)

            # 2. The agent opens it: Markdown inert in the console too, the copilot on top.
            await console.goto(f"{base}/console")
            await expect(console.get_by_test_id("login-form")).to_be_visible()
            await shot(console, "console-login.png")
            await console.get_by_test_id("login-name").fill("root")
            await console.get_by_test_id("login-password").fill("correct horse battery")
            await console.get_by_test_id("login-submit").click()
            item = console.locator(f'[data-testid="queue-item"][data-session-key="{key}"]')
            await item.click()
            bot_msg = console.locator('[data-testid="msg"][data-role="bot"]')
            await expect(bot_msg).to_have_count(1)
            await assert_inert(console, bot_msg)
            typed_msg = console.locator(
                '[data-testid="msg"][data-role="customer"]', has_text="onerror"
            )
            await expect(typed_msg).to_have_count(1)
            await assert_shown_as_text(console, typed_msg)
            copilot = console.get_by_test_id("copilot")
            await expect(copilot.get_by_test_id("copilot-wants")).to_have_text(
                "How do I connect Slack?"
            )
            await expect(copilot.get_by_test_id("copilot-tried")).to_contain_text(
                "Connect Slack in three steps:"
            )
            await expect(copilot).to_contain_text("Slack setup")  # the bot's source
            await expect(copilot.get_by_test_id("copilot-suggestion")).to_have_text(PASSAGE)
            await console.get_by_test_id("claim").click()
            await expect(console.get_by_test_id("conv-mode")).to_have_text("with you")
            await shot(console, "console-copilot.png")

            # 3. The suggestion goes into the reply box to be edited; then a canned reply.
            reply = console.get_by_test_id("reply-text")
            await console.get_by_test_id("copilot-use").click()
            await expect(reply).to_have_value(PASSAGE)
            await reply.fill("/gre")
            menu_item = console.locator('[data-testid="canned-item"][data-shortcut="greet"]')
            await expect(menu_item).to_be_visible()
            await shot(console, "console-canned.png")
            await reply.press("Enter")
            name = re.compile(r"^Hi there, Alice here\. I.m looking")
            await expect(reply).to_have_value(name)
            await reply.press("Enter")  # sends
            agent_msg = widget.locator('.sbw-msg[data-role="agent"]')
            await expect(agent_msg).to_contain_text("Alice here")

            # 4. Resolved: the widget asks for a rating; the customer presses 4.
            await console.get_by_test_id("resolve").click()
            await expect(console.get_by_test_id("conv-mode")).to_have_text("bot")
            await expect(widget.locator(".sbw-notice").last).to_have_text(csat.PROMPT)
            buttons = widget.locator(".sbw-actions button")
            await expect(buttons).to_have_count(5)
            await shot(widget, "widget-csat.png")
            await buttons.nth(3).click()
            await expect(widget.locator(".sbw-notice").last).to_have_text(csat.THANKS)
            conv = await hub.store.conversation(key)
            assert conv is not None
            assert conv.mode == SessionMode.BOT

            # 5. Search finds it; the analytics page shows the rating.
            await console.get_by_test_id("search-open").click()
            await console.get_by_test_id("search-text").fill("slack")
            await console.get_by_test_id("search-status").select_option("bot")
            await console.get_by_test_id("search-submit").click()
            result = console.locator(f'[data-testid="search-result"][data-session-key="{key}"]')
            await expect(result).to_contain_text("looking at your Slack setup")  # newest match
            await shot(console, "console-search.png")
            await console.get_by_test_id("canned-open").click()
            await expect(console.get_by_test_id("canned-row")).to_have_count(1)
            await shot(console, "console-canned-admin.png")
            await console.get_by_test_id("agents-open").click()
            await expect(console.get_by_test_id("agent-row")).to_have_count(1)
            await shot(console, "console-agents.png")

            await console.goto(f"{base}/console/analytics")
            await expect(console.get_by_test_id("kpi-csat")).to_have_text("4.0 (1)")
            await expect(console.get_by_test_id("kpi-conversations")).to_have_text("1")
            await expect(console.get_by_test_id("kpi-bot-rate")).to_have_text("0%")
            await expect(console.locator("body")).to_have_attribute("data-loaded", "true")
            assert await console.evaluate("typeof window.Chart") == "function"
            await shot(console, "analytics.png", full_page=True)
            assert errors == []
            assert await csp_violations(widget, widget_csp) == []
            assert await csp_violations(console, console_csp) == []
        finally:
            await browser.close()
    now = hub.handoff.desk
    ratings = await now.ratings(
        since=conv.created_at.replace(year=2000), until=conv.updated_at.replace(year=2100)
    )
    assert [(r.agent, r.rating) for r in ratings] == [("root", 4)]
