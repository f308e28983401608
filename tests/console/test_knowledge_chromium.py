"""The console's Knowledge page in real headless Chromium.

An admin uploads a Markdown file and watches the ingest job reach "done" (progress and report
update by polling), a customer's question escalates, the admin saves the bot's reply from the
conversation as a curated answer (the form is pre-filled with the customer's question, the
reply and its citation), and the next customer asking it gets the saved answer. An agent sees
neither the Knowledge button nor "Save as answer". With ``SWITCHBOARD_SCREENSHOTS=1`` the page
and the form are saved to ``docs/images/console-knowledge*.png`` for docs/console.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.agent import AgentReply, TurnInput
from bot.auth import add_agent
from bot.compose import build_hub
from bot.envelope import Citation
from bot.hub import Hub
from bot.store.base import AgentRole
from bot.store.sql import SqlStore
from channels.memory.pytest_plugin import make_settings
from knowledge import KnowledgeBase
from knowledge.answers import AnswerStore, CuratedAnswers, CuratedFirstAgent
from knowledge.embed import LocalEmbedder
from tests.console.screens import shot
from tests.console.test_e2e_chromium import CHROMIUM, CHROMIUM_ARGS, Customer, serving, sign_in
from tests.csp_watch import csp_violations, watch_csp

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PASSWORD = "correct horse battery"
QUESTION = "How long does a refund take?"
BOT_REPLY = "The refund reaches your card within **five working days** of the parcel arriving."
CITATION = Citation(doc_id="returns", title="Returns and refunds", url="https://help.example/r")
RETURNS = (
    "# Returns and refunds\n\n"
    "You can return an unworn item within 30 days of delivery. Print the prepaid label from "
    "your order page and drop the parcel at any post office.\n\n"
    "## Refunds\n\n"
    "The refund reaches your card within five working days after the parcel arrives.\n"
)


class CitingAgent:
    """Answers everything with :data:`BOT_REPLY`, citing :data:`CITATION`."""

    async def respond(self, turn: TurnInput) -> AgentReply:
        return AgentReply(text=BOT_REPLY, citations=[CITATION])


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Hub, str]]:
    settings = make_settings(tmp_path / "data", demo_site=False)
    settings.data_dir.mkdir(parents=True)
    kb = await KnowledgeBase.open(settings, embedder=LocalEmbedder())
    agent = CuratedFirstAgent(CitingAgent(), CuratedAnswers.for_settings(settings, kb.embedder))
    hub = await build_hub(settings, agent=agent, retriever=kb)
    await add_agent(hub.store, "root", PASSWORD, "Rita Admin", role=AgentRole.ADMIN)
    await add_agent(hub.store, "alice", PASSWORD, "Alice")
    try:
        async with serving(hub) as base:
            yield hub, base
    finally:
        await kb.close()


async def test_admin_ingests_and_saves_a_reply_as_a_curated_answer(
    served: tuple[Hub, str], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    hub, base = served
    upload = tmp_path / "returns.md"
    upload.write_text(RETURNS, encoding="utf-8")
    async with aiohttp.ClientSession() as http:
        customer = Customer(http, base, conversation="refund-1")
        await customer.say(QUESTION)
        await customer.wait_for(lambda m: m["role"] == "bot")
        await customer.say("That is too long. I want to talk to a real person please")
        await customer.wait_for(lambda m: m["kind"] == "handoff")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            errors: list[str] = []
            admin = await browser.new_page(viewport={"width": 1400, "height": 900})
            admin.on("pageerror", lambda exc: errors.append(str(exc)))
            csp = await watch_csp(admin)
            await sign_in(admin, base, "root", PASSWORD)

            # 1. Knowledge: upload a file, the job's progress reaches "done" with its report.
            await admin.get_by_test_id("knowledge-open").click()
            view = admin.get_by_test_id("knowledge-view")
            await expect(view).to_be_visible()
            stats = admin.get_by_test_id("knowledge-stats")
            await expect(stats).to_contain_text("0 documents")
            await admin.get_by_test_id("knowledge-files").set_input_files(str(upload))
            await admin.get_by_test_id("knowledge-upload-submit").click()
            job = admin.get_by_test_id("knowledge-job")
            await expect(job).to_have_attribute("data-state", "done", timeout=30_000)
            await expect(admin.get_by_test_id("job-state")).to_have_text("Done")
            report = admin.get_by_test_id("job-report")
            await expect(report.locator('[data-key="documents_added"]')).to_have_text("1")
            written = await report.locator('[data-key="chunks_written"]').text_content()
            assert written is not None
            assert int(written) > 0
            progress = admin.get_by_test_id("job-progress")
            assert await progress.get_attribute("value") == await progress.get_attribute("max")
            await expect(stats).to_contain_text(f"1 document · {written} chunks")
            kb = hub.retriever
            assert kb is not None
            assert (await kb.search("refund to my card", top_k=1))[0].doc_id == "returns"

            # 2. The escalated conversation: save the bot's reply as a curated answer.
            await admin.get_by_test_id("queue-item").first.click()
            assert await view.is_hidden()
            transcript = admin.get_by_test_id("transcript")
            await expect(transcript).to_contain_text("real person")
            await expect(admin.get_by_test_id("save-answer")).to_be_visible()
            bot_msg = transcript.locator('[data-role="bot"]')
            await bot_msg.get_by_test_id("msg-save-answer").click()
            dialog = admin.get_by_test_id("answer-dialog")
            await expect(dialog).to_be_visible()
            await expect(admin.get_by_test_id("answer-questions")).to_have_value(QUESTION)
            await expect(admin.get_by_test_id("answer-answer")).to_have_value(BOT_REPLY)
            await expect(admin.get_by_test_id("answer-sources")).to_have_value(
                "returns | Returns and refunds | https://help.example/r"
            )
            await admin.get_by_test_id("answer-questions").fill(
                f"{QUESTION}\nWhen do I get my money back?"
            )
            await shot(admin, "console-knowledge-answer.png")
            await admin.get_by_test_id("answer-save").click()
            await expect(dialog).to_be_hidden()
            await expect(admin.get_by_test_id("toast")).to_contain_text("Curated answer saved")
            [saved] = AnswerStore.for_settings(hub.settings).load()
            assert saved.questions == (QUESTION, "When do I get my money back?")
            assert (saved.answer, saved.author) == (BOT_REPLY, "root")
            assert [(c.doc_id, c.title, c.url) for c in saved.sources] == [
                (CITATION.doc_id, CITATION.title, CITATION.url)
            ]
            store = hub.store
            assert isinstance(store, SqlStore)
            audited = [r for r in await store.audit_records() if r.action.startswith("knowl")]
            assert [(r.action, r.session_key) for r in audited] == [
                ("knowledge.answer_save", customer.key),
                ("knowledge.ingest", None),
            ]

            # The Knowledge page lists it; the next customer asking gets it as it is.
            await admin.get_by_test_id("knowledge-open").click()
            row = admin.get_by_test_id("answer-row")
            await expect(row).to_have_count(1)
            # Shown as the customer reads it: Markdown rendered (sanitized), not its source.
            await expect(row.get_by_test_id("answer-text")).to_have_text(
                BOT_REPLY.replace("**", "")
            )
            await expect(row.get_by_test_id("answer-text").locator("strong")).to_have_text(
                "five working days"
            )
            await expect(row.get_by_role("link", name="Returns and refunds")).to_have_attribute(
                "href", CITATION.url
            )
            await expect(stats).to_contain_text("1 curated answer")
            await shot(admin, "console-knowledge.png")
            async with aiohttp.ClientSession() as http:
                other = Customer(http, base, conversation="refund-2")
                await other.say("when do I get my money back")
                reply = await other.wait_for(lambda m: m["role"] == "bot")
            assert reply["text"] == BOT_REPLY
            assert [c["doc_id"] for c in reply["citations"]] == ["returns"]

            # 3. An agent has neither the page nor the button.
            context = await browser.new_context()
            agent = await context.new_page()
            agent.on("pageerror", lambda exc: errors.append(str(exc)))
            await sign_in(agent, base, "alice", PASSWORD)
            await expect(agent.get_by_test_id("agent-role")).to_have_text("agent")
            await agent.get_by_test_id("queue-item").first.click()
            await expect(agent.get_by_test_id("transcript")).to_contain_text("real person")
            await expect(agent.get_by_test_id("knowledge-open")).to_be_hidden()
            await expect(agent.get_by_test_id("save-answer")).to_be_hidden()
            assert await agent.get_by_test_id("msg-save-answer").count() == 0
            assert errors == []
            assert await csp_violations(admin, csp) == []
        finally:
            await browser.close()
