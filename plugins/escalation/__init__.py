"""Escalation tools (``escalate_to_human``) and the registry of built-in tools."""
