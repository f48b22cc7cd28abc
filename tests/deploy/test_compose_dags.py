"""The example DAGs, as the compose stack loads them, find what their defaults name there.

The DAGs folder mounted in the containers is ./dags; a manual trigger with the defaults
must meet connections the compose file defines, an environment the simulator's seed holds,
mount points the demo VMs freeze, and regions the simulator knows.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from skytap_simulator.models import REGIONS
from tests.deploy.conftest import ROOT, SEED_FILE, environment, load_compose, volumes

ENTRYPOINT = ROOT / "docker" / "demo-vm" / "entrypoint.sh"


def demo_vm_data_mount() -> str:
    """Where the demo VM entrypoint mounts its data filesystem (DATA_MOUNT's default)."""
    found = re.search(r"\$\{DATA_MOUNT:-([^}]+)\}", ENTRYPOINT.read_text(encoding="utf-8"))
    assert found is not None
    return found.group(1)


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    folder = ROOT / "dags"
    if not any(folder.glob("*.py")):
        pytest.skip("dags/ holds no DAG file yet: nothing for the compose stack to load")
    # The backup config the containers read: SKYTAP_BACKUPS_CONFIG, a file compose mounts.
    worker = load_compose()["services"]["airflow-worker"]
    config = environment(worker)["SKYTAP_BACKUPS_CONFIG"]
    mounted = {target: source for target, (source, _) in volumes(worker).items()}
    assert config in mounted, f"compose mounts nothing at {config}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKYTAP_BACKUPS_CONFIG", str(ROOT / mounted[config]))
        bag = DagBag(str(folder))  # no examples: tests/conftest.py
    assert bag.import_errors == {}
    assert "skytap_live_clone_backup" in bag.dags and "skytap_restore_drill" in bag.dags
    return bag.dags


def test_the_dags_folder_the_containers_mount_is_this_one() -> None:
    worker = load_compose()["services"]["airflow-worker"]
    assert volumes(worker)["/opt/airflow/dags"] == ("./dags", "rw")


def test_the_example_dags_defaults_meet_the_compose_stack(dags: dict[str, Any]) -> None:
    services = load_compose()["services"]
    conns = {
        key.removeprefix("AIRFLOW_CONN_").lower()
        for key in environment(services["airflow-worker"])
        if key.startswith("AIRFLOW_CONN_")
    }
    seed = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    environments = {e["id"]: e for e in seed["environments"]}
    for vm_service in ("demo-vm-app-1", "demo-vm-app-2", "demo-vm-db-1"):
        assert "DATA_MOUNT" not in environment(services[vm_service])
    assert "skytap_default" in conns
    assert dags, "no DAG loaded"
    for dag_id, dag in dags.items():
        params = dag.params.dump()
        if "backup.freeze" in dag.task_dict and "environment_id" not in params:
            # A backup DAG of the config: what its freeze is given, not a form's defaults.
            chosen = dag.get_task("backup.freeze").quiesce
            params |= {
                "environment_id": chosen.environment_id,
                "ssh_conn_id": chosen.ssh_conn_id,
                "vm_names": chosen.vm_names,
                "mounts": chosen.mounts,
            }
        if "ssh_conn_id" in params:
            assert params["ssh_conn_id"] in conns, dag_id
        if "environment_id" in params:
            env = environments.get(params["environment_id"])
            assert env is not None, f"{dag_id}: environment {params['environment_id']} not seeded"
            assert env["runstate"] == "running", dag_id  # a live clone needs a running one
            names = params.get("vm_names") or [vm["name"] for vm in env["vms"]]
            assert set(names) <= {vm["name"] for vm in env["vms"]}, dag_id
        if "mounts" in params:
            assert params["mounts"] == [demo_vm_data_mount()], dag_id
        for region in params.get("dr_regions", []):
            assert region in REGIONS, f"{dag_id}: the simulator has no region {region}"
