"""Every command a compose service runs exists in the packages the image installs.

The image is apache/airflow at the version constraints.txt pins, plus
``pip install ".[docker]" -c constraints.txt`` (docker/Dockerfile). The ``test`` extra
includes ``docker``, so this virtualenv holds the same added packages at the same pins: the
tests first check that, then run each service's
command (``--help``) here with the service's own environment, and start the simulator with
the compose file's options and seed. The base image's own providers are not here, so a
command that only works thanks to them fails these tests: the image must bring what it runs.
(The build runs the same commands inside the image: docker/Dockerfile's last step.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from airflow_provider_skytap.hooks.skytap import SkytapHook
from skytap_simulator.__main__ import parse_args
from skytap_simulator.control import SimulatorProcess
from tests.deploy.conftest import (
    DOCKERFILE,
    ROOT,
    SEED_FILE,
    as_list,
    dockerfile_instructions,
    environment,
    image_argv,
    image_file_source,
    load_compose,
)

BIN = Path(sys.executable).parent
SERVICES = load_compose()["services"]
IMAGE_SERVICES = sorted(
    n for n, s in SERVICES.items() if s.get("image") == "airflow-provider-skytap:dev"
)


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return {canon(n): v for n, _, v in (line.partition("==") for line in lines if "==" in line)}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run_here(service: str, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from this virtualenv with the service's environment from the compose file.

    The paths that exist only in the containers are moved to a scratch directory: the config
    file (airflow-init writes it in a volume) and AIRFLOW_HOME.
    """
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    env.update(environment(SERVICES[service]))
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    env["AIRFLOW_CONFIG"] = str(tmp_path / "airflow" / "airflow.cfg")
    (tmp_path / "airflow").mkdir(exist_ok=True)
    exe = BIN / argv[0] if (BIN / argv[0]).exists() else Path(argv[0])
    return subprocess.run(
        [str(exe), *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )


def build_check_commands() -> str:
    """The RUN step of docker/Dockerfile that runs the services' commands inside the image."""
    return next(
        rest
        for word, rest in dockerfile_instructions(DOCKERFILE)
        if word == "RUN" and "--help" in rest
    )


# ---------------------------------------------------------------- the image's package set


def test_this_venv_has_what_the_image_adds_at_the_image_pins() -> None:
    """What docker/Dockerfile installs (this package and its docker extra) is installed here,
    at the versions constraints.txt pins for the image."""
    reqs = [Requirement(r) for r in metadata.requires("airflow-provider-skytap") or []]
    core = [r for r in reqs if r.marker is None]
    docker_extra = [r for r in reqs if r.marker and r.marker.evaluate({"extra": "docker"})]
    docker_extra = [r for r in docker_extra if r not in core]
    required = core + docker_extra
    assert {canon(r.name) for r in docker_extra} == {
        "apache-airflow-providers-celery",
        "apache-airflow-providers-postgres",
    }
    pinned = pins()
    for req in required:
        name = canon(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name]), f"{req} does not admit the pin"
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed here: run `make venv` (test extra)")
        assert installed == pinned[name], f"{req.name}: {installed} here, {pinned[name]} pinned"
    for name in ("celery", "asyncpg", "psycopg2-binary"):  # what the extra is there for
        assert metadata.version(name) == pinned[name]


# ---------------------------------------------------------------- each service's command


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_the_service_command_exists_in_the_image_packages(service: str, tmp_path: Path) -> None:
    argv = image_argv(SERVICES[service])
    if argv[0] == "airflow":
        done = run_here(service, [*argv, "--help"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"usage: airflow {' '.join(argv[1:])}" in done.stdout.lower()
        assert f'"{" ".join(argv[1:])}"' in build_check_commands(), "not checked at build"
    elif argv[:3] == ["python", "-m", "skytap_simulator"]:
        done = run_here(service, ["python", "-m", "skytap_simulator", "--help"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "--seed" in done.stdout
        args = parse_args(argv[3:])  # the compose options are ones the simulator takes
        assert args.host == "0.0.0.0" and args.port == 8765  # noqa: S104
        assert "python -m skytap_simulator --help" in build_check_commands()
    elif argv[0] == "bash":
        script = image_file_source(argv[1])
        assert script is not None, f"{argv[1]} is not copied into the image"
        for sub in init_script_airflow_commands(script):
            done = run_here(service, ["airflow", *sub, "--help"], tmp_path)
            assert done.returncode == 0, f"airflow {' '.join(sub)}: {done.stderr[-2000:]}"
        for step in ("ssh-key", "ui-password"):
            done = run_here(
                service, ["python", str(ROOT / "docker/compose_setup.py"), step, "-h"], tmp_path
            )
            assert done.returncode == 0, done.stderr
    else:
        pytest.fail(f"{service}: no check for {argv}")


def init_script_airflow_commands(script: Path) -> list[list[str]]:
    """``airflow X Y`` commands the init script runs (subcommand words only)."""
    found = []
    for line in script.read_text(encoding="utf-8").splitlines():
        for match in re.finditer(r"(?:^|\$\(|&&\s*)\s*airflow ((?:[a-z][a-z-]*\s?)+)", line):
            found.append(match.group(1).split())
    assert found, f"{script} runs no airflow command?"
    return found


@pytest.mark.parametrize(
    "service", ["airflow-dag-processor", "airflow-triggerer", "airflow-worker"]
)
def test_healthcheck_commands_exist_in_the_image_packages(service: str, tmp_path: Path) -> None:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    shell = test[1]
    if shell.startswith("airflow jobs check"):
        job_type = re.search(r"--job-type (\w+)", shell)
        assert job_type is not None
        done = run_here(service, ["airflow", "jobs", "check", "--help"], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert job_type.group(1) in done.stdout
    else:
        app = re.search(r"celery --app ([\w.]+)\.(\w+) inspect ping", shell)
        assert app is not None, shell
        assert (BIN / "celery").exists(), "the celery command is not installed"
        code = f"import {app.group(1)} as m; print(type(m.{app.group(2)}).__name__)"
        done = run_here(service, ["python", "-c", code], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-1] == "Celery"


# ---------------------------------------------------------------- the simulator with the seed


def test_the_simulator_serves_the_compose_seed_to_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with the compose file's --seed (and a state file), the simulator gives the
    provider each VM's SSH endpoint at its demo VM service: what QuiesceOperator connects to."""
    args = as_list(SERVICES["skytap-simulator"]["command"])
    seed = image_file_source(next(a.split("=", 1)[1] for a in args if a.startswith("--seed=")))
    assert seed == SEED_FILE
    env = environment(SERVICES["airflow-worker"])
    conn = json.loads(env["AIRFLOW_CONN_SKYTAP_DEFAULT"])
    with SimulatorProcess(
        seed=seed, state_file=tmp_path / "state.json", data_dir=tmp_path / "copies"
    ) as sim:
        conn["host"] = sim.url  # the compose connection, aimed at this simulator
        monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_DEFAULT", json.dumps(conn))
        with SkytapHook() as hook:
            environment_ = hook.get_environment("1001")
            endpoints = hook.get_ssh_endpoints("1001")
    assert environment_["name"] == "erp-prod" and environment_["runstate"] == "running"
    found = {(e.vm_name, e.host, e.port) for e in endpoints}
    addresses = {
        SERVICES[name]["environment"]["DEMO_VM_NAME"]: SERVICES[name]["networks"]["default"][
            "ipv4_address"
        ]
        for name in ("demo-vm-app-1", "demo-vm-app-2", "demo-vm-db-1")
    }
    assert found == {(vm, address, 22) for vm, address in addresses.items()}
    assert json.loads((tmp_path / "state.json").read_text())  # --state-file works with it


def test_a_seed_the_simulator_refuses_stops_it(tmp_path: Path) -> None:
    """The check above can fail: a bad seed makes the simulator exit with the reason."""
    bad = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    bad["environments"].append(dict(bad["environments"][0]))  # a second environment 1001
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(RuntimeError, match="duplicate"):
        SimulatorProcess(seed=path, data_dir=tmp_path / "copies", startup_timeout=20).start()
