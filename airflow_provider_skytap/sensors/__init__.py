"""Sensors of the Skytap provider."""
