"""The handoff round trip through the real server, in real headless Chromium.

customer (REST) → bot answers → customer asks for a person → escalation → an agent logs in to
the console in Chromium, sees the conversation in the queue, claims it, replies → the customer
receives the reply on their channel → the customer writes again (the console shows it live, the
bot stays silent) → an internal note → resolve → the customer's next message is answered by the
bot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.agent import AgentReply, TurnInput
from bot.auth import add_agent
from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import SessionKey, session_key
from bot.hub import Hub
from bot.server import run_server
from tests.csp_watch import csp_violations, watch_csp

CHROMIUM = Path(os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BOT_ANSWER = "Open Settings → Account → Reset password, then follow the e-mail link."

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(90),
]


class ScriptedAgent:
    """Always gives the same answer; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def respond(self, turn: TurnInput) -> AgentReply:
        self.asked.extend(m.text for m in turn.messages)
        return AgentReply(text=BOT_ANSWER)


@dataclass
class Customer:
    """A REST channel client: posts messages and long-polls for replies."""

    http: aiohttp.ClientSession
    base: str
    conversation: str = "order-4411"
    seen: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "bot"

    @property
    def key(self) -> SessionKey:
        return session_key("rest", "default", chat=self.conversation)

    async def say(self, text: str) -> None:
        url = f"{self.base}/api/v1/conversations/{self.conversation}/messages"
        body = {"text": text, "user": {"id": "cust-7", "name": "Dana Customer"}}
        async with self.http.post(url, json=body) as resp:
            assert resp.status == 202, await resp.text()

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
    ) -> dict[str, Any]:
        """Long-poll until a new message matches; returns it."""
        url = f"{self.base}/api/v1/conversations/{self.conversation}/messages"
        async with asyncio.timeout(timeout_s):
            while True:
                after = self.seen[-1]["seq"] if self.seen else 0
                async with self.http.get(url, params={"after": after, "wait": 5}) as resp:
                    assert resp.status in (200, 404)
                    if resp.status == 404:
                        await asyncio.sleep(0.05)
                        continue
                    body: dict[str, Any] = await resp.json()
                self.mode = body["mode"]
                messages: list[dict[str, Any]] = body["messages"]
                for message in messages:
                    self.seen.append(message)
                    if match(message):
                        return message


@asynccontextmanager
async def serving(hub: Hub) -> AsyncIterator[str]:
    """Serve ``hub`` with :func:`bot.server.run_server` on a free loopback port; yields the base
    URL (``http://127.0.0.1:PORT``). On exit the server stops and the hub drains."""
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        run_server(hub, "127.0.0.1", 0, stop=stop, on_listening=port.set_result)
    )
    try:
        async with asyncio.timeout(20):
            bound = await asyncio.shield(port)
        yield f"http://127.0.0.1:{bound}"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(server, 20)


async def sign_in(page: Any, base: str, name: str, password: str) -> None:
    """Log ``name`` in on the console's page and wait until the app shows who is signed in."""
    from playwright.async_api import expect

    await page.goto(f"{base}/console/")
    await page.get_by_test_id("login-name").fill(name)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("agent-name")).not_to_be_empty()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Hub, ScriptedAgent, str]]:
    settings = Settings(data_dir=tmp_path / "data", debounce_ms=20, demo_site=False)
    agent = ScriptedAgent()
    hub = await build_hub(settings, agent=agent, load_knowledge=False)
    await add_agent(hub.store, "alice", "correct horse battery", "Alice")
    async with serving(hub) as base:
        yield hub, agent, base


async def test_handoff_round_trip_in_chromium(
    served: tuple[Hub, ScriptedAgent, str], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    hub, agent, base = served
    async with aiohttp.ClientSession() as http:
        customer = Customer(http, base)

        # 1. the bot answers
        await customer.say("How do I reset my password?")
        answer = await customer.wait_for(lambda m: m["role"] == "bot")
        assert answer["text"] == BOT_ANSWER

        # 2. the customer asks for a person: escalation, the customer is told
        await customer.say("This doesn't help. I want to talk to a real person please")
        notice = await customer.wait_for(lambda m: m["kind"] == "handoff")
        assert "person" in notice["text"]
        assert customer.mode == "queued"
        asked_before = list(agent.asked)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 820})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                csp = await watch_csp(page)

                # 3. the agent logs in and sees the conversation waiting
                await page.goto(f"{base}/console")
                await page.get_by_test_id("login-name").fill("alice")
                await page.get_by_test_id("login-password").fill("wrong password")
                await page.get_by_test_id("login-submit").click()
                await expect(page.get_by_test_id("login-error")).to_contain_text("Wrong")
                await page.get_by_test_id("login-password").fill("correct horse battery")
                await page.get_by_test_id("login-submit").click()
                await expect(page.get_by_test_id("agent-name")).to_have_text("Alice")
                await expect(page.get_by_test_id("live-status")).to_have_attribute(
                    "data-state", "live"
                )
                item = page.locator(
                    f'[data-testid="queue-item"][data-session-key="{customer.key}"]'
                )
                await expect(item).to_have_attribute("data-mode", "queued")
                await expect(item).to_contain_text("Dana Customer")
                await expect(item).to_contain_text("asked for a person")
                await expect(item.get_by_test_id("queue-wait")).to_have_text(re.compile(r"^\d+s$"))

                # 4. opens it: the transcript so far, then claims it
                await item.click()
                transcript = page.get_by_test_id("transcript")
                await expect(transcript).to_contain_text("How do I reset my password?")
                await expect(transcript).to_contain_text(BOT_ANSWER)
                await expect(page.get_by_test_id("send")).to_be_disabled()
                await page.screenshot(path=str(tmp_path / "queue.png"))
                await page.get_by_test_id("claim").click()
                await expect(page.get_by_test_id("conv-mode")).to_have_text("with you")
                await expect(item).to_have_attribute("data-mode", "human")

                # 5. replies; the customer receives it on the REST channel
                reply_text = "Hi Dana, I'm Alice. I have reset the link for you, check your inbox."
                await page.get_by_test_id("reply-text").fill(reply_text)
                await page.get_by_test_id("send").click()
                joined = await customer.wait_for(lambda m: m["role"] == "agent")
                if joined["text"] != reply_text:  # "Alice joined" notice is a system message
                    joined = await customer.wait_for(lambda m: m["role"] == "agent")
                assert joined["text"] == reply_text
                assert customer.mode == "human"
                assert any("Alice" in m["text"] and "joined" in m["text"] for m in customer.seen)

                # 6. the customer answers: the console shows it live, the bot stays silent
                await customer.say("Got it, thanks! <b>not bold</b>")
                await expect(transcript).to_contain_text("Got it, thanks! <b>not bold</b>")
                assert await page.locator(".msg-body b").count() == 0  # text, never markup

                # 7. an internal note: shown to agents, never to the customer
                await page.get_by_test_id("note-toggle").check()
                await page.get_by_test_id("reply-text").fill("Customer verified by e-mail.")
                await page.get_by_test_id("send").click()
                note = page.locator('[data-testid="msg"][data-kind="note"]')
                await expect(note).to_contain_text("Customer verified by e-mail.")
                await expect(note).to_contain_text("Internal note")
                await page.get_by_test_id("note-toggle").uncheck()
                await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

                # 8. resolve: back to the bot
                await page.get_by_test_id("resolve").click()
                await expect(page.get_by_test_id("conv-mode")).to_have_text("bot")
                await expect(item).to_have_count(0)
                assert errors == []
                # The console works under its CSP (no inline script, style or handler).
                assert await csp_violations(page, csp) == []
            finally:
                await browser.close()

        await customer.wait_for(lambda m: "handed you back" in m["text"])
        assert customer.mode == "bot"
        assert agent.asked == asked_before  # silent while a human owned the session
        assert all(m["kind"] != "note" for m in customer.seen)
        assert all("verified by e-mail" not in m["text"] for m in customer.seen)

        # 9. the customer's next message is answered by the bot again
        await customer.say("One more thing: how do I reset my password on mobile?")
        again = await customer.wait_for(lambda m: m["role"] == "bot")
        assert again["text"] == BOT_ANSWER
        conv = await hub.store.conversation(customer.key)
        assert conv is not None
        assert conv.ticket_id is not None
        ticket = await hub.tickets.get(conv.ticket_id)
        assert ticket is not None
        assert ticket.status == "solved"
        assert "How do I reset my password?" in ticket.description
