"""The web chat channel: an embeddable widget served by the hub, over a WebSocket."""

from channels.webchat.plugin import WebchatChannel

__all__ = ["WebchatChannel"]
