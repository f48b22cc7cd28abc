"""An embedded stand-in for Skytap's REST API (see SIMULATOR.md)."""
