"""The console's desk API: canned replies, conversation search, copilot, analytics JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from bot import auth
from bot.console import setup_console
from bot.desk.store import Rating, Usage
from bot.envelope import Citation, OutboundMessage, utcnow
from bot.store.base import AgentRole
from tests.console.desk import Desk, open_desk
from tests.console.test_console_api import PASSWORD, Client, login
from tests.fakes.retriever import FixedRetriever, passage


@pytest.fixture
async def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Desk]:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    async with open_desk(tmp_path) as d:
        await auth.add_agent(d.store, "root", PASSWORD, "Root", role=AgentRole.ADMIN)
        await auth.add_agent(d.store, "alice", PASSWORD, "Alice Martin")
        await auth.add_agent(d.store, "vic", PASSWORD, "Vic", role=AgentRole.VIEWER)
        yield d


@pytest.fixture
async def clients(desk: Desk) -> AsyncIterator[dict[str, tuple[Client, str]]]:
    """One logged-in client per account: name → (client, csrf)."""
    made: dict[str, tuple[Client, str]] = {}
    try:
        for name in ("root", "alice", "vic"):
            app = web.Application()
            setup_console(app, desk)
            client = TestClient(TestServer(app, host="127.0.0.1", port=0))
            await client.start_server()
            made[name] = (client, await login(client, name))
        yield made
    finally:
        for client, _ in made.values():
            await client.close()


async def call(
    clients: dict[str, tuple[Client, str]], who: str, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    client, csrf = clients[who]
    resp = await client.request(
        method, url, json=body, headers={auth.CSRF_HEADER: csrf} if method != "GET" else {}
    )
    if resp.content_type == "application/json":
        return resp.status, await resp.json()
    return resp.status, await resp.text()


GREETING = {
    "shortcut": "hello",
    "title": "Greeting",
    "body": "Hi {customer.name}, {agent.name} here. Your ticket is {ticket.id}.",
}


async def test_admins_manage_canned_replies_others_get_403(
    desk: Desk, clients: dict[str, tuple[Client, str]]
) -> None:
    for who in ("alice", "vic"):
        status, _ = await call(clients, who, "POST", "/console/api/canned", GREETING)
        assert status == 403, who
    status, body = await call(clients, "root", "POST", "/console/api/canned", GREETING)
    assert status == 201
    reply_id = body["canned"]["id"]
    status, body = await call(clients, "root", "POST", "/console/api/canned", GREETING)
    assert status == 409  # the shortcut is taken
    bad = {**GREETING, "shortcut": "oops", "body": "Hi {customer.nmae}"}
    status, body = await call(clients, "root", "POST", "/console/api/canned", bad)
    assert (status, body["field"]) == (400, "body")
    assert "{customer.nmae}" in body["error"]
    refund = {"shortcut": "refund", "title": "Refund policy", "body": "Refunds take 5 days."}
    assert (await call(clients, "root", "POST", "/console/api/canned", refund))[0] == 201

    # Everyone may search them; the text is filled in for the open conversation.
    key = await desk.customer_says("my invoice is wrong", name="Dana Customer")
    conv = await desk.handoff.escalate(key, "customer_request")
    url = f"/console/api/canned?q=greet&session_key={quote(key, safe='')}"
    status, body = await call(clients, "vic", "GET", url)
    assert status == 200
    [found] = body["canned"]
    assert found["text"] == f"Hi Dana Customer, Vic here. Your ticket is {conv.ticket_id}."
    status, body = await call(clients, "alice", "GET", "/console/api/canned?q=REFUND")
    assert [c["shortcut"] for c in body["canned"]] == ["refund"]

    change = {**GREETING, "body": "Hello {customer.name}!"}
    url = f"/console/api/canned/{reply_id}"
    assert (await call(clients, "alice", "POST", url, change))[0] == 403
    status, body = await call(clients, "root", "POST", url, change)
    assert (status, body["canned"]["body"]) == (200, "Hello {customer.name}!")
    assert (await call(clients, "vic", "DELETE", url))[0] == 403
    assert (await call(clients, "root", "DELETE", url))[0] == 204
    assert (await call(clients, "root", "DELETE", url))[0] == 404
    status, body = await call(clients, "alice", "GET", "/console/api/canned")
    assert [c["shortcut"] for c in body["canned"]] == ["refund"]


async def test_conversation_search(desk: Desk, clients: dict[str, tuple[Client, str]]) -> None:
    a = await desk.customer_says("The 50% discount code fails at checkout", chat="a", name="Ann")
    b = await desk.customer_says("How do I export invoices?", chat="b", name="Bert Jones")
    await desk.customer_says("checkout page is blank", chat="c", name="Cleo")
    await desk.handoff.escalate(a, "customer_request")

    async def keys(query: str) -> list[str]:
        status, body = await call(clients, "vic", "GET", f"/console/api/search?{query}")
        assert status == 200, body
        return sorted(r["conversation"]["session_key"] for r in body["results"])

    assert len(await keys("text=CHECKOUT")) == 2
    assert await keys("text=50%25") == [a]  # % is literal, not a wildcard
    assert await keys("customer=jones") == [b]
    assert await keys("text=checkout&status=queued") == [a]
    assert await keys("channel=rest&customer=bert") == [b]
    assert await keys("channel=email") == []
    today = utcnow().date()
    assert len(await keys(f"from={today}&to={today}")) == 3
    assert await keys(f"to={today - timedelta(days=1)}") == []
    status, body = await call(clients, "vic", "GET", "/console/api/search?text=invoices")
    [hit] = body["results"]
    assert hit["snippet"] == "How do I export invoices?"
    assert hit["conversation"]["customer"]["display_name"] == "Bert Jones"
    status, body = await call(clients, "vic", "GET", "/console/api/search?status=lost")
    assert (status, body["field"]) == (400, "status")


async def test_copilot_without_llm_is_extractive(
    desk: Desk, clients: dict[str, tuple[Client, str]]
) -> None:
    key = await desk.customer_says("My Slack bot stopped answering in threads.")
    await desk.deliver(
        OutboundMessage(
            session_key=key,
            text="Check that the app has the app_mentions:read scope. Then reinstall it.",
            citations=(Citation(doc_id="slack-setup", title="Slack setup"),),
        )
    )
    await desk.customer_says("It still doesn't work in private channels.")
    await desk.customer_says("I want to talk to a person")  # not what they want: how to get it
    await desk.handoff.escalate(key, "customer_request")
    retriever = FixedRetriever(
        [passage("slack-threads", "Invite the bot to the channel: /invite @bot.", url=None)]
    )
    desk.retriever_or_empty = retriever  # type: ignore[attr-defined]
    status, body = await call(
        clients, "alice", "GET", f"/console/api/conversations/{quote(key, safe='')}/copilot"
    )
    assert status == 200
    summary = body["summary"]
    assert summary["wants"] == "My Slack bot stopped answering in threads."
    assert summary["latest"] == "It still doesn't work in private channels."
    assert summary["tried"] == ["Check that the app has the app_mentions:read scope."]
    assert [s["doc_id"] for s in summary["sources"]] == ["slack-setup"]
    assert summary["reason"] == "customer_request"
    assert body["suggestion"] == {
        "text": "Invite the bot to the channel: /invite @bot.",
        "citations": [
            {"doc_id": "slack-threads", "title": "Slack Threads", "url": None, "score": 1.0}
        ],
        "source": "knowledge",
    }
    assert retriever.queries == [
        "My Slack bot stopped answering in threads. It still doesn't work in private channels."
    ]


async def test_analytics_json_and_csv(desk: Desk, clients: dict[str, tuple[Client, str]]) -> None:
    alice = await desk.store.agent("alice")
    assert alice is not None
    await desk.customer_says("how do I reset my password?", chat="bot-only")
    key = await desk.customer_says("refund please", chat="escalated")
    await desk.handoff.escalate(key, "agent_tool")
    await desk.handoff.claim(key, alice)
    await desk.handoff.reply(key, alice, "Done, refunded.")
    await desk.handoff.resolve(key, alice)
    now = utcnow()
    await desk.handoff.desk.record_rating(Rating(key, "rest", "alice", 4, now, now))
    await desk.handoff.desk.record_usage(
        Usage(now, "openai/gpt-4o-mini", "answer", 1200, 80, 0.0003)
    )
    today = now.date().isoformat()

    status, figures = await call(
        clients, "vic", "GET", f"/console/api/analytics?from={today}&to={today}"
    )
    assert status == 200
    totals = figures["totals"]
    assert figures["days"] == [today]
    assert figures["channels"] == ["rest"]
    assert totals["conversations"] == 2
    assert totals["conversations_by_channel"] == {"rest": 2}
    assert (totals["bot_resolved"], totals["bot_resolution_rate"]) == (1, 0.5)
    assert totals["escalation_reasons"] == {"agent_tool": 1}
    assert totals["first_response_p50_s"] is not None
    assert 0 <= totals["first_response_p50_s"] <= totals["resolution_p90_s"] < 60
    assert totals["sla_breaches"] == 0
    assert (totals["csat_count"], totals["csat_average"]) == (1, 4.0)
    assert totals["csat_distribution"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0}
    assert totals["csat_by_agent"] == {"alice": {"count": 1, "average": 4.0}}
    assert (totals["llm_input_tokens"], totals["llm_output_tokens"]) == (1200, 80)
    assert figures["per_day"][0]["llm_cost_usd"] == pytest.approx(0.0003)

    client, _ = clients["vic"]
    resp = await client.get(f"/console/api/analytics.csv?from={today}&to={today}")
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["day"] for r in rows] == [today, "total"]
    assert rows[1]["conversations"] == "2"
    assert rows[1]["csat_average"] == "4.0"
    assert rows[1]["conversations_rest"] == "2"
    assert rows[1]["escalations_agent_tool"] == "1"

    yesterday = (now - timedelta(days=1)).date().isoformat()
    status, empty = await call(
        clients, "vic", "GET", f"/console/api/analytics?from={yesterday}&to={yesterday}"
    )
    assert empty["totals"]["conversations"] == 0
    assert empty["totals"]["csat_average"] is None
    status, _body = await call(clients, "vic", "GET", f"/console/api/analytics?from={today}&to=x")
    assert status == 400


async def test_the_analytics_route_needs_a_session(desk: Desk) -> None:
    app = web.Application()
    setup_console(app, desk)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        for url in ("/console/api/analytics", "/console/api/analytics.csv", "/console/api/search"):
            assert (await client.get(url)).status == 401, url
        page = await client.get("/console/analytics")
        assert page.status == 200
        assert "/console/static/vendor/chart.umd.js" in await page.text()
