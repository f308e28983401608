"""A small help-center web site for the crawl tests, served on 127.0.0.1 (port 0).

Pages carry navigation, a header and a footer around the article, as real help centers do, so
the tests see boilerplate removed. ``/sitemap.xml`` is a sitemap index pointing at a gzipped
``urlset``; ``robots.txt`` disallows ``/private/``. Every request path is recorded in
:attr:`HelpSite.requests`; :attr:`HelpSite.pages` can be edited between crawls.

Usage::

    async with HelpSite() as site:
        result = await crawl_sitemap(site.url("/sitemap.xml"))
"""

from __future__ import annotations

import gzip
from typing import Self

from aiohttp import web

LAYOUT = """<!doctype html><html><head><title>{title} | ACME Help Center</title></head><body>
<nav><a href="/">Home</a> <a href="/help/">All articles</a> <a href="/contact">Contact us</a></nav>
<header><p>ACME Help Center: search our articles</p></header>
<main><article><h1>{title}</h1>{body}</article></main>
<footer><p>Copyright 2024 ACME Corporation. Privacy policy. Cookie settings.</p></footer>
</body></html>"""

PAGES = {
    "/help/reset-password": (
        "Reset your password",
        "<p>Open the sign-in page and choose <b>Forgot password</b>. We e-mail you a link "
        "that lets you choose a new password.</p><h2>The link expired</h2>"
        "<p>Reset links stay valid for 24 hours. Ask for a new link from the same page.</p>",
    ),
    "/help/refunds": (
        "Refunds",
        "<p>Refunds are paid back to the original card within 5 business days after we "
        "receive the returned parcel.</p>",
    ),
    "/private/internal-notes": ("Internal", "<p>Staff only: escalation phone numbers.</p>"),
}


class HelpSite:
    """The site; start it with ``async with``."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, str]] = dict(PAGES)
        self.requests: list[str] = []
        self.extra_urls: list[str] = ["/help/gone", "http://elsewhere.example/help/x"]
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _page(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if request.path not in self.pages:
            raise web.HTTPNotFound()
        title, body = self.pages[request.path]
        return web.Response(text=LAYOUT.format(title=title, body=body), content_type="text/html")

    async def _robots(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.Response(text="User-agent: *\nDisallow: /private/\n")

    async def _index(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{self.url('/sitemap-help.xml.gz')}</loc></sitemap>"
            "</sitemapindex>"
        )
        return web.Response(text=xml, content_type="application/xml")

    async def _urlset(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        locs = [self.url(p) for p in self.pages] + [
            u if u.startswith("http") else self.url(u) for u in self.extra_urls
        ]
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            + "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
            + "</urlset>"
        )
        return web.Response(body=gzip.compress(xml.encode()), content_type="application/gzip")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.add_routes(
            [
                web.get("/robots.txt", self._robots),
                web.get("/sitemap.xml", self._index),
                web.get("/sitemap-help.xml.gz", self._urlset),
                web.get("/{path:.*}", self._page),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
