"""docker-compose.yaml and the test harness's distributed Airflow are one deployment.

``tests.system.airflow_stack.AirflowStack`` reads its Airflow settings, its components'
commands and how many of each it runs from docker-compose.yaml; these tests check what it
made of them, without starting anything: the same services (two workers, two triggerers),
the same commands, and the same Airflow configuration, container addresses aside. What the
harness adds is declared with a reason in ``STACK_SETTINGS``/``FAST_SETTINGS``; anything
else that differs fails here. So the scheduler tests and the soak, which run on the harness,
vouch for the compose file, which has no Docker engine to run on here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.deploy.conftest import COMPOSE_FILE, environment, image_argv, load_compose
from tests.system import airflow_stack
from tests.system.airflow_stack import (
    COMPOSE_OTHERS,
    COMPOSE_SERVICES,
    CONTAINER_ONLY,
    FAST_SETTINGS,
    STACK_SETTINGS,
    AirflowStack,
)


def make_stack(tmp_path: Path) -> Iterator[AirflowStack]:
    stack = AirflowStack(tmp_path / "home", tmp_path / "dags")  # configured, not started
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[AirflowStack]:
    yield from make_stack(tmp_path)


def test_every_compose_service_is_a_harness_component_or_stands_in_for_one() -> None:
    services = load_compose()["services"]
    assert set(services) == set(COMPOSE_SERVICES) | set(COMPOSE_OTHERS)
    assert not set(COMPOSE_SERVICES) & set(COMPOSE_OTHERS)


def test_the_harness_runs_each_airflow_service_as_often_and_with_the_same_command(
    stack: AirflowStack,
) -> None:
    services = load_compose()["services"]
    for service, kind in COMPOSE_SERVICES.items():
        replicas = (services[service].get("deploy") or {}).get("replicas", 1)
        names = stack.names(kind)
        assert len(names) == replicas, service
        command = image_argv(services[service])
        for name in names:
            argv = stack.components[name].args
            assert Path(argv[0]).name == command[0] == "airflow"
            # The compose command, then only the flags a shared machine needs (listen address,
            # one Celery node name per worker).
            assert argv[1 : len(command)] == command[1:], name
            assert set(argv[len(command) :]) <= {
                "--host",
                "127.0.0.1",
                "--port",
                str(stack.port),
                "--celery-hostname",
                f"{name}@%h",
            }, name
    # What the issue asks of the deployment: two workers and two triggerers that can stand in
    # for each other, beside one api-server, scheduler and dag-processor.
    assert stack.names("worker") == ["worker-1", "worker-2"]
    assert stack.names("triggerer") == ["triggerer-1", "triggerer-2"]
    assert {n for n in stack.components if n[-2:] not in ("-1", "-2")} == {
        "api-server",
        "scheduler",
        "dag-processor",
    }
    for service in ("airflow-worker", "airflow-triggerer"):  # replicas share no name or port
        assert "container_name" not in services[service] and "ports" not in services[service]


def _same_place(compose: str, harness: str) -> bool:
    """A container address and the harness's: the same scheme, user and database, or the same
    file name; only the host, port and password may differ."""
    if compose.startswith("/opt/airflow/"):
        return Path(harness).name == Path(compose).name
    a, b = urlsplit(compose), urlsplit(harness)
    return bool(
        a.hostname
        and (a.scheme, a.username, a.path) == (b.scheme, b.username, b.path)
        and b.hostname == "127.0.0.1"
        and b.port
    )


def test_the_harness_has_the_compose_files_airflow_configuration(stack: AirflowStack) -> None:
    compose = environment(load_compose()["services"]["airflow-scheduler"])
    shared = {k: v for k, v in compose.items() if not k.startswith(CONTAINER_ONLY)}
    assert {"AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"} <= set(shared)
    moved = {}
    for key, value in shared.items():
        assert key in stack.env, f"the harness lacks {key}"
        if stack.env[key] != value:
            assert _same_place(value, stack.env[key]), (key, value, stack.redact(stack.env[key]))
            moved[key] = stack.env[key]
    # Exactly the addresses moved: the database, the result backend, the broker, the
    # execution API, the password file and the backup config (the demo's, where compose
    # mounts it).
    assert set(moved) == {
        "SKYTAP_BACKUPS_CONFIG",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    }
    assert stack.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert stack.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{stack.base_url}/execution/"
    # What the harness sets beyond the compose file is declared, with a reason.
    added = {k for k in stack.env if k.startswith("AIRFLOW__") and k not in shared}
    assert added <= set(STACK_SETTINGS) | set(FAST_SETTINGS), added - set(STACK_SETTINGS)
    assert not (set(STACK_SETTINGS) | set(FAST_SETTINGS)) & set(shared), "overrides compose"
    # Nothing of the containers' own set-up: no config file path, no container connections.
    assert not [k for k in stack.env if k.startswith(CONTAINER_ONLY)]
    # Every component gets the same settings; only its name and own log-server port differ.
    for component in stack.components.values():
        assert set(component.env) <= {
            airflow_stack.COMPONENT_ENV,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
        }, component.name


def test_a_change_to_the_compose_file_reaches_the_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source of truth: edit the compose file and the harness follows."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    edited = text.replace(
        'AIRFLOW__CORE__LOAD_EXAMPLES: "false"',
        'AIRFLOW__CORE__LOAD_EXAMPLES: "false"\n    AIRFLOW__CORE__PARALLELISM: "7"',
    ).replace("      replicas: 2\n", "      replicas: 3\n", 1)
    assert edited.count("PARALLELISM") == 1 and "replicas: 3" in edited
    copy = tmp_path / "docker-compose.yaml"
    copy.write_text(edited, encoding="utf-8")
    monkeypatch.setattr(airflow_stack, "COMPOSE_FILE", copy)
    for stack in make_stack(tmp_path):
        assert stack.env["AIRFLOW__CORE__PARALLELISM"] == "7"
        assert len(stack.names("worker")) == 3
