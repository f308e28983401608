"""Assignment and SLAs in real headless Chromium.

An escalation is auto-assigned to the online agent with capacity and shows in that agent's
console; an SLA breach of a short policy appears in the console after its deadline; an agent
sees the teams page read-only while an admin edits it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.auth import add_agent
from bot.business_hours import WEEKDAYS
from bot.compose import build_hub
from bot.config import Settings
from bot.hub import Hub
from bot.store.base import AgentRole, SessionMode
from tests.console.screens import shot
from tests.console.test_e2e_chromium import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Customer,
    ScriptedAgent,
    serving,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

PASSWORD = "correct horse battery"


@pytest.fixture
async def fast_hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, str]]:
    """A served hub whose assignment sweeper runs every 0.2 s."""
    settings = Settings(
        data_dir=tmp_path / "data", debounce_ms=20, demo_site=False, assignment_sweep_s=0.2
    )
    hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False)
    await add_agent(hub.store, "alice", PASSWORD, "Alice")
    await add_agent(hub.store, "bob", PASSWORD, "Bob")
    await add_agent(hub.store, "root", PASSWORD, "Root", role=AgentRole.ADMIN)
    async with serving(hub) as base:
        yield hub, base


async def _login(browser: Any, base: str, name: str, errors: list[str]) -> Any:
    context = await browser.new_context()  # a cookie jar of its own
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, base, name, PASSWORD)
    return page


async def _escalate(base: str, conversation: str) -> Customer:
    async with aiohttp.ClientSession() as http:
        customer = Customer(http, base, conversation=conversation)
        await customer.say("I want to talk to a real person please")
        await customer.wait_for(lambda m: m["kind"] == "handoff")
        return customer


async def test_escalation_goes_to_the_online_agent_and_shows_in_her_console(
    fast_hub: tuple[Hub, str],
) -> None:
    from playwright.async_api import async_playwright, expect

    hub, base = fast_hub
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            alice = await _login(browser, base, "alice", errors)
            bob = await _login(browser, base, "bob", errors)
            await expect(alice.get_by_test_id("presence-select")).to_have_value("offline")
            await alice.get_by_test_id("presence-select").select_option("online")
            await expect(alice.get_by_test_id("presence-select")).to_have_attribute(
                "data-presence", "online"
            )
            # Bob stays offline: the conversation is Alice's.
            customer = await _escalate(base, "c-assign")
            mine = alice.get_by_test_id("queue-active").get_by_test_id("queue-item")
            await expect(mine).to_have_count(1)
            await expect(mine.get_by_test_id("queue-owner")).to_have_text("you")
            theirs = bob.get_by_test_id("queue-active").get_by_test_id("queue-item")
            await expect(theirs.get_by_test_id("queue-owner")).to_have_text("alice")
            await expect(alice.get_by_test_id("count-queued")).to_have_text("0")
            conv = await hub.store.conversation(customer.key)
            assert conv is not None
            assert (conv.mode, conv.assigned_agent) == (SessionMode.HUMAN, "alice")
            # She answers straight away.
            await mine.click()
            await alice.get_by_test_id("reply-text").fill("Hi, Alice here.")
            await alice.get_by_test_id("send").click()
            await expect(alice.get_by_test_id("transcript")).to_contain_text("Alice here")
            # Bob comes online; Alice transfers the conversation to him.
            await bob.get_by_test_id("presence-select").select_option("online")
            await expect(bob.get_by_test_id("presence-select")).to_have_attribute(
                "data-presence", "online"
            )
            await alice.reload()  # the transfer list reads who is online when the page opens
            await expect(alice.get_by_test_id("transfer-select")).to_be_visible()
            await alice.get_by_test_id("transfer-select").select_option("agent:bob")
            await expect(bob.get_by_test_id("queue-owner")).to_have_text("you")
            conv = await hub.store.conversation(customer.key)
            assert conv is not None
            assert conv.assigned_agent == "bob"
            assert errors == []
        finally:
            await browser.close()


async def test_sla_breach_appears_after_its_deadline(fast_hub: tuple[Hub, str]) -> None:
    from playwright.async_api import async_playwright, expect

    _hub, base = fast_hub
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            await _escalate(base, "c-early")  # before any policy: no clock, waits longest
            admin = await _login(browser, base, "root", errors)
            await admin.get_by_test_id("teams-open").click()
            await admin.get_by_test_id("sla-name").fill("test-policy")
            await admin.get_by_test_id("sla-first").fill("2")
            await admin.get_by_test_id("sla-resolution").fill("3600")
            await admin.get_by_test_id("sla-escalate").select_option("urgent")
            await admin.get_by_test_id("sla-submit").click()
            await expect(admin.get_by_test_id("sla-row")).to_contain_text("raise to urgent")
            await admin.get_by_test_id("teams-close").click()

            agent = await _login(browser, base, "bob", errors)
            await _escalate(base, "c-sla")  # nobody online: it waits, the clock runs
            waiting = agent.get_by_test_id("queue-waiting").get_by_test_id("queue-item")
            await expect(waiting).to_have_count(2)
            await expect(waiting.first.get_by_test_id("sla-left")).to_have_count(0)  # c-early
            item = waiting.filter(has=agent.get_by_test_id("sla-left"))
            await expect(item.get_by_test_id("sla-left")).to_contain_text("left")
            await expect(item.get_by_test_id("sla-breach")).to_contain_text(
                "first response", timeout=10_000
            )
            await expect(item.get_by_test_id("sla-left")).to_contain_text("late")
            await expect(item.get_by_test_id("queue-priority")).to_have_text("urgent")
            # Urgent now: it moves above the conversation that waited longer.
            await expect(waiting.first.get_by_test_id("queue-priority")).to_have_text("urgent")
            await expect(agent.get_by_test_id("assign-alert")).to_contain_text("SLA breached")
            await shot(agent, "console-sla-breach.png")
            assert errors == []
        finally:
            await browser.close()


async def test_an_agent_sees_teams_read_only_an_admin_edits_them(
    fast_hub: tuple[Hub, str],
) -> None:
    from playwright.async_api import async_playwright, expect

    hub, base = fast_hub
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            admin = await _login(browser, base, "root", errors)
            await admin.get_by_test_id("teams-open").click()
            await admin.get_by_test_id("team-name").fill("billing")
            await admin.get_by_test_id("team-channels").fill("email")
            await admin.get_by_test_id("team-members").fill("alice, bob")
            await admin.get_by_test_id("team-submit").click()
            await expect(admin.get_by_test_id("team-row")).to_contain_text("alice, bob")
            # An SLA policy counted in business hours, in the office's time zone.
            await admin.get_by_test_id("sla-name").fill("office")
            await admin.get_by_test_id("sla-first").fill("3600")
            await admin.get_by_test_id("sla-resolution").fill("28800")
            await admin.get_by_test_id("sla-hours").fill("mon-fri 09:00-12:00, 13:00-17:00")
            await admin.get_by_test_id("sla-tz").fill("Europe/Paris")
            await admin.get_by_test_id("sla-submit").click()
            office = admin.locator('[data-testid="sla-row"][data-name="office"]')
            await expect(office.get_by_test_id("sla-hours-cell")).to_have_text(
                ", ".join(f"{d} 09:00-12:00,13:00-17:00" for d in WEEKDAYS[:5]) + " (Europe/Paris)"
            )
            [policy] = [p for p in await hub.store.sla_policies() if p.name == "office"]
            assert policy.business_hours == {
                "timezone": "Europe/Paris",
                "hours": dict.fromkeys(WEEKDAYS[:5], "09:00-12:00,13:00-17:00"),
            }
            row = admin.locator('[data-testid="presence-row"][data-name="alice"]')
            await row.get_by_test_id("agent-capacity").fill("2")
            await row.get_by_test_id("agent-capacity").dispatch_event("change")
            await expect(admin.get_by_test_id("assign-alert")).to_contain_text("alice takes 2")
            [status] = [s for s in await hub.store.agent_statuses() if s.name == "alice"]
            assert status.capacity == 2
            await shot(admin, "console-teams.png", full_page=True)

            agent = await _login(browser, base, "alice", errors)
            await expect(agent.get_by_test_id("presence-select")).to_be_visible()
            await agent.get_by_test_id("teams-open").click()
            await expect(agent.get_by_test_id("team-row")).to_contain_text("billing")
            await expect(agent.get_by_test_id("team-form")).to_be_hidden()
            await expect(agent.get_by_test_id("sla-form")).to_be_hidden()
            await expect(agent.get_by_test_id("agent-capacity").first).to_be_disabled()
            await expect(agent.get_by_test_id("remove")).to_have_count(0)
            # An agent answers customers: the admin's pages are not offered to her at all.
            await expect(agent.get_by_test_id("search-open")).to_be_visible()
            for admin_only in ("agents-open", "audit-open", "canned-open", "knowledge-open"):
                await expect(agent.get_by_test_id(admin_only)).to_be_hidden()
            for admin_only in ("agents-open", "audit-open", "canned-open", "knowledge-open"):
                await expect(admin.get_by_test_id(admin_only)).to_be_visible()
            assert errors == []
        finally:
            await browser.close()
