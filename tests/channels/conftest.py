"""Fixtures of the channel tests: the memory channel's pytest plugin (real hubs)."""

from channels.memory.pytest_plugin import (
    hub_factory,
    hub_settings,
    memory_channel,
    memory_hub,
    scripted_agent,
)

__all__ = ["hub_factory", "hub_settings", "memory_channel", "memory_hub", "scripted_agent"]
