"""Triggers of the Skytap provider."""
