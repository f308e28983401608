"""Ingesting several sources at once, and keeping a knowledge base in step (--watch)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.config import Settings
from knowledge import KnowledgeBase
from knowledge.sync import Sources, SyncReport, ingest_sources, watch_sources
from tests.fakes.help_site import HelpSite
from tests.knowledge.embedders import CountingEmbedder


async def test_files_sitemaps_and_pages_in_one_pass(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    (tmp_path / "shipping.md").write_text(
        "# Shipping\n\nParcels leave our warehouse within two days.\n", encoding="utf-8"
    )
    async with HelpSite() as site:
        kb = await KnowledgeBase.open(settings, embedder=embedder)
        try:
            result = await ingest_sources(
                kb,
                Sources(
                    paths=(tmp_path / "shipping.md",),
                    sitemaps=(site.url("/sitemap.xml"),),
                    urls=(site.url("/help/refunds"),),  # also in the sitemap: unchanged
                ),
            )
            assert result.report.documents_added == 3
            assert result.report.documents_unchanged == 1
            assert {url for url, _ in result.failed_pages} == {
                site.url("/help/gone"),
                site.url("/private/internal-notes"),
            }
            assert await kb.document_count() == 3
        finally:
            await kb.close()


async def test_watch_ingests_changed_files_and_rereads_sites(
    settings: Settings, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Opening hours\n\nWe open at nine.\n", encoding="utf-8")
    syncs: asyncio.Queue[tuple[str, SyncReport]] = asyncio.Queue()
    stop = asyncio.Event()
    async with HelpSite() as site:
        kb = await KnowledgeBase.open(settings, embedder=embedder)
        watch = asyncio.create_task(
            watch_sources(
                kb,
                Sources(paths=(docs,), urls=(site.url("/help/refunds"),)),
                stop=stop,
                every_s=0.5,
                on_sync=lambda kind, report: syncs.put_nowait((kind, report)),
            )
        )
        try:
            kind, first = await asyncio.wait_for(syncs.get(), 30)
            assert (kind, first.report.documents_added) == ("all", 2)

            await asyncio.sleep(0.3)  # the watcher is set up once the first pass is done
            (docs / "b.md").write_text(
                "# Parking\n\nFree parking behind the shop.\n", encoding="utf-8"
            )
            title, _ = site.pages["/help/refunds"]
            site.pages["/help/refunds"] = (title, "<p>Refunds now take ten days.</p>")
            seen: dict[str, SyncReport] = {}
            while not ("files" in seen and seen["files"].report.documents_added == 1) or not (
                "web" in seen and seen["web"].report.documents_updated == 1
            ):
                kind, report = await asyncio.wait_for(syncs.get(), 30)
                if report.report.documents_added or report.report.documents_updated:
                    seen[kind] = report
            assert (await kb.search("where can I park my car?", top_k=1))[0].doc_id == "b"
        finally:
            stop.set()
            await asyncio.wait_for(watch, 10)
            await kb.close()


async def test_pages_gone_from_a_sitemap_are_pruned_and_failed_ones_kept(
    settings: Settings, embedder: CountingEmbedder
) -> None:
    async with HelpSite() as site:
        kb = await KnowledgeBase.open(settings, embedder=embedder)
        try:
            sources = Sources(sitemaps=(site.url("/sitemap.xml"),))
            first = await ingest_sources(kb, sources)
            assert first.report.documents_added == 2
            del site.pages["/help/refunds"]  # no longer listed
            site.pages.pop("/help/reset-password")  # still listed, fails to load this time
            site.extra_urls.append("/help/reset-password")
            site.pages["/help/shipping"] = ("Shipping", "<p>Parcels leave within two days.</p>")

            second = await ingest_sources(kb, sources)

            assert second.report.documents_removed == 1
            assert second.report.documents_added == 1
            assert site.url("/help/reset-password") in {u for u, _ in second.failed_pages}
            found = {p.doc_id for p in await kb.search("refund password parcels", top_k=10)}
            assert found == {site.url("/help/reset-password"), site.url("/help/shipping")}
        finally:
            await kb.close()
