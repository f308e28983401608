"""The human agents' web console (``/console``): see :mod:`bot.console.routes`."""

from bot.console.routes import console_app, setup_console

__all__ = ["console_app", "setup_console"]
