"""HubSpotCrm (the real hubspot-api-client) against the fake HubSpot CRM v3 API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.tools import CrmBackend, CustomerIdentity
from plugins.crm.hubspot import HubSpotCrm
from tests.fakes.crm_base import closed_port
from tests.fakes.hubspot_api import FakeHubSpot
from tests.plugins.crm.contract import CrmContract, CrmHarness, Customer, crm_settings


@pytest.fixture
async def harness() -> AsyncIterator[CrmHarness]:
    async with FakeHubSpot() as fake:

        def make(overrides: dict[str, Any]) -> CrmBackend:
            base = {"hubspot_access_token": fake.token, "hubspot_api_url": fake.base_url}
            return HubSpotCrm(crm_settings(**{**base, **overrides}))

        def seed(c: Customer) -> None:
            company_id = None
            if c.company:
                company_id = fake.add(
                    "companies", name=c.company, **({"plan": c.plan} if c.plan else {})
                )
            owner_id = None
            if c.owner:
                first, _, last = c.owner.partition(" ")
                owner_id = fake.add(
                    "owners", firstName=first, lastName=last, email="o@example.com"
                )
            props = {"firstname": c.first, "lastname": c.last}
            optional = {
                "email": c.email,
                "phone": c.phone,
                "switchboard_id": c.platform_key,
                "associatedcompanyid": company_id,
                "hubspot_owner_id": owner_id,
            }
            fake.add("contacts", **props, **{k: v for k, v in optional.items() if v})

        def searched() -> list[str]:
            return [
                f["value"]
                for r in fake.requests_to("/contacts/search")
                for g in r.body.get("filterGroups", [])
                for f in g["filters"]
            ]

        h = CrmHarness(
            backend=make({}),
            fake=fake,
            seed=seed,
            searched=searched,
            make=make,
            unreachable={"hubspot_api_url": f"http://127.0.0.1:{closed_port()}"},
            bad_token={"hubspot_access_token": "pat-na1-wrong"},
        )
        yield h
        for backend in [h.backend, *h.closing]:
            await backend.close()


class TestHubSpotContract(CrmContract):
    async def test_company_comes_from_a_companies_search(self, harness: CrmHarness) -> None:
        assert isinstance(harness.fake, FakeHubSpot)
        harness.seed(Customer("Carol", "C", email="carol@example.com", company="Acme"))
        await harness.backend.find_contact(
            CustomerIdentity("rest", "U-carol", "carol@example.com", None, True)
        )
        company_searches = harness.fake.requests_to("/companies/search")
        assert len(company_searches) == 1
        body = company_searches[0].body
        assert body["filterGroups"][0]["filters"][0]["propertyName"] == "hs_object_id"
