"""Persistent stores: conversations, messages, agents and the audit log (SQLAlchemy async)."""
