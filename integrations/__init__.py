"""Hooks into training frameworks (`sqd.integrations.lightning`). See docs/monitor.md."""
