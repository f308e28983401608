"""Knowledge-base tools: ``search_knowledge``."""
