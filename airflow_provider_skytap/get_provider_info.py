"""Provider metadata, read by Airflow's ProvidersManager through the entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_skytap import __version__


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its connection type, hooks, operators, sensors, triggers."""
    return {
        "package-name": "airflow-provider-skytap",
        "name": "Skytap",
        "description": "Application-consistent live clones of Skytap environments.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Skytap",
                "external-doc-url": "https://help.skytap.com/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Skytap",
                "python-modules": [
                    "airflow_provider_skytap.operators.clone",
                    "airflow_provider_skytap.operators.quiesce",
                    "airflow_provider_skytap.operators.restore",
                    "airflow_provider_skytap.operators.retention",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Skytap",
                "python-modules": ["airflow_provider_skytap.sensors.clone"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Skytap",
                "python-modules": ["airflow_provider_skytap.hooks.skytap"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Skytap",
                "python-modules": ["airflow_provider_skytap.triggers.clone"],
            }
        ],
        "extra-links": ["airflow_provider_skytap.links.SkytapResourceLink"],
        "connection-types": [
            {
                "connection-type": "skytap",
                "hook-class-name": "airflow_provider_skytap.hooks.skytap.SkytapHook",
                "hook-name": "Skytap",
                "ui-field-behaviour": {
                    # Port stays visible: Airflow 3.3.2's Test button sends port 0 for a
                    # connection without one, and the api-server then refuses the test
                    # (apache/airflow#73298); with the port given (443) the test runs.
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {
                        "host": "API URL",
                        "port": "Port",
                        "login": "Skytap user name",
                        "password": "API security token",
                    },
                    "placeholders": {
                        "host": "https://cloud.skytap.com",
                        "port": "443 (optional; the Test button needs it on Airflow 3.3.2)",
                        "login": "the Skytap user whose API token this is",
                        "password": "API security token (My Account > API Security Token)",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "How long one HTTP request may take before it is retried.",
                        "schema": {"type": ["number", "null"], "default": 60, "minimum": 1},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "description": "Turn off only for a test endpoint with a self-signed "
                        "certificate.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "retry_deadline": {
                        "label": "Retry deadline (seconds)",
                        "description": "How long one call keeps retrying busy (423), rate "
                        "limited (429) and unavailable (5xx) answers before it fails.",
                        "schema": {"type": ["number", "null"], "default": 600, "minimum": 0},
                    },
                    "extra_regions": {
                        "label": "Extra regions",
                        "description": "Skytap regions added after this release, comma "
                        "separated (e.g. US-Ohio-M-1); the 16 Skytap lists are always known.",
                        "schema": {"type": ["string", "null"], "default": ""},
                    },
                    "list_scope": {
                        "label": "List scope",
                        "description": "company (default; needs a company admin) or me (only "
                        "this user's resources: use only if this user makes every copy).",
                        "schema": {"type": ["string", "null"], "default": "company"},
                    },
                    "allow_http": {
                        "label": "Allow plain http:// to a remote host",
                        "description": "The token would cross the network readable; only for "
                        "a trusted network. Loopback is always allowed.",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                },
            }
        ],
    }
