"""Human handoff: session modes, the human queue, and human agents' actions.

A session is in one mode: ``bot``, ``queued`` (waiting for a human), ``human`` (owned by one
agent) or ``closed``. Escalation opens a ticket with the transcript, queues the session and tells
the customer; while a human owns it the bot is silent; the agent's replies leave through the
customer's own channel; resolving hands the session back to the bot.
"""
