"""Channel plugins: one package per platform, found by the ``switchboard.channels`` entry point.

Each package keeps the same layout: ``plugin.py`` (lifecycle, routes, ``send``), ``translate.py``
(pure functions between platform JSON and the envelope) and, where the platform signs requests,
``verify.py``. Channels depend on ``bot``'s public types and never on each other.
"""
