"""The contract every :class:`bot.tools.CrmBackend` passes, against its fake server.

A backend's test module subclasses :class:`CrmContract` and defines the async fixture
``harness`` yielding a :class:`CrmHarness`: the backend pointed at a running fake, a way to seed
a customer, and what the fake received. The suite covers the lookup keys (verified e-mail,
phone, platform id), the fields the agent and the console show, the ``lookup_customer`` tool's
authorization, 429 with ``Retry-After``, a CRM that is down, and the doctor's check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.config import Settings
from bot.envelope import Participant, SessionKey
from bot.errors import BackendUnavailable, Forbidden, RateLimited, ToolFailed
from bot.tools import CrmBackend, CustomerIdentity, ToolContext
from plugins.crm.tools import LookupCustomer, LookupCustomerArgs
from tests.fakes.crm_base import FakeCrmServer
from tests.fakes.retriever import FixedRetriever
from tests.fakes.tickets import MemoryTickets

ALICE = Participant(id="U-alice", name="Alice", email="Alice@Example.com", verified=True)
SESSION = SessionKey("rest:default:dm:U-alice")


@dataclass
class Customer:
    """One seeded CRM customer (values the backend must give back)."""

    first: str
    last: str
    email: str | None = None
    phone: str | None = None
    platform_key: str | None = None
    company: str | None = None
    plan: str | None = None
    owner: str | None = None


@dataclass
class CrmHarness:
    """What a backend's test module provides.

    Attributes:
        backend: the backend on the fake, settings with ``crm_plan_field`` and
            ``crm_platform_id_field`` set.
        fake: the running fake server.
        seed: stores a customer in the fake.
        searched: the values the fake was asked to match, in order.
        make: builds another backend of the same kind from settings overrides (bad token,
            unreachable URL).
        unreachable: settings overrides pointing the backend at a closed port.
        bad_token: settings overrides with a token the fake refuses.
    """

    backend: CrmBackend
    fake: FakeCrmServer
    seed: Callable[[Customer], None]
    searched: Callable[[], list[str]]
    make: Callable[[dict[str, Any]], CrmBackend]
    unreachable: dict[str, Any]
    bad_token: dict[str, Any]
    closing: list[CrmBackend] = field(default_factory=list)


def crm_settings(**overrides: Any) -> Settings:
    """Settings with the CRM fields the contract relies on."""
    base: dict[str, Any] = {
        "crm_plan_field": "plan",
        "crm_platform_id_field": "switchboard_id",
        "crm_timeout_s": 5.0,
    }
    return Settings(**{**base, **overrides})


def ctx_for(customer: Participant, crm: CrmBackend | None, tickets: MemoryTickets) -> ToolContext:
    async def escalate(reason: str, summary: str) -> None:
        raise AssertionError("lookup_customer never escalates")

    return ToolContext(
        session_key=SESSION,
        channel="rest",
        customer=customer,
        retriever=FixedRetriever(),
        tickets=tickets,
        escalate=escalate,
        crm=crm,
    )


ALICE_RECORD = Customer(
    "Alice",
    "Liddell",
    email="alice@example.com",
    phone="+15551230001",
    platform_key="rest:U-alice",
    company="Wonderland Ltd",
    plan="Enterprise",
    owner="Olivia Owner",
)
BOB_RECORD = Customer(
    "Bob", "Builder", email="bob@example.com", company="Builders Inc", plan="Starter"
)


class CrmContract:
    """Behaviour every CRM backend shares (subclass it and define ``harness``)."""

    async def test_finds_the_contact_by_verified_email(self, harness: CrmHarness) -> None:
        harness.seed(BOB_RECORD)
        harness.seed(ALICE_RECORD)
        contact = await harness.backend.find_contact(CustomerIdentity.of(ALICE, "rest"))
        assert contact is not None
        assert (contact.name, contact.email, contact.company, contact.plan, contact.owner) == (
            "Alice Liddell",
            "alice@example.com",
            "Wonderland Ltd",
            "Enterprise",
            "Olivia Owner",
        )
        assert contact.url is not None
        assert contact.id in contact.url
        # The e-mail (lower-cased) was the first and only key asked for, with our token.
        assert harness.searched()[0] == "alice@example.com"
        assert {r.token for r in harness.fake.received} == {harness.fake.token}

    async def test_falls_back_to_phone_then_platform_id(self, harness: CrmHarness) -> None:
        harness.seed(ALICE_RECORD)
        by_phone = Participant(id="+15551230001", verified=True)
        contact = await harness.backend.find_contact(CustomerIdentity.of(by_phone, "whatsapp"))
        assert contact is not None
        assert contact.name == "Alice Liddell"
        by_id = Participant(id="U-alice", verified=True)
        contact = await harness.backend.find_contact(CustomerIdentity.of(by_id, "rest"))
        assert contact is not None
        assert contact.company == "Wonderland Ltd"
        assert "rest:U-alice" in harness.searched()

    async def test_unknown_customer_is_none(self, harness: CrmHarness) -> None:
        harness.seed(BOB_RECORD)
        stranger = Participant(id="U-zed", email="zed@example.com", verified=True)
        assert await harness.backend.find_contact(CustomerIdentity.of(stranger, "rest")) is None

    async def test_429_is_rate_limited_with_retry_after(self, harness: CrmHarness) -> None:
        harness.fake.fail_next(429, retry_after="7")
        with pytest.raises(RateLimited) as caught:
            await harness.backend.find_contact(CustomerIdentity.of(ALICE, "rest"))
        assert caught.value.retry_after == 7.0
        # Honoured: no retry behind the caller's back, and no request until 7 s have passed.
        with pytest.raises(RateLimited) as again:
            await harness.backend.find_contact(CustomerIdentity.of(ALICE, "rest"))
        assert 0 < again.value.retry_after <= 7.0
        assert len(harness.fake.received) == 1

    async def test_server_error_is_backend_unavailable(self, harness: CrmHarness) -> None:
        harness.fake.fail_next(503)
        with pytest.raises(BackendUnavailable, match="503"):
            await harness.backend.find_contact(CustomerIdentity.of(ALICE, "rest"))

    async def test_check_ok_and_bad_token(self, harness: CrmHarness) -> None:
        ok = await harness.backend.check()
        assert ok.ok, ok.detail
        bad = harness.make(harness.bad_token)
        harness.closing.append(bad)
        refused = await bad.check()
        assert not refused.ok
        assert "401" in refused.detail or "credential" in refused.detail
        for secret in harness.bad_token.values():
            assert str(secret) not in refused.detail
        down = harness.make(harness.unreachable)
        harness.closing.append(down)
        assert not (await down.check()).ok

    # --- the lookup_customer tool on this backend -------------------------------------------

    async def test_tool_returns_own_record_and_open_tickets(self, harness: CrmHarness) -> None:
        harness.seed(ALICE_RECORD)
        tickets = MemoryTickets()
        mine = await tickets.create(
            subject="Login fails",
            description="x",
            requester=ALICE,
            channel="rest",
            session_key=SESSION,
        )
        solved = await tickets.create(
            subject="Old", description="x", requester=ALICE, channel="rest", session_key=SESSION
        )
        await tickets.set_status(solved.id, "solved")
        result = await LookupCustomer()(
            LookupCustomerArgs(), ctx_for(ALICE, harness.backend, tickets)
        )
        assert result.content["found"] is True
        assert result.content["company"] == "Wonderland Ltd"
        assert result.content["open_tickets"] == [
            {"id": mine.id, "subject": "Login fails", "status": "open"}
        ]

    async def test_tool_refuses_another_customers_record(self, harness: CrmHarness) -> None:
        harness.seed(ALICE_RECORD)
        harness.seed(BOB_RECORD)
        ctx = ctx_for(ALICE, harness.backend, MemoryTickets())
        with pytest.raises(Forbidden, match="only their own"):
            await LookupCustomer()(LookupCustomerArgs(email="bob@example.com"), ctx)
        # An unverified customer claiming Bob's address gets nothing either.
        claimer = Participant(id="anon-1", email="bob@example.com", verified=False)
        with pytest.raises(Forbidden, match="not verified"):
            await LookupCustomer()(
                LookupCustomerArgs(), ctx_for(claimer, harness.backend, MemoryTickets())
            )
        assert harness.fake.received == []  # the CRM was never asked

    async def test_tool_fails_cleanly_while_crm_is_down(self, harness: CrmHarness) -> None:
        down = harness.make(harness.unreachable)
        harness.closing.append(down)
        with pytest.raises(ToolFailed, match="unavailable"):
            await LookupCustomer()(LookupCustomerArgs(), ctx_for(ALICE, down, MemoryTickets()))
        harness.fake.fail_next(429, retry_after="30")
        with pytest.raises(ToolFailed, match="retry after 30 s"):
            await LookupCustomer()(
                LookupCustomerArgs(), ctx_for(ALICE, harness.backend, MemoryTickets())
            )
