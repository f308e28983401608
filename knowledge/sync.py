"""Ingest from several kinds of source at once, once or continuously.

A :class:`Sources` names files and folders, sitemaps and single web pages. :func:`ingest_sources`
reads them all (files through :meth:`KnowledgeBase.ingest`, web pages through
:mod:`knowledge.crawl` and :meth:`KnowledgeBase.ingest_documents`) and adds the reports up.
:func:`watch_sources` keeps a knowledge base in step: it re-ingests the files when something
under the watched paths changes (``watchfiles``, which uses inotify on Linux and debounces bursts
of events), and re-reads web sources every ``every_s`` seconds. Unchanged documents cost nothing
either way (content hashes), so a re-sync only embeds what changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.crawl import CrawlProgress, crawl_sitemap, fetch_pages
from knowledge.ingest import SUPPORTED_SUFFIXES
from knowledge.kb import IngestReport, KnowledgeBase, Progress

log = logging.getLogger(__name__)

#: Seconds between two re-reads of web sources while watching (files re-ingest on change).
DEFAULT_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class Sources:
    """What to ingest.

    Attributes:
        paths: files and folders (see :mod:`knowledge.ingest` for the formats).
        sitemaps: sitemap URLs; every page they list is read (see :mod:`knowledge.crawl`).
        urls: single web pages.
        base_url: citation URL prefix of files without a URL of their own.
    """

    paths: tuple[Path, ...] = ()
    sitemaps: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    base_url: str | None = None

    @property
    def web(self) -> bool:
        """True when there is a sitemap or a page to read."""
        return bool(self.sitemaps or self.urls)


@dataclass(slots=True)
class SyncReport:
    """The added-up result of one pass over :class:`Sources`.

    Attributes:
        report: documents added, updated, unchanged and empty, chunks written, seconds.
        failed_pages: ``(url, reason)`` of web pages that could not be read.
    """

    report: IngestReport
    failed_pages: list[tuple[str, str]] = field(default_factory=list)


def add_reports(a: IngestReport, b: IngestReport) -> IngestReport:
    """The sum of two ingest reports (counts and seconds added)."""
    return IngestReport(
        documents_added=a.documents_added + b.documents_added,
        documents_updated=a.documents_updated + b.documents_updated,
        documents_unchanged=a.documents_unchanged + b.documents_unchanged,
        documents_removed=a.documents_removed + b.documents_removed,
        documents_empty=a.documents_empty + b.documents_empty,
        chunks_written=a.chunks_written + b.chunks_written,
        seconds=round(a.seconds + b.seconds, 3),
    )


_EMPTY = IngestReport(0, 0, 0, 0, 0, 0.0)


async def ingest_sources(
    kb: KnowledgeBase,
    sources: Sources,
    *,
    progress: Progress | None = None,
    fetching: CrawlProgress | None = None,
) -> SyncReport:
    """Read every source once and ingest it.

    Args:
        kb: the knowledge base.
        sources: what to read.
        progress: ``(done, total, doc_id)``: chunks embedded, for the files and then for the
            pages of each web source.
        fetching: ``(done, total, url)``: pages fetched, while each web source is read
            (default: ``progress``).

    Raises:
        knowledge.ingest.IngestError: a path is missing, a file is malformed, or a sitemap
            cannot be fetched (nothing of that source is written).
        bot.errors.BackendUnavailable: when Qdrant or a remote embedder fails.
    """
    total = _EMPTY
    failed: list[tuple[str, str]] = []
    fetching = fetching or progress
    if sources.paths:
        total = add_reports(
            total,
            await kb.ingest(list(sources.paths), base_url=sources.base_url, progress=progress),
        )
    for sitemap in sources.sitemaps:
        crawl = await crawl_sitemap(sitemap, progress=fetching)
        failed += crawl.failed
        # Pages gone from the sitemap are pruned; pages that failed this time are kept, and an
        # empty crawl (a site returning an empty sitemap by mistake) prunes nothing.
        origin = f"sitemap:{sitemap}" if crawl.documents else None
        report = await kb.ingest_documents(
            crawl.documents,
            progress=progress,
            origin=origin,
            keep=[url for url, _ in crawl.failed],
        )
        total = add_reports(total, report)
    if sources.urls:
        pages = await fetch_pages(list(sources.urls), progress=fetching)
        failed += pages.failed
        total = add_reports(total, await kb.ingest_documents(pages.documents, progress=progress))
    return SyncReport(total, failed)


def _relevant(change: object, path: str) -> bool:
    """Whether a changed path can affect the knowledge base (supported, not hidden)."""
    candidate = Path(path)
    if any(part.startswith(".") for part in candidate.parts[-3:]):
        return False
    return candidate.suffix.lower() in SUPPORTED_SUFFIXES or not candidate.suffix


async def watch_sources(
    kb: KnowledgeBase,
    sources: Sources,
    *,
    stop: asyncio.Event,
    every_s: float = DEFAULT_EVERY_S,
    on_sync: Callable[[str, SyncReport], None] | None = None,
    progress: Progress | None = None,
) -> None:
    """Keep ``kb`` in step with ``sources`` until ``stop`` is set (the first pass included).

    Files are ingested again when something under ``sources.paths`` changes (a burst of
    changes gives one pass); web sources are read again every ``every_s`` seconds. A pass that
    fails (a malformed file being written, a site that is down) is logged and the watch goes on.

    Args:
        kb: the knowledge base.
        sources: what to keep in step.
        stop: set it to end the watch.
        every_s: seconds between two reads of the web sources.
        on_sync: called after each pass with ``("files" | "web" | "all", report)``.
        progress: passed to :func:`ingest_sources`.
    """
    from bot.errors import SwitchboardError

    async def run(kind: str, part: Sources) -> None:
        try:
            report = await ingest_sources(kb, part, progress=progress)
        except SwitchboardError as exc:
            log.warning("knowledge.sync_failed", extra={"kind": kind, "error": str(exc)})
            return
        if on_sync is not None:
            on_sync(kind, report)

    files = Sources(paths=sources.paths, base_url=sources.base_url)
    web = Sources(sitemaps=sources.sitemaps, urls=sources.urls)
    await run("all", sources)

    async def watch_files() -> None:
        import watchfiles

        async for changes in watchfiles.awatch(
            *sources.paths, stop_event=stop, watch_filter=_relevant, recursive=True
        ):
            log.info("knowledge.files_changed", extra={"changes": len(changes)})
            await run("files", files)

    async def poll_web() -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            except TimeoutError:
                await run("web", web)

    tasks = []
    if sources.paths:
        tasks.append(asyncio.create_task(watch_files()))
    if sources.web:
        tasks.append(asyncio.create_task(poll_web()))
    try:
        if tasks:
            await asyncio.gather(*tasks)
        else:
            await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
