"""The channel contract suite, run on the Telegram channel (webhook in, fake Bot API out)."""

from __future__ import annotations

from tests.channels.contract import ChannelContract


class TestTelegramContract(ChannelContract):
    """Uses the ``harness`` fixture of this folder's conftest.

    Telegram's event ids are integer ``update_id`` s: the harness maps the contract's event ids
    ("c-ask-1") to update ids and back (``platform_event_id``), so the suite runs unchanged.
    """
