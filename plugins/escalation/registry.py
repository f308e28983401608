"""The tools that ship with Switchboard, for when entry points are not installed.

``bot.agent.tools.load_tools`` finds tools through the ``switchboard.tools`` entry points
declared in ``pyproject.toml``; when the package is not installed (a source checkout), the
composition root passes :func:`builtin_tools` as its ``fallback`` (``bot`` never imports
``plugins``).
"""

from __future__ import annotations

from bot.tools import Tool
from plugins.crm.tools import LookupCustomer
from plugins.escalation.tools import EscalateToHuman
from plugins.knowledge.tools import SearchKnowledge
from plugins.ticketing.tools import AddTicketComment, CreateTicket, GetTicket


def builtin_tools() -> list[Tool]:
    """One instance of each built-in tool, in a stable order."""
    return [
        SearchKnowledge(),
        CreateTicket(),
        GetTicket(),
        AddTicketComment(),
        EscalateToHuman(),
        LookupCustomer(),
    ]
