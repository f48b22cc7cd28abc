"""Apache Airflow provider for application-consistent backups of Skytap environments."""

from __future__ import annotations

__version__ = "0.1.0"
