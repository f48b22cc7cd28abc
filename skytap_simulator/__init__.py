"""An embedded stand-in for Skytap's REST API (see README.md, "The Skytap simulator")."""
