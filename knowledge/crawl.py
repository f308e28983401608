"""Web sources: single pages and whole sites read from their sitemap.

:func:`crawl_sitemap` reads a sitemap (the sitemaps.org protocol 0.9: ``<urlset>``,
``<sitemapindex>`` followed to its sitemaps, plain-text lists, RSS and Atom feeds; gzip-compressed
files too), parsed by ultimate-sitemap-parser, then fetches every listed page and keeps its main
content (:func:`knowledge.extract.web_page_to_markdown`, trafilatura). :func:`fetch_pages` does
the same for a list of page URLs.

Each page becomes one :class:`knowledge.chunk.Document` whose id and citation ``url`` are the
page URL as listed, so answers link to the page. Pages are fetched with aiohttp, at most
``concurrency`` at a time, and only from the sitemap's own scheme, host and port (the protocol
requires sitemap URLs to be on the sitemap's host). ``robots.txt`` of that host is honoured
(``urllib.robotparser``; a missing one allows everything). A page that cannot be fetched (an HTTP
error, a timeout, not HTML, too large) is reported in :attr:`CrawlResult.failed` and skipped; the
crawl goes on.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import aiohttp

from knowledge.chunk import Document
from knowledge.extract import web_page_to_markdown
from knowledge.ingest import IngestError

log = logging.getLogger(__name__)

#: The User-Agent of every request (and the name robots.txt rules are matched against).
USER_AGENT = "SwitchboardBot/0.1 (+knowledge base ingest)"
#: Pages fetched at once.
CONCURRENCY = 4
#: Seconds allowed for one request, connection included.
TIMEOUT_S = 30.0
#: Largest page or sitemap body read, in bytes (larger ones are skipped).
MAX_BODY_BYTES = 10 * 1024 * 1024
#: Sitemaps read at most in one crawl (an index and the sitemaps it lists).
MAX_SITEMAPS = 1000
#: Pages read at most in one crawl.
MAX_PAGES = 50_000

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

#: ``progress(done, total, url)``: pages fetched so far, pages to fetch, the page just done.
CrawlProgress = Callable[[int, int, str], None]


@dataclass(slots=True)
class CrawlResult:
    """What a crawl read.

    Attributes:
        documents: one per page read, in sitemap order.
        failed: ``(url, reason)`` of pages that were skipped.
    """

    documents: list[Document] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class _TooLarge(Exception):
    pass


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise _TooLarge(f"{response.content_length} bytes")
    body = await response.content.read(limit + 1)
    if len(body) > limit:
        raise _TooLarge(f"over {limit} bytes")
    return body


def _session(session: aiohttp.ClientSession | None, timeout_s: float) -> aiohttp.ClientSession:
    if session is not None:
        return session
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers={"User-Agent": USER_AGENT},
    )


async def _robots(session: aiohttp.ClientSession, url: str) -> RobotFileParser:
    """The robots.txt rules of ``url``'s host (allow-all when it has none or it fails)."""
    rules = RobotFileParser()
    try:
        async with session.get(urljoin(url, "/robots.txt")) as response:
            text = (await _read(response, MAX_BODY_BYTES)).decode("utf-8", "replace")
            if response.status >= 400:
                text = ""  # RFC 9309 §2.3.1.3: an unavailable robots.txt allows everything
    except (aiohttp.ClientError, TimeoutError, _TooLarge):
        text = ""
    rules.parse(text.splitlines())
    return rules


def _decompress(body: bytes, url: str) -> bytes:
    if not body.startswith(b"\x1f\x8b"):
        return body
    try:
        out = gzip.GzipFile(fileobj=io.BytesIO(body)).read(MAX_BODY_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"cannot decompress the sitemap: {exc}", source=url) from exc
    if len(out) > MAX_BODY_BYTES:
        raise IngestError(f"the sitemap is over {MAX_BODY_BYTES} bytes", source=url)
    return out


async def _get_sitemap(session: aiohttp.ClientSession, url: str) -> bytes | str:
    """A sitemap's body, or the reason it cannot be had."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return f"HTTP {response.status}"
            return await _read(response, MAX_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError, _TooLarge) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _sitemap_pages(
    session: aiohttp.ClientSession, sitemap_url: str, max_pages: int
) -> list[str]:
    """Page URLs listed by ``sitemap_url`` and the sitemaps it links to, in order, deduplicated.

    Raises:
        IngestError: when the first sitemap cannot be fetched (later ones are logged and skipped).
    """
    from usp.objects.sitemap import InvalidSitemap
    from usp.tree import sitemap_from_str

    origin = _origin(sitemap_url)
    queue = [sitemap_url]
    seen: set[str] = set()
    pages: dict[str, None] = {}
    while queue and len(seen) < MAX_SITEMAPS and len(pages) < max_pages:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        fetched = await _get_sitemap(session, url)
        if isinstance(fetched, str):
            if url == sitemap_url:
                raise IngestError(f"cannot fetch the sitemap: {fetched}", source=url)
            log.warning("knowledge.sitemap_failed", extra={"url": url, "error": fetched})
            continue
        body = fetched
        text = _decompress(body, url).decode("utf-8", "replace")
        parsed = await asyncio.to_thread(sitemap_from_str, text)
        for sub in parsed.sub_sitemaps:
            if isinstance(sub, InvalidSitemap) and _origin(sub.url) == origin:
                queue.append(sub.url)
        for page in parsed.all_pages():
            if _origin(page.url) == origin:
                pages[page.url] = None
    return list(pages)[:max_pages]


async def _fetch_page(
    session: aiohttp.ClientSession, url: str, source: str
) -> Document | tuple[str, str]:
    """One page as a document, or ``(url, reason)`` when it cannot be read."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return url, f"HTTP {response.status}"
            if response.content_type not in _HTML_TYPES:
                return url, f"not HTML ({response.content_type})"
            body = await _read(response, MAX_BODY_BYTES)
            charset = response.charset or "utf-8"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return url, f"{type(exc).__name__}: {exc}"
    except _TooLarge as exc:
        return url, f"too large: {exc}"
    try:
        html = body.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        html = body.decode("utf-8", "replace")
    title, text = await asyncio.to_thread(web_page_to_markdown, html, url=url)
    return Document(
        doc_id=url,
        title=title or url,
        text=text,
        format="markdown",
        url=url,
        source=source,
    )


async def fetch_pages(
    urls: Sequence[str],
    *,
    source: str | None = None,
    concurrency: int = CONCURRENCY,
    timeout_s: float = TIMEOUT_S,
    robots: bool = True,
    progress: CrawlProgress | None = None,
    session: aiohttp.ClientSession | None = None,
) -> CrawlResult:
    """Fetch web pages and keep their main content, ``concurrency`` at a time.

    Args:
        urls: page URLs; each becomes a document with that URL as id and citation link.
        source: recorded as the documents' ``source`` for messages (default: the URL itself);
            it is not part of the content, so a page listed by two sources is one document.
        concurrency: pages in flight at once.
        timeout_s: seconds per request.
        robots: honour each host's ``robots.txt``.
        progress: called after each page with ``(done, total, url)``.
        session: an aiohttp session to use (default: a new one, closed at the end).

    Returns:
        The documents read, in the order of ``urls``, and the pages skipped with the reason.
    """
    client = _session(session, timeout_s)
    result = CrawlResult()
    try:
        rules: dict[tuple[str, str], RobotFileParser] = {}
        if robots:
            for origin in dict.fromkeys(_origin(u) for u in urls):
                rules[origin] = await _robots(client, f"{origin[0]}://{origin[1]}/")
        gate = asyncio.Semaphore(max(1, concurrency))
        done = 0

        async def one(url: str) -> Document | tuple[str, str]:
            nonlocal done
            rule = rules.get(_origin(url))
            if rule is not None and not rule.can_fetch(USER_AGENT, url):
                outcome: Document | tuple[str, str] = (url, "disallowed by robots.txt")
            else:
                async with gate:
                    outcome = await _fetch_page(client, url, source or url)
            done += 1
            if progress is not None:
                progress(done, len(urls), url)
            return outcome

        for outcome in await asyncio.gather(*(one(u) for u in dict.fromkeys(urls))):
            if isinstance(outcome, Document):
                result.documents.append(outcome)
            else:
                result.failed.append(outcome)
                log.warning(
                    "knowledge.page_skipped", extra={"url": outcome[0], "reason": outcome[1]}
                )
    finally:
        if session is None:
            await client.close()
    return result


async def crawl_sitemap(
    sitemap_url: str,
    *,
    max_pages: int = MAX_PAGES,
    concurrency: int = CONCURRENCY,
    timeout_s: float = TIMEOUT_S,
    robots: bool = True,
    progress: CrawlProgress | None = None,
    session: aiohttp.ClientSession | None = None,
) -> CrawlResult:
    """Read every page a sitemap lists (see the module docstring).

    Args:
        sitemap_url: the sitemap (or sitemap index) URL, e.g.
            ``https://help.example.com/sitemap.xml``.
        max_pages: stop listing pages after this many.
        concurrency: pages in flight at once.
        timeout_s: seconds per request.
        robots: honour the host's ``robots.txt``.
        progress: called after each page with ``(done, total, url)``.
        session: an aiohttp session to use (default: a new one, closed at the end).

    Raises:
        IngestError: when the sitemap itself cannot be fetched or decompressed.
    """
    client = _session(session, timeout_s)
    try:
        urls = await _sitemap_pages(client, sitemap_url, max_pages)
        log.info("knowledge.sitemap_read", extra={"url": sitemap_url, "pages": len(urls)})
        return await fetch_pages(
            urls,
            source=sitemap_url,
            concurrency=concurrency,
            timeout_s=timeout_s,
            robots=robots,
            progress=progress,
            session=client,
        )
    finally:
        if session is None:
            await client.close()
