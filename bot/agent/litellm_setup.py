"""litellm, set up for a server process before any agent module uses it.

Importing this module sets ``LITELLM_LOCAL_MODEL_COST_MAP`` (litellm would otherwise download
its model price list while it is imported), turns off litellm's banners, message logging and
telemetry, and quiets its loggers. ``bot.agent`` imports it first, so every ``bot.agent``
module (which ``import litellm`` themselves) sees litellm set up this way.
"""

from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import litellm

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on errors
litellm.turn_off_message_logging = True  # callbacks never see conversation text
litellm.telemetry = False
# litellm logs every failed attempt at ERROR with its own handler; agent.llm_failed reports the
# outcome once, so only its critical records pass.
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)
# litellm's response types trip a harmless pydantic warning on first use.
warnings.filterwarnings("ignore", "Item .* `ReadOnly` qualifier", UserWarning)
