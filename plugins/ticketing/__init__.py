"""Ticketing tools and backends."""
