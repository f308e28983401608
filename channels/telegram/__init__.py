"""The Telegram channel: Bot API webhook or long polling, on python-telegram-bot 22.

Importing it opts python-telegram-bot into its timedelta time periods (``PTB_TIMEDELTA``, the
behaviour of its next major version) unless the environment already chose: PTB otherwise
emits a deprecation warning whenever it builds a ``RetryAfter``.
"""

import os

os.environ.setdefault("PTB_TIMEDELTA", "true")
