"""Screenshots of the console for ``docs/console.md``, taken by the browser tests.

With ``SWITCHBOARD_SCREENSHOTS=1`` the Chromium tests write PNGs to ``docs/images/`` (what the
docs show is what the suite saw); otherwise :func:`shot` does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
"""Where the docs' screenshots live."""

SHOTS = os.environ.get("SWITCHBOARD_SCREENSHOTS") == "1"
"""Whether this run writes them."""


async def shot(page: Any, name: str, **kwargs: Any) -> None:
    """Save ``page`` (a Playwright page) as ``docs/images/<name>`` when :data:`SHOTS` is on.

    Args:
        page: the page to capture.
        name: the file name, e.g. ``"analytics.png"``.
        **kwargs: passed to ``page.screenshot`` (``full_page``, ``clip``...).
    """
    if SHOTS:
        IMAGES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(IMAGES / name), **kwargs)
