"""Reading a ``skytap`` connection: defaults, checks that name the field, no token in repr."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_skytap.hooks.skytap import ConnectionSettings


def conn(**fields: Any) -> Connection:
    base: dict[str, Any] = {
        "conn_id": "sky",
        "conn_type": "skytap",
        "login": "u",
        "password": "t0k",
    }
    base.update(fields)
    return Connection(**base)


def test_defaults_point_at_skytap() -> None:
    settings = ConnectionSettings.from_connection(conn())
    assert settings.base_url == "https://cloud.skytap.com"
    assert (settings.timeout, settings.verify_ssl, settings.retry_deadline) == (60.0, True, 600.0)
    assert "t0k" not in repr(settings)


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("cloud.skytap.com", None, "https://cloud.skytap.com"),
        ("http://127.0.0.1", 8765, "http://127.0.0.1:8765"),
        ("https://example.skytap.com/", None, "https://example.skytap.com"),
    ],
)
def test_host_forms(host: str, port: int | None, url: str) -> None:
    assert ConnectionSettings.from_connection(conn(host=host, port=port)).base_url == url


def test_extras_are_read() -> None:
    extra = '{"timeout": "5", "verify_ssl": "false", "retry_deadline": 30}'
    settings = ConnectionSettings.from_connection(conn(extra=extra))
    assert (settings.timeout, settings.verify_ssl, settings.retry_deadline) == (5.0, False, 30.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"login": None}, "connection 'sky': login (the Skytap user name) is empty"),
        ({"password": ""}, "connection 'sky': password (the API security token) is empty"),
        ({"extra": '{"timeout": -1}'}, "extra 'timeout' must be a positive number, got -1"),
        ({"extra": '{"timeout": "soon"}'}, "extra 'timeout' must be a positive number, got 'soon'"),
        ({"extra": '{"verify_ssl": "maybe"}'}, "extra 'verify_ssl' must be true or false"),
        ({"host": "ftp://x"}, "host must be an http(s) URL, got 'ftp://x'"),
    ],
)
def test_bad_connections_are_explained(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ConnectionSettings.from_connection(conn(**fields))
