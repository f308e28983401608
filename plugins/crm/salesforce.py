"""Salesforce CRM backend: Contact and Account through ``simple-salesforce`` (REST API).

Wire format: ``GET {instance_url}/services/data/v{version}/query?q={SOQL}`` answered with
``{"totalSize", "done", "records": [{"attributes": {...}, "Id", ...}]}``
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm),
``GET .../limits/`` for the doctor, ``Authorization: Bearer {access token}``. Access tokens come
from the configured token, or from the OAuth 2.0 client credentials flow of a connected app
(``POST {instance_url}/services/oauth2/token``, ``grant_type=client_credentials``:
https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm),
fetched again once when a call answers 401. HTTP 429 with ``Retry-After`` becomes
:class:`~bot.errors.RateLimited`.

The SDK is synchronous (requests): calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError
from simple_salesforce.format import format_soql

from bot.config import Settings
from bot.errors import BackendUnavailable, ConfigError, RateLimited
from bot.tools import BackendCheck, CrmContact, CustomerIdentity
from plugins.crm.errors import Cooldown, http_failure, unreachable

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _HttpFailure(Exception):
    """Raised by the session's response hook for a 401 or 429 (before the SDK reads it)."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers


def _raise_for_throttle(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """``requests`` response hook: a 401/429 leaves the SDK as :class:`_HttpFailure`."""
    if response.status_code in (401, 429):
        raise _HttpFailure(response.status_code, dict(response.headers))


class SalesforceCrm:
    """:class:`bot.tools.CrmBackend` on Salesforce.

    Lookup order: ``Contact.Email`` = the verified e-mail, else ``Phone`` or ``MobilePhone`` =
    the E.164 number, else the ``crm_platform_id_field`` field (e.g. ``Switchboard_Id__c``) =
    ``{channel}:{platform id}``. Company is ``Account.Name``, the plan ``Account.{plan
    field}``, the owner ``Owner.Name``. Values are quoted with ``format_soql``.

    Args:
        settings: ``salesforce_instance_url`` and either ``salesforce_access_token`` or
            ``salesforce_client_id`` + ``salesforce_client_secret``; ``salesforce_api_version``,
            ``crm_timeout_s``, ``crm_platform_id_field``, ``crm_plan_field``.
        verify: TLS verification for ``requests``: True (the system's CAs, or
            ``REQUESTS_CA_BUNDLE``), or a CA bundle path (then the environment is ignored).

    Raises:
        ConfigError: when the instance URL or the credentials are missing, or a configured
            field is not an API name (they are written into SOQL).
    """

    name = "salesforce"

    def __init__(self, settings: Settings, *, verify: bool | str = True) -> None:
        if not settings.salesforce_instance_url:
            raise ConfigError("crm_backend salesforce needs SWITCHBOARD_SALESFORCE_INSTANCE_URL")
        client_creds = settings.salesforce_client_id and settings.salesforce_client_secret
        if settings.salesforce_access_token is None and not client_creds:
            raise ConfigError(
                "crm_backend salesforce needs SWITCHBOARD_SALESFORCE_ACCESS_TOKEN, or "
                "SWITCHBOARD_SALESFORCE_CLIENT_ID and SWITCHBOARD_SALESFORCE_CLIENT_SECRET"
            )
        for field in (settings.crm_plan_field, settings.crm_platform_id_field):
            if field is not None and not _FIELD_NAME.match(field):
                raise ConfigError(f"{field!r} is not a Salesforce field API name")
        self._settings = settings
        self._instance_url = settings.salesforce_instance_url.rstrip("/")
        self._timeout = settings.crm_timeout_s
        self._cooldown = Cooldown(self.name)
        self._session = requests.Session()
        self._session.verify = verify
        if verify is not True:
            # requests lets REQUESTS_CA_BUNDLE override a session's own CA bundle.
            self._session.trust_env = False
        self._session.hooks["response"].append(_raise_for_throttle)
        self._lock = threading.Lock()
        self._sf: Salesforce | None = None

    async def find_contact(self, identity: CustomerIdentity) -> CrmContact | None:
        """See :meth:`bot.tools.CrmBackend.find_contact`."""
        fields = "Id, Name, Email, Phone, Account.Name, Owner.Name"
        plan = self._settings.crm_plan_field
        if plan:
            fields += f", Account.{plan}"
        wheres: list[str] = []
        if identity.email:
            wheres.append(format_soql("Email = {}", identity.email))
        if identity.phone:
            wheres.append(format_soql("Phone = {0} OR MobilePhone = {0}", identity.phone))
        id_field = self._settings.crm_platform_id_field
        if id_field:
            wheres.append(format_soql(f"{id_field} = {{}}", identity.platform_key))
        for where in wheres:
            soql = f"SELECT {fields} FROM Contact WHERE {where} ORDER BY CreatedDate LIMIT 1"
            page = await self._call(functools.partial(self._query, soql=soql))
            records = page.get("records") or []
            if records:
                return self._contact(records[0])
        return None

    async def check(self) -> BackendCheck:
        """Read the org's API limits (``GET /limits``): needs a valid token with API access."""
        try:
            limits = await self._call(lambda sf: sf.limits(timeout=self._timeout))
        except (BackendUnavailable, RateLimited) as exc:
            return BackendCheck(self.name, False, f"limits request failed: {exc}")
        daily = limits.get("DailyApiRequests") or {}
        left = daily.get("Remaining")
        detail = "REST API answered (token valid)"
        if left is not None:
            detail += f"; {left} daily API requests left"
        return BackendCheck(self.name, True, detail)

    async def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def _query(self, sf: Salesforce, *, soql: str) -> dict[str, Any]:
        return dict(sf.query(soql, timeout=self._timeout))

    def _contact(self, rec: dict[str, Any]) -> CrmContact:
        account = rec.get("Account") or {}
        owner = rec.get("Owner") or {}
        plan = self._settings.crm_plan_field
        return CrmContact(
            id=str(rec["Id"]),
            name=rec.get("Name"),
            email=rec.get("Email"),
            phone=rec.get("Phone"),
            company=account.get("Name"),
            plan=str(account[plan]) if plan and account.get(plan) is not None else None,
            owner=owner.get("Name"),
            url=f"{self._instance_url}/lightning/r/Contact/{rec['Id']}/view",
        )

    # --- SDK calls (worker thread) ----------------------------------------------------------

    def _client(self, *, fresh: bool = False) -> Salesforce:
        with self._lock:
            if self._sf is None or fresh:
                self._sf = Salesforce(
                    session_id=self._token(),
                    instance_url=self._instance_url,
                    version=self._settings.salesforce_api_version,
                    session=self._session,
                )
            return self._sf

    def _token(self) -> str:
        s = self._settings
        if s.salesforce_client_id and s.salesforce_client_secret:
            response = self._session.post(
                f"{self._instance_url}/services/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": s.salesforce_client_id,
                    "client_secret": s.salesforce_client_secret.get_secret_value(),
                },
                timeout=self._timeout,
            )
            if response.status_code != 200:
                raise _HttpFailure(response.status_code, dict(response.headers))
            return str(response.json()["access_token"])
        assert s.salesforce_access_token is not None
        return s.salesforce_access_token.get_secret_value()

    def _run(self, fn: Callable[[Salesforce], _T]) -> _T:
        try:
            return fn(self._client())
        except _HttpFailure as exc:
            can_refresh = self._settings.salesforce_client_id is not None
            if exc.status != 401 or not can_refresh:
                raise
        return fn(self._client(fresh=True))

    async def _call(self, fn: Callable[[Salesforce], _T]) -> _T:
        """Run an SDK call in a thread; its errors as :mod:`bot.errors` types.

        Raises:
            bot.errors.RateLimited: HTTP 429 (``retry_after`` from ``Retry-After``), or an
                earlier 429's ``Retry-After`` has not passed (no request is sent).
            bot.errors.BackendUnavailable: any other failure (status only, never the body).
        """
        self._cooldown.check()
        try:
            return await asyncio.to_thread(self._run, fn)
        except _HttpFailure as exc:
            failure = http_failure(self.name, exc.status, exc.headers)
            self._cooldown.note(failure)
            raise failure from exc
        except SalesforceError as exc:
            raise http_failure(self.name, exc.status, None) from exc
        except (requests.RequestException, OSError, ValueError) as exc:
            raise unreachable(self.name, exc) from exc
