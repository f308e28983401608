"""The in-process channel: a complete channel for tests and ``switchboard chat``."""

from channels.memory.plugin import MemoryChannel

__all__ = ["MemoryChannel"]
