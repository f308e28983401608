"""SalesforceCrm (the real simple-salesforce) against the fake Salesforce REST API (HTTPS)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.envelope import Participant
from bot.tools import CrmBackend, CustomerIdentity
from plugins.crm.salesforce import SalesforceCrm
from tests.fakes.crm_base import closed_port
from tests.fakes.salesforce_api import FakeSalesforce
from tests.plugins.crm.contract import CrmContract, CrmHarness, Customer, crm_settings


def salesforce_harness(fake: FakeSalesforce, **auth: Any) -> CrmHarness:
    assert fake.ca_file is not None
    ca_file = fake.ca_file

    def make(overrides: dict[str, Any]) -> CrmBackend:
        base = {
            "salesforce_instance_url": fake.base_url,
            "crm_platform_id_field": "Switchboard_Id__c",
            "crm_plan_field": "Plan__c",
            **auth,
        }
        return SalesforceCrm(crm_settings(**{**base, **overrides}), verify=ca_file)

    def seed(c: Customer) -> None:
        account = fake.add("Account", Name=c.company, Plan__c=c.plan) if c.company else None
        owner = fake.add("User", Name=c.owner) if c.owner else None
        fake.add(
            "Contact",
            FirstName=c.first,
            LastName=c.last,
            Email=c.email,
            Phone=c.phone,
            Switchboard_Id__c=c.platform_key,
            AccountId=account,
            OwnerId=owner,
        )

    def searched() -> list[str]:
        return [v for q in fake.soql for v in re.findall(r"= '([^']*)'", q)]

    return CrmHarness(
        backend=make({}),
        fake=fake,
        seed=seed,
        searched=searched,
        make=make,
        unreachable={"salesforce_instance_url": f"https://127.0.0.1:{closed_port()}"},
        bad_token={"salesforce_access_token": "00Dwrong!token"},
    )


@pytest.fixture
async def harness() -> AsyncIterator[CrmHarness]:
    async with FakeSalesforce() as fake:
        h = salesforce_harness(fake, salesforce_access_token=fake.token)
        yield h
        for backend in [h.backend, *h.closing]:
            await backend.close()


class TestSalesforceContract(CrmContract):
    async def test_query_is_soql_on_contact_with_quoted_values(self, harness: CrmHarness) -> None:
        assert isinstance(harness.fake, FakeSalesforce)
        sly = Participant(id="U-x", email="o'hara@example.com", verified=True)
        await harness.backend.find_contact(CustomerIdentity.of(sly, "rest"))
        query = harness.fake.soql[0]
        assert query.startswith("SELECT Id, Name, Email, Phone, Account.Name, Owner.Name")
        assert "FROM Contact WHERE Email = 'o\\'hara@example.com'" in query


async def test_client_credentials_token_is_fetched_and_renewed() -> None:
    async with FakeSalesforce() as fake:
        h = salesforce_harness(
            fake, salesforce_client_id=fake.client_id, salesforce_client_secret=fake.client_secret
        )
        h.seed(Customer("Alice", "L", email="alice@example.com", company="W"))
        alice = CustomerIdentity("rest", "U-a", "alice@example.com", None, True)
        assert (await h.backend.find_contact(alice)) is not None
        fake.token = "rotated-away"  # the org revoked the session: the next call gets 401
        contact = await h.backend.find_contact(alice)
        assert contact is not None
        assert contact.company == "W"
        token_requests = fake.requests_to("/oauth2/token")
        assert len(token_requests) == 2
        assert token_requests[0].body == {
            "grant_type": "client_credentials",
            "client_id": fake.client_id,
        }
        await h.backend.close()
