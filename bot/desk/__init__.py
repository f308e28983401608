"""The human agents' desk: safe Markdown, CSAT, canned replies, search, analytics.

Infrastructure the console, the handoff, the router and the channels share (layer of
:mod:`bot.store`): :mod:`bot.desk.markdown` (CommonMark to sanitized HTML),
:mod:`bot.desk.tables` and :mod:`bot.desk.store` (the desk's own tables),
:mod:`bot.desk.csat` (the satisfaction survey), :mod:`bot.desk.canned` (canned replies and
their placeholders), :mod:`bot.desk.search` (conversation search) and
:mod:`bot.desk.analytics` (the figures of the analytics page).
"""
