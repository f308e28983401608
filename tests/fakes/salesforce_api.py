"""A fake Salesforce REST API on loopback (HTTPS) that records every request.

Serves, as documented in the REST API Developer Guide
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/):

- ``GET /services/data/v{version}/query?q=SOQL``: ``SELECT f1, Rel.f2 FROM Contact WHERE
  A = 'x' OR B = 'y' [ORDER BY ...] LIMIT n`` (equality conditions joined by ``OR``, values
  quoted as ``format_soql`` does), answered ``{"totalSize", "done": true, "records": [...]}``
  with each record's ``attributes`` and relationship fields (``Account.Name``) as nested
  records (null when the lookup is empty).
- ``GET /services/data/v{version}/limits/``: ``DailyApiRequests`` ``Max``/``Remaining``.
- ``POST /services/oauth2/token`` with ``grant_type=client_credentials``: a new access token.

A wrong or expired token gets 401 ``[{"errorCode": "INVALID_SESSION_ID", ...}]``. HTTPS only,
because ``simple_salesforce`` builds ``https://`` URLs: pass :attr:`ca_file` as ``verify``.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.crm_base import FakeCrmServer, Received

_CONDITION = re.compile(r"(\w+)\s*=\s*'((?:[^'\\]|\\.)*)'")
_SELECT = re.compile(
    r"^SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER BY\s+\w+)?(?:\s+LIMIT\s+(?P<limit>\d+))?$",
    re.IGNORECASE | re.DOTALL,
)
_RELATIONS = {"Account": ("AccountId", "Account"), "Owner": ("OwnerId", "User")}


@dataclass
class FakeSalesforce(FakeCrmServer):
    """The fake (an async context manager, HTTPS).

    Attributes:
        client_id, client_secret: the connected app the token endpoint accepts.
        sobjects: records by type (``Contact``, ``Account``, ``User``) then Id (seed with
            :meth:`add`).
        soql: every SOQL query received, in order.
    """

    tls: bool = True
    client_id: str = "3MVG9-test-consumer-key"
    client_secret: str = "test-consumer-secret"
    sobjects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"Contact": {}, "Account": {}, "User": {}}
    )
    soql: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, sobject: str, **fields: Any) -> str:
        """Seed a record; returns its 18-character Id."""
        prefix = {"Contact": "003", "Account": "001", "User": "005"}[sobject]
        record_id = f"{prefix}5g00000{next(self._ids):08d}"[:15] + "AAA"
        if sobject == "Contact" and "Name" not in fields:
            fields["Name"] = " ".join(
                str(fields[k]) for k in ("FirstName", "LastName") if fields.get(k)
            )
        self.sobjects[sobject][record_id] = {"Id": record_id, **fields}
        return record_id

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/services/data/v{version}/query/", self._query)
        app.router.add_get("/services/data/v{version}/limits/", self._limits)
        app.router.add_post("/services/oauth2/token", self._oauth_token)

    def unauthorized(self) -> web.Response:
        return web.json_response(
            [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
            status=401,
        )

    async def _oauth_token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.received.append(
            _received(request, {k: v for k, v in form.items() if k != "client_secret"})
        )
        ok = (
            form.get("grant_type") == "client_credentials"
            and form.get("client_id") == self.client_id
            and form.get("client_secret") == self.client_secret
        )
        if not ok:
            return web.json_response(
                {"error": "invalid_client", "error_description": "invalid client credentials"},
                status=400,
            )
        self.token = secrets.token_hex(8)
        return web.json_response(
            {
                "access_token": self.token,
                "instance_url": self.base_url,
                "id": f"{self.base_url}/id/00D000000000001AAA/005000000000001AAA",
                "token_type": "Bearer",
                "issued_at": "1767607200000",
                "signature": "c2lnbmF0dXJl",
            }
        )

    async def _limits(self, request: web.Request) -> web.Response:
        failed = await self.guard(request)
        if failed is not None:
            return failed
        return web.json_response({"DailyApiRequests": {"Max": 15000, "Remaining": 14990}})

    async def _query(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        failed = await self.guard(request, q)
        if failed is not None:
            return failed
        self.soql.append(q)
        m = _SELECT.match(q.strip())
        if m is None or m["obj"] not in self.sobjects:
            return web.json_response(
                [{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}], status=400
            )
        fields = [f.strip() for f in m["fields"].split(",")]
        conditions = [(f, _unquote(v)) for f, v in _CONDITION.findall(m["where"] or "")]
        records = self.sobjects[m["obj"]].values()
        hits = [
            r
            for r in records
            if not conditions or any(r.get(f) is not None and r.get(f) == v for f, v in conditions)
        ]
        hits = hits[: int(m["limit"] or 2000)]
        out = [self._render(m["obj"], r, fields, request.match_info["version"]) for r in hits]
        return web.json_response({"totalSize": len(out), "done": True, "records": out})

    def _render(
        self, sobject: str, record: dict[str, Any], fields: list[str], version: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": _attributes(sobject, record["Id"], version)}
        for f in fields:
            if "." not in f:
                out[f] = record.get(f)
                continue
            rel, sub = f.split(".", 1)
            key, target = _RELATIONS[rel]
            related = self.sobjects[target].get(record.get(key) or "")
            if related is None:
                out[rel] = None
                continue
            nested = out.get(rel) or {"attributes": _attributes(target, related["Id"], version)}
            nested[sub] = related.get(sub)
            out[rel] = nested
        return out


def _attributes(sobject: str, record_id: str, version: str) -> dict[str, str]:
    return {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{record_id}"}


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _received(request: web.Request, body: Any) -> Received:
    return Received(request.method, request.path, dict(request.query), body, None, 200)
