"""The Slack channel: Events API over HTTP (or Socket Mode) on slack-bolt's ``AsyncApp``."""
