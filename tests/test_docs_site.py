"""The bundled docs are served at /docs/, so sample-KB citations open a real page."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.docs_site import docs_routes

DOCS = Path(__file__).resolve().parents[1] / "docs"


async def test_doc_pages_render_and_stay_inside_the_folder() -> None:
    app = web.Application()
    app.add_routes(docs_routes(DOCS))
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/docs/channels/slack")
        assert page.status == 200
        body = await page.text()
        assert "<h1>" in body
        assert "SWITCHBOARD_SLACK_SIGNING_SECRET" in body
        assert (await client.get("/docs/channels/slack.md")).status == 200
        assert (await client.get("/docs/nope")).status == 404
        assert (await client.get("/docs/..%2Fpyproject")).status == 404
        assert (await client.get("/docs/../../pyproject")).status == 404
