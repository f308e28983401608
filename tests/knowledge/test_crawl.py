"""Site crawls from a sitemap, against a help-center site served on 127.0.0.1."""

from __future__ import annotations

import pytest

from bot.config import Settings
from knowledge import KnowledgeBase
from knowledge.crawl import crawl_sitemap, fetch_pages
from knowledge.ingest import IngestError
from tests.fakes.help_site import HelpSite
from tests.knowledge.embedders import CountingEmbedder


async def test_sitemap_index_gzip_robots_and_boilerplate() -> None:
    async with HelpSite() as site:
        seen: list[tuple[int, int, str]] = []
        result = await crawl_sitemap(site.url("/sitemap.xml"), progress=lambda *a: seen.append(a))

        by_url = {d.doc_id: d for d in result.documents}
        reset = by_url[site.url("/help/reset-password")]
        assert reset.url == site.url("/help/reset-password")
        assert reset.title == "Reset your password"
        assert "## The link expired" in reset.text
        assert "Forgot password" in reset.text
        for boilerplate in ("Contact us", "Copyright", "search our articles"):
            assert boilerplate not in reset.text
        assert set(by_url) == {site.url("/help/reset-password"), site.url("/help/refunds")}
        failed = dict(result.failed)
        assert failed[site.url("/private/internal-notes")] == "disallowed by robots.txt"
        assert failed[site.url("/help/gone")] == "HTTP 404"
        assert "/private/internal-notes" not in site.requests  # never fetched
        assert all("elsewhere.example" not in url for url, _ in result.failed)  # other host
        assert seen[-1][:2] == (4, 4)


async def test_a_missing_sitemap_is_an_ingest_error() -> None:
    async with HelpSite() as site:
        with pytest.raises(
            IngestError, match=r"sitemap-none\.xml: cannot fetch the sitemap: HTTP"
        ):
            await crawl_sitemap(site.url("/sitemap-none.xml"))


async def test_crawled_pages_are_searchable_and_cited_by_their_url(
    settings: Settings, embedder: CountingEmbedder
) -> None:
    async with HelpSite() as site:
        kb = await KnowledgeBase.open(settings, embedder=embedder)
        try:
            result = await crawl_sitemap(site.url("/sitemap.xml"))
            report = await kb.ingest_documents(result.documents)
            assert report.documents_added == 2

            hit = (await kb.search("I forgot my password, how do I get a new one?"))[0]
            assert hit.url == site.url("/help/reset-password")
            assert hit.citation().url == site.url("/help/reset-password")

            # A re-crawl of unchanged pages embeds nothing; a changed page is replaced.
            title, _ = site.pages["/help/refunds"]
            site.pages["/help/refunds"] = (title, "<p>Refunds take 10 business days.</p>")
            before = embedder.texts
            again = await kb.ingest_documents(
                (await crawl_sitemap(site.url("/sitemap.xml"))).documents
            )
            assert (again.documents_unchanged, again.documents_updated) == (1, 1)
            assert embedder.texts - before == 1
        finally:
            await kb.close()


async def test_single_pages_by_url() -> None:
    async with HelpSite() as site:
        result = await fetch_pages([site.url("/help/refunds"), site.url("/help/gone")])
        assert [d.title for d in result.documents] == ["Refunds"]
        assert result.failed == [(site.url("/help/gone"), "HTTP 404")]
