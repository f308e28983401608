"""The REST channel: ``/api/v1/conversations/{conversation_id}/messages``."""

from channels.rest.plugin import RestChannel

__all__ = ["RestChannel"]
