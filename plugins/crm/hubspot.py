"""HubSpot CRM backend: contacts and companies through ``hubspot-api-client`` (CRM v3).

Wire format: ``POST /crm/v3/objects/contacts/search`` and ``POST
/crm/v3/objects/companies/search`` with ``{"filterGroups": [{"filters": [{"propertyName",
"operator": "EQ", "value"}]}], "properties": [...], "limit": 1}``, answered with ``{"total",
"results": [{"id", "properties": {...}}]}``
(https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/search/post-crm-v3-objects-contacts-search).
``GET /crm/v3/owners/{ownerId}`` answers ``{"id", "email", "firstName", "lastName"}``.
Authentication: a private app's access token as ``Authorization: Bearer``. Rate limits: HTTP
429 with ``Retry-After`` (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines).

The SDK is synchronous (urllib3): calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from hubspot import HubSpot
from hubspot.crm.companies import PublicObjectSearchRequest as CompanySearch
from hubspot.crm.companies.exceptions import ApiException as CompanyApiException
from hubspot.crm.contacts import PublicObjectSearchRequest as ContactSearch
from hubspot.crm.contacts.exceptions import ApiException as ContactApiException
from hubspot.crm.owners.exceptions import ApiException as OwnerApiException

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError
from bot.tools import BackendCheck, CrmContact, CustomerIdentity
from plugins.crm.errors import Cooldown, http_failure, unreachable

log = logging.getLogger(__name__)

CONTACT_PROPERTIES = (
    "firstname",
    "lastname",
    "email",
    "phone",
    "company",
    "associatedcompanyid",
    "hubspot_owner_id",
)
"""Contact properties read (HubSpot's default property names)."""

_T = TypeVar("_T")


def _eq(prop: str, value: str) -> dict[str, Any]:
    """One HubSpot search filter group: ``prop`` equals ``value``."""
    return {"filters": [{"propertyName": prop, "operator": "EQ", "value": value}]}


class HubSpotCrm:
    """:class:`bot.tools.CrmBackend` on HubSpot.

    Lookup order: ``email`` EQ the verified e-mail, else ``phone`` EQ the E.164 number, else
    the ``crm_platform_id_field`` property EQ ``{channel}:{platform id}``. The company is the
    contact's primary associated company (``associatedcompanyid``, read with a companies
    search), falling back to the contact's ``company`` text; the plan is the company's (else
    the contact's) ``crm_plan_field`` property; the owner is the name of the ``hubspot_owner_id``
    owner (``GET /crm/v3/owners/{id}``; the id when that fails, e.g. without the
    ``crm.objects.owners.read`` scope).

    Args:
        settings: ``hubspot_access_token``, ``hubspot_api_url``, ``crm_timeout_s``,
            ``crm_platform_id_field``, ``crm_plan_field``.

    Raises:
        ConfigError: when ``hubspot_access_token`` is not set.
    """

    name = "hubspot"

    def __init__(self, settings: Settings) -> None:
        if settings.hubspot_access_token is None:
            raise ConfigError("crm_backend hubspot needs SWITCHBOARD_HUBSPOT_ACCESS_TOKEN")
        self._client = HubSpot(
            access_token=settings.hubspot_access_token.get_secret_value(),
            host=settings.hubspot_api_url.rstrip("/"),
            # One attempt: a 429 goes back to the caller with its Retry-After.
            retry=urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0),
        )
        self._timeout = settings.crm_timeout_s
        self._cooldown = Cooldown(self.name)
        self._id_field = settings.crm_platform_id_field
        self._plan_field = settings.crm_plan_field
        self._portal_url = "https://app.hubspot.com/contacts"

    async def find_contact(self, identity: CustomerIdentity) -> CrmContact | None:
        """See :meth:`bot.tools.CrmBackend.find_contact`."""
        keys = [("email", identity.email), ("phone", identity.phone)]
        if self._id_field:
            keys.append((self._id_field, identity.platform_key))
        for prop, value in keys:
            if not value:
                continue
            found = await self._call(self._search_contact, prop, value)
            if found is not None:
                return await self._contact(found)
        return None

    async def check(self) -> BackendCheck:
        """Search contacts with limit 1: needs a valid token with ``crm.objects.contacts.read``."""
        request = ContactSearch(filter_groups=[], properties=["email"], limit=1)
        try:
            await self._call(
                lambda: self._client.crm.contacts.search_api.do_search(
                    public_object_search_request=request, _request_timeout=self._timeout
                )
            )
        except BackendUnavailable as exc:
            return BackendCheck(self.name, False, f"contacts search failed: {exc}")
        return BackendCheck(self.name, True, "contacts search answered (token and scope valid)")

    async def close(self) -> None:
        """Nothing to release (the SDK opens a pool per API object)."""

    # --- SDK calls (worker thread) ----------------------------------------------------------

    def _search_contact(self, prop: str, value: str) -> dict[str, Any] | None:
        props = list(CONTACT_PROPERTIES)
        if self._id_field:
            props.append(self._id_field)
        if self._plan_field:
            props.append(self._plan_field)
        request = ContactSearch(
            filter_groups=[_eq(prop, value)],
            properties=props,
            limit=1,
        )
        page = self._client.crm.contacts.search_api.do_search(
            public_object_search_request=request, _request_timeout=self._timeout
        )
        if not page.results:
            return None
        hit = page.results[0]
        return {"id": str(hit.id), **(hit.properties or {})}

    def _search_company(self, company_id: str) -> dict[str, Any] | None:
        props = ["name", "domain"] + ([self._plan_field] if self._plan_field else [])
        request = CompanySearch(
            filter_groups=[
                {
                    "filters": [
                        {"propertyName": "hs_object_id", "operator": "EQ", "value": company_id}
                    ]
                }
            ],
            properties=props,
            limit=1,
        )
        page = self._client.crm.companies.search_api.do_search(
            public_object_search_request=request, _request_timeout=self._timeout
        )
        return dict(page.results[0].properties or {}) if page.results else None

    def _owner_name(self, owner_id: str) -> str | None:
        owner = self._client.crm.owners.owners_api.get_by_id(
            owner_id=int(owner_id), _request_timeout=self._timeout
        )
        name = " ".join(p for p in (owner.first_name, owner.last_name) if p)
        return name or owner.email or None

    async def _contact(self, props: dict[str, Any]) -> CrmContact:
        company_name = props.get("company") or None
        plan = props.get(self._plan_field) if self._plan_field else None
        company_id = props.get("associatedcompanyid")
        if company_id:
            company = await self._call(self._search_company, str(company_id))
            if company is not None:
                company_name = company.get("name") or company_name
                if self._plan_field:
                    plan = company.get(self._plan_field) or plan
        owner = props.get("hubspot_owner_id") or None
        if owner and owner.isdigit():
            # Without the crm.objects.owners.read scope, or for a removed owner: the id.
            with contextlib.suppress(BackendUnavailable):
                owner = await self._call(self._owner_name, owner) or owner
        name = " ".join(p for p in (props.get("firstname"), props.get("lastname")) if p)
        return CrmContact(
            id=props["id"],
            name=name or None,
            email=props.get("email") or None,
            phone=props.get("phone") or None,
            company=company_name,
            plan=plan or None,
            owner=owner,
            url=f"{self._portal_url}/record/0-1/{props['id']}",
        )

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run an SDK call in a thread; its errors as :mod:`bot.errors` types.

        Raises:
            bot.errors.RateLimited: HTTP 429 (``retry_after`` from ``Retry-After``), or an
                earlier 429's ``Retry-After`` has not passed (no request is sent).
            bot.errors.BackendUnavailable: any other failure (status only, never the body).
        """
        self._cooldown.check()
        try:
            return await asyncio.to_thread(fn, *args)
        except (ContactApiException, CompanyApiException, OwnerApiException) as exc:
            failure = http_failure(self.name, exc.status, exc.headers)
            self._cooldown.note(failure)
            raise failure from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unreachable(self.name, exc) from exc
