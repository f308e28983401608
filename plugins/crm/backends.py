"""Choosing the CRM backend from settings (``crm_backend``)."""

from __future__ import annotations

from bot.config import Settings
from bot.tools import CrmBackend


def open_crm(settings: Settings) -> CrmBackend | None:
    """The CRM backend ``settings.crm_backend`` names, or None for ``none``.

    Raises:
        bot.errors.ConfigError: when the chosen backend's settings are incomplete.
    """
    if settings.crm_backend == "hubspot":
        from plugins.crm.hubspot import HubSpotCrm

        return HubSpotCrm(settings)
    if settings.crm_backend == "salesforce":
        from plugins.crm.salesforce import SalesforceCrm

        return SalesforceCrm(settings)
    return None
