"""Failure paths of the external ticket backends: 429s, a product that is down, two processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import RateLimited
from bot.store.base import SessionMode
from bot.store.engine import make_engine
from plugins.ticketing.jira_sm import JiraTickets
from plugins.ticketing.links import format_ref
from plugins.ticketing.remote import retry_after_seconds
from plugins.ticketing.synced import SyncedTicketBackend
from plugins.ticketing.zendesk import ZendeskTickets
from tests.channels.test_webchat import KEY, Client, hub_of
from tests.fakes.jira_api import FakeJira
from tests.fakes.zendesk_api import FakeZendesk
from tests.plugins.ticketing.contract import ALICE, open_ticket
from tests.plugins.ticketing.products import Product, escalate
from tests.plugins.ticketing.test_contract import jira_settings, zendesk_settings


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Sun, 06 Dec 2026 12:00:30 GMT", now=1_796_558_400.0) == 30.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("soon") == 1.0


async def test_a_short_429_is_waited_out_a_long_one_raises(tmp_path: Path) -> None:
    async with FakeZendesk() as zd, FakeJira() as jira:
        settings = zendesk_settings(zd, tmp_path, ticket_retry_max_wait_s=5.0)
        clients: list[tuple[FakeZendesk | FakeJira, ZendeskTickets | JiraTickets]] = [
            (zd, ZendeskTickets(settings)),
            (jira, JiraTickets(jira_settings(jira, tmp_path, ticket_retry_max_wait_s=5.0))),
        ]
        for fake, client in clients:
            made = await client.create(
                subject="s", description="d", requester=ALICE, priority="normal", ref="SB-1"
            )
            before = len(fake.requests)
            fake.fail_next(429, retry_after="1")
            started = time.monotonic()
            assert await client.get(made.id) is not None
            assert time.monotonic() - started >= 0.9  # Retry-After was honoured
            assert len(fake.requests) - before >= 2  # the 429, then the retried call
            fake.fail_next(429, retry_after="120")
            before = len(fake.requests)
            with pytest.raises(RateLimited) as caught:
                await client.get(made.id)
            assert caught.value.retry_after == 120.0
            assert len(fake.requests) - before == 1  # no retry past the budget
            await client.close()


async def test_escalation_while_the_product_is_down(client: Client, product: Product) -> None:
    product.fake.down = True
    sock = await escalate(client)
    conv = await hub_of(client).store.conversation(KEY)
    # The customer still reached the human queue, and was told the truth.
    assert conv is not None
    assert conv.mode == SessionMode.QUEUED
    assert conv.ticket_id == format_ref(1)
    notices = [f["text"] for f in sock.frames if f.get("role") == "system"]
    assert any("not reachable" in n and format_ref(1) in n for n in notices)
    assert not (product.fake.tickets if product.name == "zendesk" else product.fake.issues)
    tickets = hub_of(client).tickets
    assert isinstance(tickets, SyncedTicketBackend)
    queued = await tickets.get(conv.ticket_id)
    assert queued is not None
    assert queued.queued
    assert await tickets.sync_pending() == 0  # still down: nothing created, kept
    # Back up: the next pass creates the ticket, with the transcript, once.
    product.fake.down = False
    await tickets.comment(conv.ticket_id, "Jane", "seen in the console")  # still pending
    created = 0
    for _ in range(3):
        created += await _sync_due_now(tickets)
    assert created == 1
    held = product.fake.tickets if product.name == "zendesk" else product.fake.issues
    assert len(held) == 1  # created once (the POSTs refused while down created nothing)
    body = product.created()[-1]
    assert "I want to talk to a human" in product.transcript(body)
    assert "seen in the console" in product.transcript(body)
    ticket = await tickets.get(conv.ticket_id)
    assert ticket is not None
    assert not ticket.queued
    assert ticket.requester_id == conv.customer.id
    await sock.close()


async def _sync_due_now(tickets: SyncedTicketBackend) -> int:
    """One sync pass with every pending row due (the test does not wait the interval)."""
    from plugins.ticketing.links import PENDING, ticket_links

    async with tickets._engine.begin() as conn:
        await conn.execute(
            ticket_links.update()
            .where(ticket_links.c.state == PENDING)
            .values(next_attempt_at=ticket_links.c.created_at)
        )
    return await tickets.sync_pending()


def _engine(tmp_path: Path) -> AsyncEngine:
    return make_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")


async def test_two_processes_create_a_deferred_ticket_once(tmp_path: Path) -> None:
    async with FakeZendesk() as zd:
        settings = zendesk_settings(zd, tmp_path)
        engines = [_engine(tmp_path), _engine(tmp_path)]
        hubs = [SyncedTicketBackend(ZendeskTickets(settings), e, settings) for e in engines]
        try:
            zd.down = True
            pending = await open_ticket(hubs[0])
            assert pending.queued
            assert pending.id == format_ref(1)
            zd.down = False
            refused = len(zd.calls("POST", "/api/v2/tickets.json"))
            results = await asyncio.gather(*(_sync_due_now(h) for h in hubs))
            assert sum(results) == 1
            assert len(zd.calls("POST", "/api/v2/tickets.json")) == refused + 1
            assert len(zd.tickets) == 1
            for h in hubs:
                seen = await h.get(pending.id)
                assert seen is not None
                assert not seen.queued
        finally:
            for h, e in zip(hubs, engines, strict=True):
                await h.close()
                await e.dispose()


async def test_a_lost_answer_does_not_create_a_second_ticket(tmp_path: Path) -> None:
    async with FakeZendesk() as zd:
        settings = zendesk_settings(zd, tmp_path)
        engine = _engine(tmp_path)
        tickets = SyncedTicketBackend(ZendeskTickets(settings), engine, settings)
        try:
            zd.lose_next_create = True  # Zendesk creates it, the answer is lost
            pending = await open_ticket(tickets)
            assert pending.queued
            assert await _sync_due_now(tickets) == 1
            # The retry found the ticket by its external_id instead of creating another.
            assert len(zd.calls("POST", "/api/v2/tickets.json")) == 1
            assert zd.calls("GET", "/api/v2/tickets.json")[0].query["external_id"] == pending.id
            ticket = await tickets.get(pending.id)
            assert ticket is not None
            assert ticket.id == "101"
        finally:
            await tickets.close()
            await engine.dispose()


async def test_a_lost_jira_answer_does_not_raise_a_second_request(tmp_path: Path) -> None:
    """A customer request carries no hidden id: the retry finds it by the reference line of its
    description through JQL (the enhanced search), and raises nothing new."""
    async with FakeJira() as jira:
        settings = jira_settings(jira, tmp_path)
        engine = _engine(tmp_path)
        remote = JiraTickets(settings)
        tickets = SyncedTicketBackend(remote, engine, settings)
        try:
            jira.lose_next_create = True  # Jira raises it, the answer is lost
            pending = await open_ticket(tickets)
            assert pending.queued
            assert await _sync_due_now(tickets) == 1
            assert len(jira.calls("POST", "/rest/servicedeskapi/request")) == 1
            [search] = jira.calls("GET", "/rest/api/2/search/jql")
            assert f'\\"{pending.id}\\"' in search.query["jql"]
            assert len(jira.issues) == 1
            ticket = await tickets.get(pending.id)
            assert ticket is not None
            assert ticket.id == "SUP-1"
            assert ticket.description.endswith(f"Switchboard reference: {pending.id}")
            # Another reference is not taken for this one.
            assert await remote.find("SB-999") is None
        finally:
            await tickets.close()
            await engine.dispose()


async def test_a_process_dying_after_the_product_created_the_ticket_does_not_cause_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plugins.ticketing.links import CREATED, PENDING, ticket_links

    async with FakeZendesk() as zd:
        settings = zendesk_settings(zd, tmp_path)
        engines = [_engine(tmp_path), _engine(tmp_path)]
        dying, other = (
            SyncedTicketBackend(ZendeskTickets(settings), e, settings) for e in engines
        )
        try:
            update = dying._update

            async def die_on_created(num: int, **values: object) -> None:
                if values.get("state") == CREATED:
                    raise RuntimeError("process killed")
                await update(num, **values)

            monkeypatch.setattr(dying, "_update", die_on_created)
            with pytest.raises(RuntimeError):
                await open_ticket(dying)  # Zendesk created it; the row still says pending
            assert len(zd.tickets) == 1
            async with other._engine.begin() as conn:  # the dead process's lease runs out
                await conn.execute(
                    ticket_links.update()
                    .where(ticket_links.c.state == PENDING)
                    .values(lease_until=ticket_links.c.created_at)
                )

            assert await _sync_due_now(other) == 1

            assert len(zd.calls("POST", "/api/v2/tickets.json")) == 1
            assert len(zd.tickets) == 1
            ticket = await other.get(format_ref(1))
            assert ticket is not None
            assert ticket.id == str(next(iter(zd.tickets)))
        finally:
            for t, e in zip((dying, other), engines, strict=True):
                await t.close()
                await e.dispose()


async def test_a_long_429_defers_creation_until_retry_after(tmp_path: Path) -> None:
    async with FakeJira() as jira:
        settings = jira_settings(jira, tmp_path, ticket_sync_interval_s=5.0)
        engine = _engine(tmp_path)
        tickets = SyncedTicketBackend(JiraTickets(settings), engine, settings)
        try:
            jira.fail_next(429, retry_after="600")
            pending = await open_ticket(tickets)
            assert pending.queued
            assert await tickets.sync_pending() == 0  # not due before Retry-After
            assert not jira.issues
            assert await _sync_due_now(tickets) == 1
            assert list(jira.issues) == ["SUP-1"]
        finally:
            await tickets.close()
            await engine.dispose()


async def test_webhook_event_ids_are_remembered_then_forgotten(tmp_path: Path) -> None:
    async with FakeZendesk() as zd:
        settings = zendesk_settings(zd, tmp_path)
        engine = _engine(tmp_path)
        tickets = SyncedTicketBackend(ZendeskTickets(settings), engine, settings)
        try:
            assert await tickets.first_delivery("evt-1")
            assert not await tickets.first_delivery("evt-1")
            assert await tickets.forget_old_deliveries(older_than_s=3600) == 0
            assert await tickets.forget_old_deliveries(older_than_s=-1) == 1
            assert await tickets.first_delivery("evt-1")
        finally:
            await tickets.close()
            await engine.dispose()
