"""The demo VM's entrypoint, run on this machine, frozen and thawed by QuiesceOperator.

No container runs here, so the test runs docker/demo-vm/entrypoint.sh itself, as root, with
its paths and port moved into a scratch directory (its settings exist for that): it makes
and loop-mounts the disk image, starts sshd with the key airflow-init's step makes, and runs
its writer. The simulator serves docker/seed.json with app-1's SSH service and disk moved
to where this demo VM is; the two connections are the compose file's, with the key path
moved. QuiesceOperator then freezes and thaws app-1 through Skytap, as the DAG in compose
does, and SIGTERM (what `docker compose stop` sends) must thaw and unmount.

Needs root, OpenSSH's sshd and the freeze tools (scripts/system-deps.sh installs them);
elsewhere it skips and says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from skytap_simulator.control import SimulatorProcess
from tests.deploy.conftest import ROOT, SEED_FILE, environment, load_compose

# Root, sshd and fsfreeze (it starts its own simulator too), which its fixtures do not show.
pytestmark = [pytest.mark.vm, pytest.mark.integration]

ENTRYPOINT = ROOT / "docker" / "demo-vm" / "entrypoint.sh"
TOOLS = ("sshd", "ssh-keygen", "fsfreeze", "losetup", "mount", "mkfs.ext4", "mountpoint")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop mount, fsfreeze, sshd)"
    missing = [t for t in TOOLS if shutil.which(t, path=SBIN_PATH) is None]
    if missing:
        return f"missing {', '.join(missing)} (make test installs them with apt as root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoVm:
    """docker/demo-vm/entrypoint.sh running in ``root`` (a scratch directory)."""

    def __init__(self, root: Path, authorized_keys: Path, known_hosts: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.known_hosts = known_hosts
        self.data = root / "srv-data"
        self.image = root / "disks" / "app-1.img"
        self.log = root / "demo-vm.log"
        self.env = {
            "PATH": SBIN_PATH,
            "DEMO_VM_NAME": "app-1",
            "DATA_MOUNT": str(self.data),
            "DISK_DIR": str(self.image.parent),
            "DISK_SIZE_MB": "16",
            "AUTHORIZED_KEYS": str(authorized_keys),
            "SSH_DIR": str(root / "ssh"),
            "SSH_PORT": str(self.port),
            "SSH_LISTEN": "127.0.0.1",
            "SSHD_STRICT_MODES": "no",  # the scratch dir sits under world-writable /tmp
            "KEY_WAIT_SECONDS": "5",
            # Its SSH service as the seed publishes it (127.0.0.1:port here), and where the
            # worker's ~/.ssh/known_hosts is (the compose file's demo-vm-known-hosts volume).
            "KNOWN_HOSTS": str(known_hosts),
            "KNOWN_HOSTS_NAME": f"[127.0.0.1]:{self.port}",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["sh", str(ENTRYPOINT)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the demo VM exited ({self.proc.returncode}): {self.read_log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1) as s,
            ):
                if s.recv(64).startswith(b"SSH-"):
                    return
            time.sleep(0.1)
        pytest.fail(f"the demo VM's sshd did not answer: {self.read_log()}")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def heartbeat(self) -> str:
        return (self.data / "heartbeat").read_text()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _run("fsfreeze", "-u", str(self.data))
            self.proc.kill()
            self.proc.wait(timeout=10)
            # sshd is its child: stop it by the pid file it wrote
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((self.root / "ssh" / "sshd.pid").read_text()), signal.SIGTERM)
        if _run("mountpoint", "-q", str(self.data)).returncode == 0:
            _run("fsfreeze", "-u", str(self.data))
            if _run("umount", str(self.data)).returncode != 0:
                _run("umount", "-l", str(self.data))


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="skytap-demo-vm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def quiesce(action: Literal["freeze", "thaw"], run_id: str, **kwargs: Any) -> dict[str, Any]:
    """A QuiesceOperator's execute, as a task of one DAG run would run it."""
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    with DAG("compose_demo_vm_test", schedule=None):
        op = QuiesceOperator(task_id=action, action=action, **kwargs)
    return op.execute({"run_id": run_id})


def seed_for(vm: DemoVm) -> dict[str, Any]:
    """docker/seed.json with app-1's SSH service and disk where this demo VM is."""
    seed = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    env = next(e for e in seed["environments"] if e["id"] == "1001")
    app1 = next(v for v in env["vms"] if v["name"] == "app-1")
    service = next(s for i in app1["interfaces"] for s in i["services"])
    compose_vm = load_compose()["services"]["demo-vm-app-1"]
    address = compose_vm["networks"]["default"]["ipv4_address"]
    assert (service["external_ip"], service["external_port"]) == (address, 22)
    service.update(external_ip="127.0.0.1", external_port=vm.port)
    app1["disk_image"] = str(vm.image)
    return seed


def test_the_demo_vm_is_frozen_and_thawed_through_skytap(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = _why_not()
    if why:
        pytest.skip(f"demo VM entrypoint on this machine: {why}")
    # airflow-init's step: the key pair, private for Airflow, public for the VMs.
    private = scratch / "airflow-ssh" / "id_ed25519"
    public = scratch / "demo-vm-keys" / "authorized_keys"
    setup = [sys.executable, str(ROOT / "docker" / "compose_setup.py"), "ssh-key"]
    made = subprocess.run(
        [*setup, "--private", str(private), "--public", str(public)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "BEGIN OPENSSH PRIVATE KEY" not in made.stdout + made.stderr  # never printed
    assert private.stat().st_mode & 0o777 == 0o600

    # The worker's home: the compose file mounts the VMs' published host keys at ~/.ssh there.
    home = scratch / "airflow-home"
    monkeypatch.setenv("HOME", str(home))
    vm = DemoVm(scratch, public, home / ".ssh" / "known_hosts")
    run_id = f"manual__compose_demo_vm__{uuid.uuid4().hex[:8]}"
    guardians: list[str] = []
    try:
        vm.start()
        assert _run("mountpoint", "-q", str(vm.data)).returncode == 0
        assert _run("findmnt", "-n", "-o", "FSTYPE", str(vm.data)).stdout.strip() == "ext4"

        seed_path = scratch / "seed.json"
        seed_path.write_text(json.dumps(seed_for(vm)))
        compose_env = environment(load_compose()["services"]["airflow-worker"])
        skytap = json.loads(compose_env["AIRFLOW_CONN_SKYTAP_DEFAULT"])
        ssh = json.loads(compose_env["AIRFLOW_CONN_SKYTAP_VM_SSH"])
        ssh["extra"]["key_file"] = str(private)
        published = vm.known_hosts.read_text().split()
        host_pub = (scratch / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert published == [f"[127.0.0.1]:{vm.port}", *host_pub]
        with SimulatorProcess(seed=seed_path, data_dir=scratch / "copies") as sim:
            skytap["host"] = sim.url
            monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_DEFAULT", json.dumps(skytap))
            monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_VM_SSH", json.dumps(ssh))
            targets = {
                "environment_id": "1001",
                "vm_names": ["app-1"],
                "ssh_conn_id": "skytap_vm_ssh",
                "mounts": [str(vm.data)],
            }
            frozen = quiesce("freeze", run_id, max_freeze_seconds=60, **targets)
            guardians += [h["guardian_id"] for h in frozen["hosts"]]
            assert frozen["consistency"] == "application-consistent"
            assert frozen["frozen_hosts"] == 1
            assert frozen["hosts"][0]["host"] == f"app-1 (VM 2001 at 127.0.0.1:{vm.port})"
            before = vm.heartbeat()
            time.sleep(2.5)  # the writer writes every second: frozen, it stalls
            assert vm.heartbeat() == before, "the demo VM's writer kept writing while frozen"

            thawed = quiesce("thaw", run_id, **targets)
            assert thawed["consistency"] == "application-consistent"
            deadline = time.monotonic() + 10
            while vm.heartbeat() == before:
                assert time.monotonic() < deadline, "the writer did not resume after the thaw"
                time.sleep(0.2)

            # The connection checks host keys: a host whose key is not the published one (a
            # man in the middle, or a VM re-created without publishing) and a host with no
            # published key are refused before anything is sent; nothing freezes.
            other = scratch / "other_host_key"
            keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)]
            assert _run(*keygen).returncode == 0
            wrong = f"[127.0.0.1]:{vm.port} " + " ".join(
                other.with_suffix(".pub").read_text().split()[:2]
            )
            for known in (wrong + "\n", ""):
                vm.known_hosts.write_text(known)
                with pytest.raises(Exception, match=r"(?i)host key|known_hosts|not found"):
                    quiesce(
                        "freeze",
                        f"{run_id}-refused",
                        max_freeze_seconds=60,
                        ssh_connect_attempts=1,  # a refused key is final; no 3-5 s retry waits
                        **targets,
                    )
                assert _run("fsfreeze", "-u", str(vm.data)).returncode != 0, "it froze"

        # `docker compose stop` sends SIGTERM: the VM thaws, unmounts and exits cleanly.
        assert _run("fsfreeze", "-f", str(vm.data)).returncode == 0
        assert vm.stop() == 0, vm.read_log()
        assert _run("mountpoint", "-q", str(vm.data)).returncode != 0
        assert _run("losetup", "-j", str(vm.image)).stdout.strip() == ""
    finally:
        vm.cleanup()
        for gid in guardians:  # their records live in /run and would outlive the test
            shutil.rmtree(Path("/run/skytap-quiesce") / gid, ignore_errors=True)
