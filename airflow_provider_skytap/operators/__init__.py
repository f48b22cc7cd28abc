"""Operators of the Skytap provider."""
