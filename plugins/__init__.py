"""Agent tools: ticketing, CRM and escalation."""
