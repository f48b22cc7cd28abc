"""The plugin page "Skytap backups" refuses whoever Airflow's auth manager does not let read
the connection: no session, a forged or expired token, a viewer. Airflow's own simple auth
manager signs and checks the tokens here, in this process; the browser test covers the page
as a signed-in user sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Sim, set_connection
from tests.test_inventory import seed_backups

AIRFLOW = Path(sys.executable).with_name("airflow")


@pytest.fixture(scope="module")
def metadata_db() -> None:
    """This test process's own metadata database (SQLite in its AIRFLOW_HOME, tests/conftest):
    the auth manager looks every token up among the revoked ones there."""
    done = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture
def auth(metadata_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """Airflow's simple auth manager, initialised as the api-server does."""
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "a-secret-for-this-test-only-0123456789")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "ops:op,viewer:viewer")
    monkeypatch.setenv(
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json")
    )
    from airflow.api_fastapi import app as api_app

    manager = api_app.init_auth_manager()
    return manager


def token(manager: Any, role: str) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role)))


@pytest.fixture
def client(auth: Any, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    seed_backups(sim)
    set_connection(monkeypatch, "skytap_default", sim.url, sim.username, sim.token)
    from airflow_provider_skytap.plugin import create_app

    return TestClient(create_app())


def test_without_a_session_nothing_is_listed(client: TestClient) -> None:
    page = client.get("/inventory")
    assert page.status_code == 401
    assert "7001" not in page.text and "Not signed in" in page.text


def test_a_forged_token_is_refused(client: TestClient, auth: Any) -> None:
    forged = token(auth, "op")[:-4] + "AAAA"
    page = client.get("/inventory", headers={"Authorization": f"Bearer {forged}"})
    assert page.status_code == 401
    assert "7001" not in page.text


def test_a_viewer_may_not_read_the_connection_so_sees_no_backups(
    client: TestClient, auth: Any
) -> None:
    client.cookies.set("_token", token(auth, "viewer"))
    page = client.get("/inventory")
    assert page.status_code == 403
    assert "may not read connection &#x27;skytap_default&#x27;" in page.text
    assert "7001" not in page.text


def test_an_operator_sees_the_backups_and_never_the_token(
    client: TestClient, auth: Any, sim: Sim
) -> None:
    client.cookies.set("_token", token(auth, "op"))
    page = client.get("/inventory", params={"rpo_hours": "24"})
    assert page.status_code == 200
    assert "data-id='7001'" in page.text and "1 of 2 source/region pairs miss it" in page.text
    assert f"{sim.url}/templates/7001" in page.text  # each backup links to its page
    assert sim.token not in page.text


def test_a_conn_id_that_is_not_one_is_refused_before_anything_else(
    client: TestClient, auth: Any
) -> None:
    client.cookies.set("_token", token(auth, "op"))
    page = client.get("/inventory", params={"conn_id": "<script>x</script>"})
    assert page.status_code == 400
    assert "<script>x" not in page.text
