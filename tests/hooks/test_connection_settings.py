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


# ---- trust nothing: what a new user might type in the connection form


def test_a_host_carrying_user_and_token_is_refused_without_echoing_the_token() -> None:
    with pytest.raises(ValueError, match="host must not carry a user or token") as caught:
        ConnectionSettings.from_connection(conn(host="https://jane:s3cret-tok@cloud.skytap.com"))
    assert "s3cret-tok" not in str(caught.value)
    assert "https://***@cloud.skytap.com" in str(caught.value)


@pytest.mark.parametrize("host", ["http://cloud.skytap.com", "http://10.1.2.3:8080"])
def test_plain_http_to_a_host_that_is_not_loopback_needs_an_explicit_extra(host: str) -> None:
    with pytest.raises(ValueError, match=r"plain http:// to a host that is not loopback"):
        ConnectionSettings.from_connection(conn(host=host))
    allowed = ConnectionSettings.from_connection(conn(host=host, extra='{"allow_http": true}'))
    assert allowed.base_url == host
    for loopback in ("http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:9"):
        assert ConnectionSettings.from_connection(conn(host=loopback)).base_url == loopback


def test_the_base64_basic_credentials_are_masked_as_well_as_the_token() -> None:
    import base64

    from airflow.sdk.log import redact

    token = "tok-8c1f0e-mask-me"
    ConnectionSettings.from_connection(conn(login="jane", password=token))
    encoded = base64.b64encode(f"jane:{token}".encode()).decode()
    line = f"send: Authorization: Basic {encoded} token={token}"
    assert encoded not in str(redact(line)) and token not in str(redact(line))


@pytest.mark.parametrize(
    ("host", "port", "result"),
    [
        ("https://cloud.skytap.com:8443", 8443, "https://cloud.skytap.com:8443"),
        ("https://cloud.skytap.com:8443", None, "https://cloud.skytap.com:8443"),
        ("https://cloud.skytap.com", 8443, "https://cloud.skytap.com:8443"),
        ("https://cloud.skytap.com:8443", 9443, "says port 8443 and the port field says 9443"),
        ("https://cloud.skytap.com:99999", None, "host has a bad port"),
    ],
)
def test_a_port_in_the_host_and_in_the_port_field(host: str, port: int | None, result: str) -> None:
    if result.startswith("https://"):
        assert ConnectionSettings.from_connection(conn(host=host, port=port)).base_url == result
    else:
        with pytest.raises(ValueError, match=result):
            ConnectionSettings.from_connection(conn(host=host, port=port))


def test_extra_regions_and_list_scope_are_read_and_checked() -> None:
    extra = '{"extra_regions": "MARS-1, EMEA", "list_scope": "me"}'
    settings = ConnectionSettings.from_connection(conn(extra=extra))
    assert settings.regions[-1] == "MARS-1" and len(settings.regions) == 17
    assert settings.list_scope == "me"
    with pytest.raises(ValueError, match=r"extra_regions item must be a Skytap region name"):
        ConnectionSettings.from_connection(conn(extra='{"extra_regions": ["EMEA\\n"]}'))
    with pytest.raises(ValueError, match="'list_scope' must be 'company' or 'me', got 'all'"):
        ConnectionSettings.from_connection(conn(extra='{"list_scope": "all"}'))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"login": "jane "}, "login has surrounding whitespace"),
        ({"password": "tok\n"}, "password has surrounding whitespace"),
        ({"login": "jane:tok"}, "login must be the Skytap user name only"),
    ],
)
def test_credentials_that_skytap_would_refuse_are_explained(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionSettings.from_connection(conn(**fields))
