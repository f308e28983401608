"""The agent's tools: found through the ``switchboard.tools`` entry points, offered to the model.

``bot`` does not import the tool plugins: the tools Switchboard ships (``plugins/``) are
declared as ``switchboard.tools`` entry points in ``pyproject.toml`` like any third-party tool.
A source checkout that was not installed has no entry points; there the composition root passes
the built-in tools itself (``load_tools(fallback=plugins.escalation.registry.builtin_tools)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, cast

from pydantic import BaseModel

from bot.errors import ConfigError
from bot.tools import Tool

log = logging.getLogger(__name__)

TOOL_ENTRY_POINTS = "switchboard.tools"
"""The entry point group tools are declared in (value: a :class:`~bot.tools.Tool` class or
instance)."""

BUILTIN_TOOLS = (
    "search_knowledge",
    "create_ticket",
    "get_ticket",
    "add_ticket_comment",
    "escalate_to_human",
    "lookup_customer",
)
"""Names of the tools Switchboard ships, in the order they are offered to the model (the order
of ``plugins.escalation.registry.builtin_tools()``). The system prompt names two of them."""


def load_tools(
    names: Sequence[str] | None = None,
    *,
    fallback: Callable[[], Sequence[Tool]] | None = None,
) -> list[Tool]:
    """The agent tools, found through the ``switchboard.tools`` entry points.

    Args:
        names: tool names to load, in this order; None loads every tool found (the built-ins
            first, in the order of :data:`BUILTIN_TOOLS`, then the others by name).
        fallback: returns the tools to use when no entry point of the group is installed (a
            source checkout that was not installed); the composition root passes
            ``plugins.escalation.registry.builtin_tools``. Without it, such a checkout has no
            tools (logged as ``agent.no_tools_installed``).

    Returns:
        One instance of each tool (tool classes are instantiated without arguments).

    Raises:
        ConfigError: when a named tool is not found or an entry point cannot be loaded.
    """
    found: dict[str, Tool] = {}
    eps = entry_points(group=TOOL_ENTRY_POINTS)
    if eps:
        for ep in eps:
            if names is not None and ep.name not in names:
                continue
            try:
                obj = ep.load()
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"tool entry point {ep.name!r} ({ep.value}): {exc}") from exc
            found[ep.name] = _as_tool(ep.name, obj() if isinstance(obj, type) else obj)
    elif fallback is not None:
        found = {t.name: t for t in fallback() if names is None or t.name in names}
    else:
        log.warning("agent.no_tools_installed", extra={"group": TOOL_ENTRY_POINTS})
    if names is None:
        order = {name: i for i, name in enumerate(BUILTIN_TOOLS)}
        # Built-ins first in their documented order, then third-party tools by name.
        return sorted(found.values(), key=lambda t: (order.get(t.name, len(order)), t.name))
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"unknown tools: {', '.join(missing)}")
    return [found[n] for n in names]


def _as_tool(name: str, obj: object) -> Tool:
    """``obj`` checked against the :class:`Tool` protocol's attributes."""
    args_model = getattr(obj, "args_model", None)
    ok = (
        isinstance(getattr(obj, "name", None), str)
        and isinstance(getattr(obj, "description", None), str)
        and isinstance(args_model, type)
        and issubclass(args_model, BaseModel)
        and callable(obj)
    )
    if not ok:
        raise ConfigError(f"tool entry point {name!r} does not implement the Tool protocol")
    return cast(Tool, obj)


def tool_spec(tool: Tool) -> dict[str, Any]:
    """A tool in the OpenAI Chat Completions ``tools`` format.

    Shape ``{"type": "function", "function": {"name", "description", "parameters"}}`` with the
    argument model's JSON Schema as parameters
    (https://platform.openai.com/docs/api-reference/chat/create#chat-create-tools).
    """
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.args_model.model_json_schema(),
        },
    }
