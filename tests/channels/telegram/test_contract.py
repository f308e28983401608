"""The channel contract suite, run on the Telegram channel (webhook in, fake Bot API out)."""

from __future__ import annotations

import pytest

from bot.store.base import Role
from tests.channels.contract import ChannelContract
from tests.channels.telegram.harness import TelegramHarness


class TestTelegramContract(ChannelContract):
    """Uses the ``harness`` fixture of this folder's conftest.

    Telegram's event ids are integer ``update_id`` s, so the harness maps the contract's event
    ids ("c-ask-1") to update ids and back. The one contract test that reads event ids straight
    from the store is repeated here with that mapping; everything else runs unchanged.
    """

    async def test_duplicate_event_is_ingested_and_answered_once(  # type: ignore[override]
        self, harness: TelegramHarness
    ) -> None:
        first = await harness.customer_says("Where is my order?", event_id="c-dup-1")
        second = await harness.customer_says("Where is my order?", event_id="c-dup-1")
        assert (first.duplicate, second.duplicate) == (False, True)
        await harness.next_delivery()
        with pytest.raises(TimeoutError):
            await harness.next_delivery(timeout_s=0.4)
        stored = await harness.hub.store.messages(harness.session_key)
        customer = [m for m in stored if m.role == Role.CUSTOMER]
        assert [m.event_id for m in customer] == [str(harness.update_id("c-dup-1"))]
        assert len(harness.hub.agent.turns) == 1  # type: ignore[attr-defined]
