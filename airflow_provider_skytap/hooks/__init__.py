"""Hooks: the only code that knows Skytap's API."""
