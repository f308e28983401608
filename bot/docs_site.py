"""The bundled documentation as web pages, so sample-KB citations link somewhere real.

``/docs/{doc_id}`` renders ``{sample_kb_dir}/{doc_id}.md`` (CommonMark, raw HTML disabled) in a
plain page (its stylesheet is ``/docs/_static/docs.css``; the Content-Security-Policy of
:mod:`bot.web_security` allows no inline style or script). Doc ids are the ones
``switchboard ingest`` gives files: the path below the folder, without the ``.md`` suffix.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from markdown_it import MarkdownIt

STYLESHEET_PATH = "/docs/_static/docs.css"
"""Where the pages' stylesheet is served (a file, so the CSP needs no ``'unsafe-inline'``)."""

_CSS = """body { font: 16px/1.55 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2933; }
pre, code { background: #f3f4f6; border-radius: 4px; }
pre { padding: .75rem; overflow-x: auto; }
table { border-collapse: collapse; }
td, th { border: 1px solid #d1d5db; padding: .3rem .5rem; }
a { color: #2563eb; }
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Switchboard docs</title>
<link rel="stylesheet" href="{stylesheet}">
</head><body>
<p><a href="/docs/quickstart">Switchboard documentation</a></p>
{body}
</body></html>"""


def docs_routes(docs_dir: Path) -> Sequence[web.RouteDef]:
    """Routes serving ``docs_dir`` (Markdown files) under ``/docs/``.

    Unknown pages and paths that leave ``docs_dir`` answer 404.
    """
    root = docs_dir.resolve()
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    async def page(request: web.Request) -> web.Response:
        doc_id = request.match_info["doc_id"].removesuffix(".md").strip("/")
        path = (root / f"{doc_id}.md").resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound(text=f"no page {doc_id!r}")
        text = path.read_text(encoding="utf-8")
        title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), doc_id)
        body = md.render(text)
        return web.Response(
            text=_PAGE.format(title=html.escape(title), body=body, stylesheet=STYLESHEET_PATH),
            content_type="text/html",
        )

    async def stylesheet(request: web.Request) -> web.Response:
        return web.Response(
            text=_CSS, content_type="text/css", headers={"Cache-Control": "public, max-age=300"}
        )

    return [web.get(STYLESHEET_PATH, stylesheet), web.get("/docs/{doc_id:.+}", page)]
