"""docker-compose.yaml and its images, read as Docker would read them (no Docker engine here).

The file is validated against the compose specification's JSON schema (the copy that
check-jsonschema ships), then checked for what a user relies on: the official Airflow 3
layout, one image built from docker/Dockerfile with this package, healthchecks, the UI port,
the DAGs folder, the connections the example DAGs use, and demo VMs that the simulator's
seed points at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.models.connection import Connection

from airflow_provider_skytap.hooks.skytap import ConnectionSettings
from tests.deploy.conftest import (
    COMPOSE_FILE,
    DEMO_VM_DOCKERFILE,
    DOCKERFILE,
    ROOT,
    SEED_FILE,
    as_list,
    builds_from,
    dockerfile_copies,
    dockerfile_instructions,
    environment,
    image_argv,
    image_file_source,
    interpolate,
    volumes,
)

CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
    "airflow-worker": ["airflow", "celery", "worker"],
}
DEMO_VMS = {"demo-vm-app-1": "app-1", "demo-vm-app-2": "app-2", "demo-vm-db-1": "db-1"}
DAGS = "/opt/airflow/dags"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip(f"{CHECK_JSONSCHEMA} is missing: `make venv` installs check-jsonschema")
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- the compose specification


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    done = validate(COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok -- validation done" in done.stdout


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("    restart: always\n", "    restart: always\n    restrat: always\n"),
        ("      interval: 10s\n", "      interval: [10s]\n"),
        ("        condition: service_healthy\n", "        condition: healthy\n"),
    ],
    ids=["unknown-key", "wrong-type", "unknown-condition"],
)
def test_the_schema_check_rejects_a_broken_file(tmp_path: Path, good: str, bad: str) -> None:
    """The validation bites: the same file with one mistake fails it."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert good in text
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(text.replace(good, bad, 1), encoding="utf-8")
    done = validate(broken)
    assert done.returncode != 0, f"a file with {bad.strip()!r} passed the schema check"


def test_docker_compose_itself_parses_the_file_when_installed() -> None:
    """`docker compose config` (or the legacy docker-compose) resolves the file, if present."""
    docker = shutil.which("docker")
    candidates = [[docker, "compose"]] if docker else []
    if shutil.which("docker-compose"):
        candidates.append([str(shutil.which("docker-compose"))])
    for cli in candidates:
        probe = subprocess.run([*cli, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            done = subprocess.run(
                [*cli, "-f", str(COMPOSE_FILE), "config", "--services"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=ROOT,
            )
            assert done.returncode == 0, done.stderr
            assert set(done.stdout.split()) >= set(AIRFLOW_COMPONENTS) | set(DEMO_VMS)
            return
    pytest.skip("neither `docker compose` nor `docker-compose` is installed: schema check only")


# ---------------------------------------------------------------- the layout


def test_services_are_the_official_airflow_layout_plus_simulator_and_demo_vms(services) -> None:
    expected = {"postgres", "redis", "airflow-init", "skytap-simulator"}
    expected |= set(AIRFLOW_COMPONENTS) | set(DEMO_VMS)
    assert set(services) == expected
    for name, argv in AIRFLOW_COMPONENTS.items():
        assert image_argv(services[name]) == argv, name
    env = environment(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/"
    )


def test_every_airflow_service_builds_the_image_from_docker_dockerfile(
    services, airflow_image_services
) -> None:
    assert set(airflow_image_services) == (
        set(AIRFLOW_COMPONENTS) | {"airflow-init", "skytap-simulator"}
    )
    for name, service in airflow_image_services.items():
        assert builds_from(service) == DOCKERFILE, name
    # ...and nothing else runs airflow or the simulator from some other image.
    for name, service in services.items():
        argv = as_list(service.get("command"))
        if argv[:1] == ["airflow"] or "skytap_simulator" in argv:
            assert name in airflow_image_services


def test_services_that_stay_up_have_healthchecks_and_start_in_order(services) -> None:
    for name, service in services.items():
        if name == "airflow-init":
            assert "healthcheck" not in service
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart"), f"{name} has no restart policy"
    for name in AIRFLOW_COMPONENTS:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in DEMO_VMS:
        init = services[name]["depends_on"]["airflow-init"]  # it writes their authorized key
        assert init["condition"] == "service_completed_successfully"
    for name in ("airflow-worker", "airflow-triggerer"):  # the ones that call Skytap
        assert services[name]["depends_on"]["skytap-simulator"]["condition"] == "service_healthy"


def test_the_ui_port_is_published(services) -> None:
    api = services["airflow-apiserver"]
    assert [interpolate(p) for p in api["ports"]] == ["8080:8080"]
    assert "localhost:8080/api/v2/version" in " ".join(api["healthcheck"]["test"])
    # Only the UI and the simulator (on loopback) are reachable from the host.
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"airflow-apiserver", "skytap-simulator"}
    assert [interpolate(p) for p in services["skytap-simulator"]["ports"]] == [
        "127.0.0.1:8765:8765"
    ]


def test_the_dags_folder_is_mounted_in_every_airflow_service(airflow_image_services) -> None:
    for name, service in airflow_image_services.items():
        if name == "skytap-simulator":
            continue
        assert volumes(service)[DAGS] == ("./dags", "rw"), name
        # Airflow's default dags_folder is $AIRFLOW_HOME/dags = /opt/airflow/dags in the image.
        assert "AIRFLOW__CORE__DAGS_FOLDER" not in environment(service)


def test_named_volumes_are_declared(compose, services) -> None:
    used = {
        source
        for service in services.values()
        for source, _ in volumes(service).values()
        if not source.startswith((".", "/"))
    }
    assert used == set(compose["volumes"])


# ---------------------------------------------------------------- connections


def connection(env: dict[str, str], conn_id: str) -> Connection:
    return Connection.from_json(env[f"AIRFLOW_CONN_{conn_id.upper()}"], conn_id=conn_id)


def test_skytap_default_is_the_simulator_as_a_seeded_user(services) -> None:
    env = environment(services["airflow-worker"])
    settings = ConnectionSettings.from_connection(connection(env, "skytap_default"))
    sim_args = as_list(services["skytap-simulator"]["command"])
    port = next(a.split("=", 1)[1] for a in sim_args if a.startswith("--port="))
    assert settings.base_url == f"http://skytap-simulator:{port}"  # allowed by its allow_http
    seed = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    assert {"username": settings.login, "token": settings.token} in seed["users"]


def test_skytap_vm_ssh_uses_the_key_airflow_init_makes(services) -> None:
    conn = connection(environment(services["airflow-worker"]), "skytap_vm_ssh")
    assert conn.conn_type == "ssh"
    assert conn.login == "root"
    assert not conn.host, "host and port come from Skytap's published services"
    key_file = conn.extra_dejson["key_file"]
    # The key sits in a volume every Airflow service mounts read-only; airflow-init (root)
    # mounts it read-write and writes the key there; the demo VMs get only the public half.
    for name in AIRFLOW_COMPONENTS:
        assert volumes(services[name])[str(Path(key_file).parent)] == ("airflow-ssh", "ro")
    init = services["airflow-init"]
    assert volumes(init)[str(Path(key_file).parent)] == ("airflow-ssh", "rw")
    script = image_file_source(image_argv(init)[1])
    assert script is not None
    assert f"--private {key_file}" in script.read_text(encoding="utf-8")
    for name in DEMO_VMS:
        assert "airflow-ssh" not in {src for src, _ in volumes(services[name]).values()}


# The image's airflow user's home: its entrypoint exports HOME there for any AIRFLOW_UID
# (entrypoint_prod.sh, create_system_user_if_missing), and the SSH hook (paramiko) reads
# ~/.ssh/known_hosts whenever a connection neither names a host_key nor skips the check.
AIRFLOW_USER_SSH = "/home/airflow/.ssh"
DEMO_VM_KNOWN_HOSTS = "/etc/demo-vm/known-hosts"


def test_skytap_vm_ssh_checks_the_host_keys_the_demo_vms_publish(services) -> None:
    """No connection a Trigger-only user can name sends its key to an unchecked host."""
    conn = connection(environment(services["airflow-worker"]), "skytap_vm_ssh")
    extra = conn.extra_dejson
    for skip in ("no_host_key_check", "ignore_hostkey_verification", "allow_host_key_change"):
        assert str(extra.get(skip, "false")).lower() == "false", (skip, extra[skip])
    # The hook's host key policy is paramiko's default (reject unknown hosts); the known hosts
    # are the demo VMs' published keys, mounted read-only where the hook looks.
    for name in AIRFLOW_COMPONENTS:
        assert volumes(services[name])[AIRFLOW_USER_SSH] == ("demo-vm-known-hosts", "ro")
    assert "demo-vm-known-hosts" not in {s for s, _ in volumes(services["airflow-init"]).values()}
    # Each demo VM makes its own key (none is baked into the image) and publishes it under the
    # address the seed publishes its SSH service at, which is where the workers connect.
    seed = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    env_1001 = next(e for e in seed["environments"] if e["id"] == "1001")
    published = {
        vm["name"]: next(
            s for i in vm["interfaces"] for s in i["services"] if s["internal_port"] == 22
        )
        for vm in env_1001["vms"]
    }
    for service_name, vm_name in DEMO_VMS.items():
        service = services[service_name]
        assert volumes(service)[DEMO_VM_KNOWN_HOSTS] == ("demo-vm-known-hosts", "rw")
        ssh = published[vm_name]
        host = (
            ssh["external_ip"]
            if ssh["external_port"] == 22
            else (f"[{ssh['external_ip']}]:{ssh['external_port']}")
        )
        assert environment(service)["KNOWN_HOSTS_NAME"] == host, service_name
    entrypoint = (DEMO_VM_DOCKERFILE.parent / "entrypoint.sh").read_text(encoding="utf-8")
    assert f"KNOWN_HOSTS:-{DEMO_VM_KNOWN_HOSTS}/known_hosts" in entrypoint
    # That the entrypoint publishes a key the hook then checks: tests/deploy/test_demo_vm.py.


def test_every_airflow_service_has_the_same_connections_and_config(airflow_image_services):
    envs = {
        name: environment(s)
        for name, s in airflow_image_services.items()
        if name != "skytap-simulator"
    }
    reference = envs["airflow-scheduler"]
    shared = [k for k in reference if k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_CONF"))]
    assert {"AIRFLOW_CONN_SKYTAP_DEFAULT", "AIRFLOW_CONN_SKYTAP_VM_SSH"} <= set(shared)
    for name, env in envs.items():
        assert {k: env.get(k) for k in shared} == {k: reference[k] for k in shared}, name


# ---------------------------------------------------------------- the demo VMs and the seed


def test_the_seed_points_each_vm_at_its_demo_vm_service(services) -> None:
    seed = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    env = next(e for e in seed["environments"] if e["id"] == "1001")
    by_vm = {vm_name: name for name, vm_name in DEMO_VMS.items()}
    assert sorted(vm["name"] for vm in env["vms"]) == sorted(by_vm)
    disks_in_simulator = volumes(services["skytap-simulator"])
    for vm in env["vms"]:
        service_name = by_vm[vm["name"]]
        service = services[service_name]
        ssh = [s for i in vm["interfaces"] for s in i["services"] if s["internal_port"] == 22]
        address = service["networks"]["default"]["ipv4_address"]
        assert ssh == [{**ssh[0], "external_ip": address, "external_port": 22}]
        assert environment(service)["DEMO_VM_NAME"] == vm["name"]
        assert builds_from(service) == DEMO_VM_DOCKERFILE
        # The simulator reads the VM's real disk image during a copy (torn if not frozen).
        disk_dir = str(Path(vm["disk_image"]).parent)
        assert Path(vm["disk_image"]).name == f"{vm['name']}.img"
        assert volumes(service)[disk_dir] == ("demo-vm-disks", "rw")
        assert disks_in_simulator[disk_dir] == ("demo-vm-disks", "ro")


def test_demo_vms_can_loop_mount_and_freeze(services) -> None:
    """fsfreeze needs a filesystem of its own and CAP_SYS_ADMIN: a privileged container."""
    for name in DEMO_VMS:
        service = services[name]
        assert service["privileged"] is True
        assert "/run" in service["tmpfs"]  # guardian state on a tmpfs, as on a VM
        assert volumes(service)["/etc/demo-vm/keys"] == ("demo-vm-keys", "ro")
    assert volumes(services["airflow-init"])["/demo-vm-keys"] == ("demo-vm-keys", "rw")
    text = DEMO_VM_DOCKERFILE.read_text(encoding="utf-8")
    for package in ("openssh-server", "util-linux", "mount", "e2fsprogs", "coreutils"):
        assert re.search(rf"\s{re.escape(package)}\s", text), package
    # No host key baked into the image: each VM makes its own.
    assert "rm -f /etc/ssh/ssh_host_*_key" in text


# ---------------------------------------------------------------- the Airflow image


def _base_image() -> str:
    instructions = dockerfile_instructions(DOCKERFILE)
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    base = next(rest for word, rest in instructions if word == "FROM")
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def test_the_image_is_the_airflow_constraints_pins_on_python_312() -> None:
    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    airflow = next(p.split("==")[1] for p in pins if p.startswith("apache-airflow=="))
    assert _base_image() == f"apache/airflow:{airflow}-python3.12"


def test_the_image_installs_this_package_with_its_docker_extra_and_constraints() -> None:
    copies = dockerfile_copies(DOCKERFILE)
    src = {c.image_path(s): s for c in copies for s in c.sources}
    for needed in ("pyproject.toml", "README.md", "constraints.txt"):
        assert src[f"/opt/skytap/src/{needed}"] == needed
    for package in ("airflow_provider_skytap", "skytap_simulator"):
        assert src[f"/opt/skytap/src/{package}"] == package
    installs = [
        rest.split()
        for word, rest in dockerfile_instructions(DOCKERFILE)
        if word == "RUN" and "pip install" in rest
    ]
    assert len(installs) == 1, "one pip install, so nothing escapes the constraints"
    words = installs[0]
    assert '"/opt/skytap/src[docker]"' in words
    assert words[words.index("-c") + 1] == "/opt/skytap/src/constraints.txt"
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in words  # never moves the base's Airflow


def test_the_build_context_sends_what_the_dockerfile_copies_and_no_venv() -> None:
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    rules = [r for r in ignore.splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*", "an allowlist: everything is left out unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for copy in dockerfile_copies(DOCKERFILE):
        for source in copy.sources:
            assert source in allowed, f"COPY {source} is not in the build context"
    assert not any(a.startswith((".venv", ".git", "tests")) for a in allowed)


def test_files_the_services_name_are_in_the_image(services) -> None:
    init = image_argv(services["airflow-init"])
    assert init[0] == "bash"
    assert image_file_source(init[1]) == ROOT / "docker" / "airflow-init.sh"
    sim = as_list(services["skytap-simulator"]["command"])
    seed = next(a.split("=", 1)[1] for a in sim if a.startswith("--seed="))
    assert image_file_source(seed) == SEED_FILE
    assert image_file_source("/opt/skytap/docker/compose_setup.py") == (
        ROOT / "docker" / "compose_setup.py"
    )


def _sh_syntax(shell: str, path: Path) -> None:
    done = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("shell", "script"),
    [("bash", "docker/airflow-init.sh"), ("sh", "docker/demo-vm/entrypoint.sh")],
)
def test_scripts_parse(shell: str, script: str) -> None:
    _sh_syntax(shell, ROOT / script)


def test_services_use_only_these_images(services: dict[str, Any]) -> None:
    images = {interpolate(s["image"]) for s in services.values()}
    assert images == {
        "postgres:16",
        "redis:7.2-bookworm",
        "airflow-provider-skytap:dev",
        "airflow-provider-skytap-demo-vm:dev",
    }
