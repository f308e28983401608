"""Token use and cost of LLM calls, reported to whoever keeps the figures (the analytics page).

:func:`report_usage` reads a litellm ``ModelResponse``'s ``usage`` (OpenAI's
``prompt_tokens`` / ``completion_tokens``) and litellm's cost estimate
(``litellm.completion_cost``, from its bundled model price map; 0.0 for a model it has no
price for) and hands them to a :data:`UsageFn`. A failing recorder is logged and never fails
the turn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import litellm

log = logging.getLogger(__name__)

UsageFn = Callable[[str, str, int, int, float], Awaitable[None]]
"""``(model, purpose, input_tokens, output_tokens, cost_usd)`` of one call; tokens as counted
by the provider, cost in US dollars (litellm's estimate)."""


def cost_usd(response: Any) -> float:
    """The estimate litellm makes of a response's cost in US dollars (0.0 when it has no price)."""
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # unknown model or provider: no price, not an error
        return 0.0


async def report_usage(
    on_usage: UsageFn | None, response: Any, *, model: str, purpose: str
) -> None:
    """Hand one response's token counts and cost to ``on_usage`` (nothing when None).

    Args:
        on_usage: the recorder, or None.
        response: a litellm ``ModelResponse`` (streamed ones rebuilt with their usage).
        model: the model asked for (the response's own ``model`` wins when set).
        purpose: what the call was for (``answer``, ``copilot``).
    """
    if on_usage is None:
        return
    usage = getattr(response, "usage", None)
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    name = str(getattr(response, "model", None) or model)
    try:
        await on_usage(name, purpose, input_tokens, output_tokens, cost_usd(response))
    except Exception:  # a task boundary for the figures: the answer goes out regardless
        log.warning("agent.usage_not_recorded", exc_info=True, extra={"model": name})
