"""The restore drill DAG (dags/skytap_restore_drill.py) with `airflow dags test`, against the
simulator and the lab: the restored environment's VMs boot on its own copied disks."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skytap.backups import consistency_tag, source_tag, time_tag
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.verification import verifications
from demo import airflow_cli, lab
from tests.conftest import Sim
from tests.system.conftest import ENV
from tests.system.test_restore_lab import frozen_backup, template_vms

DRILL = "skytap_restore_drill"
BACKUP_DAG = "skytap_live_clone_backup"


@pytest.fixture
def run_env(run_env: dict[str, str], lab_sim: Sim, vms: lab.Lab) -> Iterator[dict[str, str]]:
    """The system tests' run_env (tests/system/conftest.py), with a hypervisor booting
    restored environments' VMs on their copied disks."""
    with lab.Hypervisor(vms, lab_sim.admin) as hypervisor:
        yield run_env
    assert hypervisor.errors == []
    assert vms.restored == [], "a restored VM outlived its environment"


def dr_backup(sim: Sim, vms: lab.Lab, when: datetime, verdict: str) -> str:
    """A backup as the backup DAG leaves it: a template saved frozen, tagged, copied to EMEA
    (tagged the same); answers the EMEA copy's id."""
    hook = SkytapHook()
    name = f"{BACKUP_DAG}-environment-{ENV}-{when:%Y%m%dT%H%M%SZ}"
    tags = [source_tag(BACKUP_DAG, "environment", ENV), time_tag(when), consistency_tag(verdict)]
    template = frozen_backup(hook, vms, name)
    hook.add_tags("template", template["id"], tags)
    copy = hook.copy_template(template["id"], name=name, target_region="EMEA")
    hook.wait_until_ready("template", copy["id"], timeout=60, poll_interval=0.2)
    hook.add_tags("template", copy["id"], tags)
    return str(copy["id"])


@pytest.fixture
def connections(run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The same connections in this process, for making the backups with the hook."""
    for key in ("AIRFLOW_CONN_SKYTAP_DEFAULT", "AIRFLOW_CONN_SKYTAP_VM_SSH"):
        monkeypatch.setenv(key, run_env[key])
    return run_env


def drill(env: dict[str, str], vms: lab.Lab, date: str) -> tuple[bool, str, dict[Any, Any]]:
    conf = {"boot_timeout": 30, "restore_timeout_minutes": 5}
    # The config publishes SSH on the restored VMs and checks the lab's records (the form
    # offers neither). airflow_cli.dags_test leaves the deadline alerts out (3.3.2 crashes
    # after a successful run of a DAG with one); tests/dags checks they are declared.
    config = Path(tempfile.mkdtemp(prefix="drill-config-")) / "skytap_backups.yaml"
    checks = {"allow_publish_ssh": True, "app_check": vms.app_check()}
    airflow_cli.write_config(config, drill=checks)
    done = airflow_cli.dags_test(
        env | {airflow_cli.CONFIG_ENV: str(config)}, DRILL, date, conf, timeout=300
    )
    record = airflow_cli.run_record(env, DRILL)
    run_id = next(
        (t["run_id"] for t in record["task_instances"] if t["logical_date"] == date), None
    )
    states = {t["task_id"]: t["state"] for t in record["task_instances"] if t["run_id"] == run_id}
    results = airflow_cli.results(record, run_id)
    results["states"] = states
    return airflow_cli.succeeded(done), done.stdout + done.stderr, results


def test_the_newest_consistent_backup_restores_and_is_tagged_verified(
    connections: dict[str, str], lab_sim: Sim, vms: lab.Lab
) -> None:
    older = dr_backup(
        lab_sim, vms, datetime(2026, 11, 20, tzinfo=timezone.utc), "application-consistent"
    )
    newest = dr_backup(
        lab_sim, vms, datetime(2026, 11, 21, tzinfo=timezone.utc), "application-consistent"
    )
    torn = dr_backup(lab_sim, vms, datetime(2026, 11, 22, tzinfo=timezone.utc), "inconsistent")
    ok, out, results = drill(connections, vms, "2026-11-29")
    assert ok, out[-6000:]
    assert lab_sim.token not in out
    report = results[("report", -1)]
    assert report["template_id"] == newest and report["region"] == "EMEA"
    assert report["verified"] is True and report["drill_environment_deleted"] is True
    assert sorted(h.split(" ")[0] for h in report["vms"]) == ["app-1", "app-2", "db-1"]
    assert set(report["vms"].values()) == {"healthy"}
    records = [int(o.split()[1]) for o in report["app_output"].values()]
    assert all(n > 0 for n in records), report["app_output"]
    seconds = report["recovery_seconds"]
    assert 0 < seconds < 120
    restore = results[("restore", -1)]
    assert (restore["outbound_traffic"], restore["routable"]) == (False, False)
    hook = SkytapHook()
    [(when, rto)] = verifications(hook.get_template(newest))
    assert rto == pytest.approx(seconds, abs=0.05)
    assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 600  # when it passed
    assert (
        verifications(hook.get_template(older)) == []
        and verifications(hook.get_template(torn)) == []
    )
    assert lab_sim.admin.restored_left() == []
    print(
        f"restore drill: restored and checked in {seconds:.1f} s, 3 VMs healthy, "
        f"{sum(records)} records verified"
    )


def test_a_broken_backup_fails_the_drill_gets_no_tag_and_is_still_deleted(
    connections: dict[str, str], lab_sim: Sim, vms: lab.Lab
) -> None:
    broken = dr_backup(
        lab_sim, vms, datetime(2026, 11, 23, tzinfo=timezone.utc), "application-consistent"
    )
    image = next(
        vm["disk_image"]
        for vm in template_vms(lab_sim.admin.state(), broken)
        if vm["name"] == "db-1"
    )
    subprocess.run(
        ["debugfs", "-w", "-R", f"set_inode_field /{lab.RECORDS} links_count 9", image],
        check=True,
        capture_output=True,
    )
    ok, out, results = drill(connections, vms, "2026-11-30")
    assert not ok, "a backup whose disk is damaged must fail the drill"
    states = results["states"]
    assert states["check"] == "failed" and states["vouch"] == "upstream_failed"
    assert states["delete"] == "success" and states["report"] == "failed"
    assert "db-1" in out and "e2fsck -n exit 4" in out
    assert verifications(SkytapHook().get_template(broken)) == []
    assert lab_sim.admin.restored_left() == []
    made = lab_sim.admin.restored()
    assert len(made) == 1 and made[0]["deleted"]


def test_without_a_consistent_backup_the_drill_fails_and_makes_nothing(
    connections: dict[str, str], lab_sim: Sim, vms: lab.Lab
) -> None:
    ok, out, results = drill(connections, vms, "2026-12-01")
    assert not ok
    assert "no application-consistent backup of environment 1001" in out
    assert results["states"]["pick"] == "failed"
    assert lab_sim.admin.restored() == []


def test_the_rpo_alert_is_declared_and_the_drill_runs_on_the_backup_asset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv(airflow_cli.CONFIG_ENV, str(airflow_cli.DEMO_CONFIG))
    monkeypatch.delenv("SKYTAP_DEADLINE_ALERTS", raising=False)
    bag = DagBag(str(airflow_cli.DAGS / f"{DRILL}.py"))
    assert bag.import_errors == {}
    dag = bag.dags[DRILL]
    [alert] = dag.deadline
    assert alert.interval.total_seconds() == 30 * 3600
    assert alert.callback.path == "airflow_provider_skytap.verification.rpo_missed"
    assert "skytap_backup" in repr(dag.timetable) and "0 4 * * 0" in repr(dag.timetable)
    teardowns = [t.task_id for t in dag.tasks if t.is_teardown]
    assert teardowns == ["delete"]
    params = dag.params
    for name in params:
        param = params.get_param(name)
        assert param.description and param.schema.get("title") and param.schema.get("type"), name
    params.validate()
