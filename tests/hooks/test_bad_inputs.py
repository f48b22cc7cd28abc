"""A Skytap that cannot be reached: the error names the API URL (never the token)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from airflow_provider_skytap.hooks.api import RetryPolicy, SkytapAPIError
from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook
from tests.conftest import set_connection

QUICK = RetryPolicy(deadline=1.0, base=0.05, cap=0.2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def test_an_unreachable_skytap_is_named_by_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    token = "tok-3a1f9e-never-shown"
    set_connection(monkeypatch, "skytap_down", f"http://127.0.0.1:{port}", "jane", token)
    with pytest.raises(SkytapAPIError) as caught:
        SkytapHook("skytap_down", retry_policy=QUICK).get_environment("1001")
    text = str(caught.value)
    assert text.startswith(
        f"get environment 1001: no response: could not connect to http://127.0.0.1:{port} ("
    ), text
    assert token not in text and "jane" not in text

    hook = SkytapAsyncHook("skytap_down", retry_policy=QUICK)
    with pytest.raises(SkytapAPIError) as caught_async:
        asyncio.run(hook.get_resource("environment", "1001"))
    assert f"could not connect to http://127.0.0.1:{port} (" in str(caught_async.value)
    assert token not in str(caught_async.value)
