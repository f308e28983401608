"""Switchboard core: envelope, lanes, agent, handoff, stores, server and CLI."""

__version__ = "0.1.0"
