"""The MCP tool gateway: allow-listed tools of Model Context Protocol servers as agent tools."""
