"""The lab's VMs for the example DAGs' system tests (``demo.lab``), the simulator seeded
with them (environment 1001's three VMs are the lab's sshds and disk images), and the
distributed Airflow every scheduler test shares (``airflow_stack``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo import airflow_cli, lab
from skytap_simulator.seed import default_seed
from tests.conftest import Sim
from tests.system import browser, stack_services
from tests.system.airflow_stack import AIRFLOW, AirflowStack

ENV = "1001"
TEST_DAGS = Path(__file__).with_name("dags")
# The DAGs the shared stack parses: the repository's examples and the tests' own.
STACK_DAGS = ("skytap_live_clone_backup", "skytap_clone_test", "skytap_ui_link")


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """One distributed Airflow for the session (PostgreSQL, Redis, CeleryExecutor, two workers,
    two triggerers, api-server, scheduler, dag-processor): starting it costs about 20 s.

    Its DAGs folder links the repository's dags/ and tests/system/dags/. A test sets the
    connections it needs through the REST API (``set_connection``), as a user would; every
    component, task and trigger reads them from the metadata database. After the session no
    process of it may be left.
    """
    if not hasattr(os, "killpg"):
        pytest.skip("needs POSIX process groups to stop Airflow's components and their tasks")
    if not AIRFLOW.exists():
        pytest.skip(f"no airflow command beside {AIRFLOW.parent}: run pytest from the venv")
    reason = stack_services.unavailable()
    if reason:
        pytest.skip(f"the distributed Airflow needs PostgreSQL and Redis: {reason}")
    dags = tmp_path_factory.mktemp("stack-dags")
    for source in sorted([*airflow_cli.DAGS.glob("*.py"), *TEST_DAGS.glob("*.py")]):
        (dags / source.name).symlink_to(source)
    home = tmp_path_factory.mktemp("stack") / "airflow"
    env = {
        "PYTHONPATH": str(airflow_cli.REPO),
        # The connection form's Test button (the browser tests press it); off by default.
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        # One backup DAG (skytap_live_clone_backup) for the demo's environment 1001.
        airflow_cli.CONFIG_ENV: str(airflow_cli.DEMO_CONFIG),
    }
    with AirflowStack(home, dags, env, dag_ids=STACK_DAGS) as stack:
        yield stack
    assert stack.leftovers() == []  # no component, worker, task or trigger survives


@pytest.fixture(scope="session")
def ui(airflow_stack: AirflowStack) -> Iterator[browser.Browser]:
    """Headless Chromium signed in to the session's Airflow UI as its admin (the browser
    tests share it and the stack's one api-server); skips, saying why, without Chromium."""
    reason = browser.unavailable()
    if reason:
        pytest.skip(f"the browser tests need Chromium: {reason}")
    passwords = Path(airflow_stack.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    password = json.loads(passwords.read_text())[airflow_stack.admin]
    started = browser.Browser(airflow_stack.base_url)
    try:
        with started.step("sign in"):
            started.sign_in(airflow_stack.admin, password)
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def vms() -> Iterator[lab.Lab]:
    reason = lab.unavailable()
    if reason:
        pytest.skip(f"the example DAGs freeze real VMs: {reason}")
    with lab.Lab() as started:
        yield started


@pytest.fixture
def lab_sim(sim: Sim, vms: lab.Lab) -> Iterator[Sim]:
    """The simulator with environment 1001 on the lab; after the test no VM may be frozen."""
    sim.admin.reset(vms.seed(default_seed(), ENV))
    sim.admin.config(copy_seconds=1, region_copy_seconds=1, delete_seconds=0.2)
    yield sim
    frozen = vms.frozen()
    vms.thaw_all()
    assert frozen == [], f"left frozen after the test: {frozen}"


def skytap_conn(sim: Sim) -> dict[str, object]:
    """The skytap_default connection to the simulator (a short retry deadline: faults end
    the try quickly)."""
    return {
        "conn_type": "skytap",
        "host": sim.url,
        "login": sim.username,
        "password": sim.token,
        "extra": {"retry_deadline": 5},
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow home of the test module's own, for ``airflow dags test``."""
    path = tmp_path_factory.mktemp("airflow_home")
    airflow_cli.migrate(airflow_cli.airflow_env(path, {}))
    return path


@pytest.fixture
def run_env(home: Path, lab_sim: Sim, vms: lab.Lab) -> dict[str, str]:
    """Airflow's connections to the simulator (seeded with the lab's VMs) and to the VMs."""
    return airflow_cli.airflow_env(
        home, {"skytap_default": skytap_conn(lab_sim), "skytap_vm_ssh": vms.ssh_connection()}
    )
