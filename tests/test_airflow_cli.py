"""Airflow itself finds the provider: `airflow providers list|hooks|widgets` show it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AIRFLOW = Path(sys.executable).with_name("airflow")


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow_home"))
    return env


def airflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_providers_list_shows_the_provider(airflow_env: dict[str, str]) -> None:
    out = airflow(airflow_env, "providers", "list", "-o", "plain")
    assert "airflow-provider-skytap" in out and "0.1.0" in out


def test_providers_hooks_shows_the_connection_type(airflow_env: dict[str, str]) -> None:
    out = airflow(airflow_env, "providers", "hooks", "-o", "plain")
    line = next(row for row in out.splitlines() if row.startswith("skytap "))
    assert "airflow_provider_skytap.hooks.skytap.SkytapHook" in line
    assert "skytap_conn_id" in line


def test_connection_form_fields_are_registered(airflow_env: dict[str, str]) -> None:
    out = airflow(airflow_env, "providers", "widgets", "-o", "plain")
    for field in ("timeout", "verify_ssl", "retry_deadline"):
        assert f"extra__skytap__{field}" in out
