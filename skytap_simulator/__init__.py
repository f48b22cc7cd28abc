"""An embedded stand-in for Skytap's REST API (see docs/simulator.md)."""
