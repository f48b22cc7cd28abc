"""Fixtures for the hook against the simulator over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import RetryPolicy
from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook

CONN_ID = "skytap_it"
# Fast retries for tests; the deadline still bounds every call.
FAST = RetryPolicy(deadline=60.0, base=0.05, cap=0.5)


def set_connection(
    monkeypatch: pytest.MonkeyPatch,
    conn_id: str,
    url: str,
    login: str,
    token: str,
    **extra: Any,
) -> None:
    """Define an Airflow connection the way users of env-var secrets do."""
    doc = {"conn_type": "skytap", "host": url, "login": login, "password": token, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))


@pytest.fixture
def skytap_conn(sim: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    set_connection(monkeypatch, CONN_ID, sim.url, sim.username, sim.token, timeout=5)
    return CONN_ID


@pytest.fixture
def hook(skytap_conn: str) -> Iterator[SkytapHook]:
    with SkytapHook(skytap_conn, retry_policy=FAST) as h:
        yield h


@pytest.fixture
def async_hook(skytap_conn: str) -> SkytapAsyncHook:
    return SkytapAsyncHook(skytap_conn, retry_policy=FAST)
