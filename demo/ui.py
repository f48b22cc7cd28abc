"""`make ui`: the whole Airflow UI on this machine, for someone without a Skytap account.

1. Starts the demo's three VMs (``demo.lab``: sshds with a disk at /srv/data and a writer;
   without root, the rootless kind whose application is paused instead of frozen).
2. Starts the Skytap simulator seeded with environment 1001 on those VMs (the seed of
   ``make demo``; copies take seconds, not hours).
3. Starts docker-compose.yaml's Airflow on this machine (``tests.system.airflow_stack``:
   private PostgreSQL and Redis, api-server, scheduler, dag-processor, two triggerers, two
   Celery workers) on the repository's dags/, with the connections ``skytap_default`` (the
   simulator) and ``skytap_vm_ssh`` (the VMs) set and the connection form's *Test* button on.
4. Prints the UI's address, the login and what to trigger; waits for Ctrl-C (or SIGTERM).

Ctrl-C stops Airflow first (a task still freezing is stopped, and its ``on_kill`` thaws), then
the simulator, then the VMs, thawing anything still frozen, and says what it found frozen.

The work runs in a child process in its own session, so the terminal's Ctrl-C reaches only
this process, which asks the child to stop in order: the VMs and the simulator are never
killed by the Ctrl-C itself while a freeze may hold their disks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo import airflow_cli, lab

SEED = airflow_cli.REPO / "skytap_simulator" / "default_seed.json"
USER, TOKEN, ENV = "demo", "sim-demo-token-7f3a9c", "1001"
COPY_SECONDS, REGION_COPY_SECONDS = 4, 6
SERVE = "--serve"


def say(text: str = "") -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run :func:`serve` in a child in its own session; turn Ctrl-C into its orderly stop.

    :param argv: ``[--serve]`` (the child) or nothing
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [SERVE]:
        return serve()
    child = subprocess.Popen(
        [sys.executable, "-m", "demo.ui", SERVE],
        start_new_session=True,  # the terminal's Ctrl-C does not reach it or what it starts
    )

    def stop(signum: int, frame: Any) -> None:
        if child.poll() is None:
            say("\nstopping: Airflow, then the simulator, then the VMs (thawing them) ...")
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return child.wait()


def serve() -> int:
    """Start the VMs, the simulator and Airflow; wait for SIGTERM; stop them in reverse."""
    # Imported here: the parent only forwards a signal, and these import Airflow's world.
    from skytap_simulator.control import SimulatorProcess
    from skytap_simulator.seed import default_seed
    from tests.system import stack_services
    from tests.system.airflow_stack import AirflowStack

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    reason = stack_services.unavailable()
    if reason:
        say(f"Airflow's stack needs PostgreSQL and Redis: {reason}. Nothing was started.")
        return 2
    rootless = os.environ.get("DEMO_ROOTLESS") == "1"
    reason = None if rootless else lab.unavailable()
    if reason:
        say(f"Real frozen disks are not possible here: {reason}; the VMs run without root.")
        rootless = True
    if rootless and (reason := lab.unavailable(rootless=True)):
        say(f"The demo's VMs cannot run on this machine: {reason}. Nothing was started.")
        return 2
    work = Path(tempfile.mkdtemp(prefix="skytap-ui-"))
    with lab.Lab(rootless) as vms:
        kind = "paused (profile app)" if rootless else f"frozen (fsfreeze on {lab.MOUNT})"
        say(f"VMs: {', '.join(vm.name for vm in vms.vms)}, their disks {kind}:")
        for vm in vms.vms:
            say(f"   {vm.name}: ssh 127.0.0.1:{vm.port}")
        seed_file = work / "seed.json"
        seed_file.write_text(json.dumps(vms.seed(default_seed(), ENV)))
        with SimulatorProcess(seed=seed_file, data_dir=work / "skytap-disks") as sim:
            sim.admin.config(
                copy_seconds=COPY_SECONDS, region_copy_seconds=REGION_COPY_SECONDS, delete_seconds=1
            )
            say(f"Skytap simulator: {sim.url} (environment {ENV}: those VMs; user {USER})")
            env = {
                "PYTHONPATH": str(airflow_cli.REPO),
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",  # the connection form's Test button
                # The demo's config (one backup DAG and drill, environment ENV), with what these
                # VMs need (rootless: their directories as mounts, the writers paused).
                airflow_cli.CONFIG_ENV: str(
                    airflow_cli.write_config(
                        work / "skytap_backups.yaml",
                        vms.backup_config(),
                        {"allow_publish_ssh": True, "app_check": vms.app_check()},
                    )
                ),
            }
            with AirflowStack(work / "airflow", airflow_cli.DAGS, env, stop_timeout=30) as stack:
                stack.set_connection(
                    "skytap_default",
                    {"conn_type": "skytap", "host": sim.url, "login": USER, "password": TOKEN},
                )
                stack.set_connection("skytap_vm_ssh", vms.ssh_connection())
                dags, errors = wait_for_dags(stack, airflow_cli.DAGS)
                password = json.loads(stack._password_file.read_text())[stack.admin]
                say()
                say(f"Airflow UI: {stack.base_url}")
                say(f"   login: {stack.admin} / {password} (made for this run; loopback only)")
                say(f"   DAGs: {', '.join(sorted(d['dag_id'] for d in dags)) or 'none'}")
                for error in errors:
                    say(f"   IMPORT ERROR in {error['filename']}: see the UI's DAG import errors")
                say(f"   trigger a DAG with its defaults: environment {ENV} is these VMs")
                say(f"   (its config: {env[airflow_cli.CONFIG_ENV]})")
                say(f"   the backup inventory: {stack.base_url}/plugin/skytap-backups")
                say(f"   AIRFLOW_HOME {stack.home}; component logs in {stack.home}/logs/components")
                say("Ctrl-C stops everything.")
                stopping.wait()
                stop_workers(stack, timeout=60)
                # The rest hold no task: the dag-processor may take the whole grace period to
                # act on SIGTERM (30 s, seen on 3.3.2); 10 s, then SIGKILL.
                stack.stop_timeout = 10
            # A freeze task stopped with Airflow thaws in on_kill; a guardian would at its
            # deadline. Whatever is still frozen now, the lab thaws as it stops.
            frozen = vms.frozen()
            say(f"VMs frozen or paused when Airflow stopped: {', '.join(frozen) or 'none'}")
        shutil.rmtree(work / "skytap-disks", ignore_errors=True)  # the copies' disk images
    say(f"stopped: Airflow, the simulator and the VMs (thawed first). Logs: {work}")
    return 0


def stop_workers(stack: Any, timeout: float) -> None:
    """SIGTERM the Celery workers first and wait for them: a running task (a freeze, a copy)
    ends, or is stopped and its ``on_kill`` thaws, while the api-server it reports to is up.

    :param stack: the running AirflowStack
    :param timeout: seconds to wait for the workers; the stack's stop kills what is left
    """
    workers = [c for c in stack.components.values() if c.name.startswith("worker")]
    running = [c.proc for c in workers if c.proc is not None and c.proc.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    began = time.monotonic()
    deadline = began + timeout
    for proc in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    say(f"airflow: workers stopped in {time.monotonic() - began:.1f}s")


def wait_for_dags(
    stack: Any, folder: Path, timeout: float = 120.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Until every DAG file of ``folder`` is parsed: its DAGs, or its import error.

    :param stack: the running AirflowStack
    :param folder: the DAGs folder
    :param timeout: seconds to wait
    """
    files = {p.name for p in folder.glob("*.py")}
    deadline = time.monotonic() + timeout
    while True:
        dags = stack.request("GET", "/api/v2/dags", params={"limit": 1000})["dags"]
        errors = stack.request("GET", "/api/v2/importErrors")["import_errors"]
        seen = {Path(d["fileloc"]).name for d in dags}
        seen |= {Path(e["filename"]).name for e in errors}
        if files <= seen or time.monotonic() > deadline:
            return dags, errors
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
