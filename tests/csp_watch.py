"""Collect Content-Security-Policy violations a page reports in Chromium (Playwright).

Two witnesses, because either alone can miss one: the ``securitypolicyviolation`` DOM event
(W3C CSP Level 3 §5.3), recorded by an init script (Playwright injects those through the
DevTools protocol, outside the page's CSP), and Chromium's console error ("Refused to ...
because it violates the following Content Security Policy directive").
"""

from __future__ import annotations

from typing import Any

_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


async def watch_csp(page: Any) -> list[str]:
    """Start recording ``page``'s CSP violations (call before ``goto``); returns the list
    that console reports are appended to. Read the DOM events with :func:`csp_violations`."""
    reported: list[str] = []
    await page.add_init_script(_RECORDER)

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            reported.append(message.text)

    page.on("console", on_console)
    return reported


async def csp_violations(page: Any, reported: list[str]) -> list[str]:
    """Every violation seen so far: console reports, then the page's DOM events."""
    events = await page.evaluate("window.__cspViolations || []")
    return [*reported, *(str(e) for e in events)]
