"""Microsoft Teams channel (Bot Framework, botbuilder ``CloudAdapter``): see ``plugin.py``."""
