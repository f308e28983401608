"""The customer panel in real headless Chromium: an agent opens a queued conversation and sees
the customer's HubSpot record (fake HubSpot) and open ticket, under the console's strict CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.auth import add_agent
from bot.compose import build_hub
from bot.config import Settings
from bot.envelope import InboundMessage, Participant, session_key
from bot.hub import Hub
from plugins.crm.hubspot import HubSpotCrm
from tests.console.screens import shot
from tests.console.test_e2e_chromium import CHROMIUM, CHROMIUM_ARGS, ScriptedAgent, serving
from tests.csp_watch import csp_violations, watch_csp
from tests.fakes.hubspot_api import FakeHubSpot
from tests.plugins.crm.contract import crm_settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ANA = Participant(id="U-ana", name="Ana", email="ana@example.com", verified=True)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Hub, FakeHubSpot, str]]:
    async with FakeHubSpot() as hubspot:
        company = hubspot.add("companies", name="Wonderland Ltd", plan="Enterprise")
        owner = hubspot.add("owners", firstName="Olivia", lastName="Owner", email="o@x.test")
        hubspot.add(
            "contacts",
            firstname="Ana",
            lastname="Lima",
            email="ana@example.com",
            associatedcompanyid=company,
            hubspot_owner_id=owner,
        )
        crm = HubSpotCrm(
            crm_settings(hubspot_access_token=hubspot.token, hubspot_api_url=hubspot.base_url)
        )
        settings = Settings(data_dir=tmp_path / "data", demo_site=False, crm_plan_field="plan")
        hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False, crm=crm)
        await add_agent(hub.store, "alice", "correct horse battery", "Alice")
        async with serving(hub) as base:
            yield hub, hubspot, base


async def test_agent_sees_the_customers_crm_record(served: tuple[Hub, FakeHubSpot, str]) -> None:
    from playwright.async_api import async_playwright, expect

    hub, hubspot, base = served
    key = session_key("rest", "default", dm_peer="U-ana")
    await hub.store.append_inbound(
        InboundMessage(
            event_id="ana-1",
            channel="rest",
            account="default",
            session_key=key,
            sender=ANA,
            text="My invoice is wrong, I want a person.",
        )
    )
    await hub.handoff.escalate(key, "customer_request")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            csp = await watch_csp(page)
            await page.goto(f"{base}/console")
            await page.get_by_test_id("login-name").fill("alice")
            await page.get_by_test_id("login-password").fill("correct horse battery")
            await page.get_by_test_id("login-submit").click()
            item = page.locator(f'[data-testid="queue-item"][data-session-key="{key}"]')
            await item.click()
            panel = page.get_by_test_id("customer-panel")
            await expect(panel).to_be_visible()
            await expect(panel.get_by_test_id("cp-name")).to_have_text("Ana Lima")
            await expect(panel.get_by_test_id("cp-company")).to_have_text("Wonderland Ltd")
            await expect(panel.get_by_test_id("cp-plan")).to_have_text("Enterprise")
            await expect(panel.get_by_test_id("cp-owner")).to_have_text("Olivia Owner")
            await expect(panel.get_by_test_id("cp-tickets")).to_contain_text("open")
            await shot(page, "console-customer-panel.png")
            assert errors == []
            assert await csp_violations(page, csp) == []
        finally:
            await browser.close()
    assert hubspot.requests_to("/contacts/search")
