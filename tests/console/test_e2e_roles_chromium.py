"""Roles in real headless Chromium: an admin adds a viewer from the console; the viewer sees
the queue (customers by a readable name) but gets no claim button, a read-only composer, no
presence of her own and a read-only teams page."""

from __future__ import annotations

import aiohttp
import pytest

from bot.auth import add_agent
from bot.hub import Hub
from bot.store.base import AgentRole
from tests.console.screens import shot
from tests.console.test_e2e_chromium import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Customer,
    ScriptedAgent,
    served,
)

__all__ = ["served"]  # the fixture

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


async def test_admin_adds_a_viewer_who_cannot_act(
    served: tuple[Hub, ScriptedAgent, str],
) -> None:
    from playwright.async_api import async_playwright, expect

    hub, _agent, base = served
    await add_agent(hub.store, "root", "root password 1", "Root", role=AgentRole.ADMIN)
    async with aiohttp.ClientSession() as http:
        customer = Customer(http, base, conversation="c-77")
        await customer.say("hello")
        await customer.wait_for(lambda m: m["role"] == "bot")
        await customer.say("I want to talk to a real person please")
        await customer.wait_for(lambda m: m["kind"] == "handoff")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            admin = await browser.new_page()
            errors: list[str] = []
            admin.on("pageerror", lambda exc: errors.append(str(exc)))
            await admin.goto(f"{base}/console/")
            await admin.get_by_test_id("login-name").fill("root")
            await admin.get_by_test_id("login-password").fill("root password 1")
            await admin.get_by_test_id("login-submit").click()
            await expect(admin.get_by_test_id("agent-role")).to_have_text("admin")
            await admin.get_by_test_id("agents-open").click()
            rows = admin.get_by_test_id("agent-row")
            await expect(rows).to_have_count(2)  # alice and root
            await admin.get_by_test_id("new-agent-name").fill("vic")
            await admin.get_by_test_id("new-agent-display").fill("Vic Viewer")
            await admin.get_by_test_id("new-agent-password").fill("viewer password")
            await admin.get_by_test_id("new-agent-role").select_option("viewer")
            await admin.get_by_test_id("new-agent-submit").click()
            vic_row = admin.locator('[data-testid="agent-row"][data-name="vic"]')
            await expect(vic_row).to_contain_text("Vic Viewer")
            await expect(vic_row.get_by_test_id("agent-role-select")).to_have_value("viewer")
            account = await hub.store.agent("vic")
            assert account is not None
            assert account.role is AgentRole.VIEWER

            context = await browser.new_context()  # a cookie jar of its own
            viewer = await context.new_page()
            viewer.on("pageerror", lambda exc: errors.append(str(exc)))
            await viewer.goto(f"{base}/console/")
            await viewer.get_by_test_id("login-name").fill("vic")
            await viewer.get_by_test_id("login-password").fill("viewer password")
            await viewer.get_by_test_id("login-submit").click()
            await expect(viewer.get_by_test_id("agent-role")).to_have_text("viewer")
            await expect(viewer.get_by_test_id("agents-open")).to_be_hidden()
            await expect(viewer.get_by_test_id("audit-open")).to_be_hidden()
            item = viewer.get_by_test_id("queue-item")
            await expect(item).to_contain_text("Dana Customer")
            await expect(item.get_by_test_id("queue-channel")).to_have_text("API")
            await item.click()
            await expect(viewer.get_by_test_id("transcript")).to_contain_text("real person")
            await expect(viewer.get_by_test_id("claim")).to_be_hidden()
            await expect(viewer.get_by_test_id("resolve")).to_be_hidden()
            await expect(viewer.get_by_test_id("send")).to_be_disabled()
            await expect(viewer.get_by_test_id("composer-hint")).to_contain_text("read-only")
            # Assignment: no presence of her own (she takes no conversations), teams read-only.
            await expect(viewer.get_by_test_id("presence-select")).to_be_hidden()
            await viewer.get_by_test_id("teams-open").click()
            await expect(viewer.get_by_test_id("teams-view")).to_be_visible()
            await expect(viewer.get_by_test_id("team-form")).to_be_hidden()
            await expect(viewer.get_by_test_id("sla-form")).to_be_hidden()
            await viewer.get_by_test_id("teams-close").click()
            await expect(admin.get_by_test_id("presence-select")).to_be_visible()
            await admin.get_by_test_id("teams-open").click()
            await expect(admin.get_by_test_id("team-form")).to_be_visible()
            await expect(admin.get_by_test_id("agents-view")).to_be_hidden()
            await admin.get_by_test_id("agents-open").click()
            await expect(admin.get_by_test_id("teams-view")).to_be_hidden()

            # The admin disables the viewer: her console signs her out.
            await vic_row.get_by_test_id("agent-active").uncheck()
            await expect(admin.get_by_test_id("toast")).to_contain_text("vic disabled")
            await viewer.reload()
            await expect(viewer.get_by_test_id("login-form")).to_be_visible()

            # The audit log shows what happened; the admin erases the customer on request.
            await admin.get_by_test_id("audit-open").click()
            await expect(admin.get_by_test_id("agents-view")).to_be_hidden()
            log = admin.get_by_test_id("audit-list")
            await expect(log.locator('[data-action="agent.update"]').first).to_be_visible()
            await expect(log.locator('[data-action="escalate"]').first).to_be_visible()
            [conv] = await hub.handoff.queue()
            await admin.get_by_test_id("subject-id").fill(f"{conv.channel}:{conv.customer.id}")
            admin.once("dialog", lambda dialog: dialog.accept())
            await admin.get_by_test_id("subject-erase").click()
            await expect(admin.get_by_test_id("toast").last).to_contain_text("Erased: 1")
            await expect(admin.locator(".queue-item")).to_have_count(0)  # gone from the list
            await expect(log.locator('[data-action="privacy.erase"]')).to_have_count(1)
            await shot(admin, "console-audit.png")
            assert await hub.handoff.queue() == []
            assert errors == []
        finally:
            await browser.close()
