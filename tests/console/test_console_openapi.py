"""The console API's OpenAPI document lists every console call and is a valid OpenAPI 3.1."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from bot.console import setup_console
from bot.console.openapi import console_openapi
from bot.console.routes import console_app
from tests.console.desk import open_desk


async def test_every_console_call_is_in_the_openapi_document(tmp_path: Path) -> None:
    async with open_desk(tmp_path) as desk:
        app = console_app(desk)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            resp = await client.get("/api/openapi.json")  # no session needed
            assert resp.status == 200
            doc = await resp.json()
        finally:
            await client.close()
    validate(doc)
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
        and r.method in ("GET", "POST", "PUT", "DELETE")
        and r.resource.canonical.startswith("/api/")
    }
    listed = {
        (method, path.removeprefix("/console"))
        for path, ops in doc["paths"].items()
        for method in ops
    }
    assert ("post", "/api/customers/erase") in routes
    assert {(m, p.replace("{session_key:.+}", "{session_key}")) for m, p in routes} == listed
    erase = doc["paths"]["/console/api/customers/erase"]["post"]
    assert erase["summary"].startswith("Delete or anonymize one customer")
    assert erase["security"] == [{"session": [], "csrf": []}]
    claim = doc["paths"]["/console/api/conversations/{session_key}/claim"]["post"]
    assert claim["parameters"][0]["name"] == "session_key"
    assert doc["paths"]["/console/api/login"]["post"]["security"] == []


async def test_the_mounted_console_lists_its_calls_too(tmp_path: Path) -> None:
    # Mounted, the console's routes carry the /console prefix: the document is the same.
    async with open_desk(tmp_path) as desk:
        alone = console_openapi(console_app(desk))
        server = web.Application()
        setup_console(server, desk)
        client = TestClient(TestServer(server, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            mounted = await (await client.get("/console/api/openapi.json")).json()
        finally:
            await client.close()
    assert "/console/api/conversations/{session_key}/claim" in mounted["paths"]
    assert mounted == alone
