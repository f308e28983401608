"""Live viewers see "typing" only while a turn takes a moment (``typing_delay_s``)."""

from __future__ import annotations

from bot.events import HubEvent
from channels.memory.plugin import MemoryChannel
from channels.memory.pytest_plugin import HubFactory, ScriptedAgent


async def _events(hub_factory: HubFactory, delay_s: float, **overrides: object) -> list[str]:
    """The event types a viewer of the session saw for one customer message."""
    hub = await hub_factory(channels=(MemoryChannel,), **overrides)
    channel = hub.channels["memory"]
    assert isinstance(channel, MemoryChannel)
    seen: list[HubEvent] = []
    key = MemoryChannel.session_key_for("c1")
    async with hub.events.subscribe(key) as sub:
        hub.agent.delay_s = delay_s  # type: ignore[attr-defined]
        await channel.push_message("Where are my invoices?", event_id="e1")
        async for event in sub:
            seen.append(event)
            if event.type == "message" and event.data.get("role") == "bot":
                break
    return [e.type for e in seen]


async def test_an_instant_answer_shows_no_typing(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    types = await _events(hub_factory, delay_s=0.0, typing_delay_s=0.25)
    assert "typing" not in types
    assert types.count("message") == 2  # the customer's, then the answer


async def test_a_slow_answer_shows_typing_before_it(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    types = await _events(hub_factory, delay_s=0.3, typing_delay_s=0.05)
    assert types.index("typing") < len(types) - 1  # typing, then the answer last
    assert types[-1] == "message"


async def test_zero_delay_shows_typing_for_every_turn(
    hub_factory: HubFactory, scripted_agent: ScriptedAgent
) -> None:
    types = await _events(hub_factory, delay_s=0.0, typing_delay_s=0.0)
    assert "typing" in types
