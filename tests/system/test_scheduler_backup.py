"""skytap_live_clone_backup under the real scheduler, on the lab's VMs: a run triggered
through the REST API with conf (what the UI's Trigger button sends), and a backfill.

On the session's distributed Airflow (``airflow_stack``: PostgreSQL, Redis, CeleryExecutor,
two workers, two triggerers); each test sets the connections through the REST API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_skytap.consistency import marked_token
from demo import lab
from tests.conftest import Sim
from tests.system.airflow_stack import AirflowStack
from tests.system.conftest import ENV, skytap_conn

DAG_ID = "skytap_live_clone_backup"
TRIGGER = "airflow_provider_skytap.triggers.clone.CloneCompleteTrigger"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def airflow(airflow_stack: AirflowStack, lab_sim: Sim, vms: lab.Lab) -> Iterator[AirflowStack]:
    """The shared stack with skytap_default on the lab's simulator and skytap_vm_ssh on the
    lab's VMs; after the test no log of it holds a secret."""
    airflow_stack.set_connection("skytap_default", skytap_conn(lab_sim))
    airflow_stack.set_connection("skytap_vm_ssh", vms.ssh_connection())
    yield airflow_stack
    assert airflow_stack.files_with_secrets() == []  # the API token never reaches a log


def templates(sim: Sim) -> list[dict[str, Any]]:
    return [
        t
        for t in sim.admin.state()["templates"]
        if t["name"].startswith(f"{DAG_ID}-") and not t["deleted"]
    ]


def show_failures(airflow: AirflowStack, run_id: str) -> None:
    """Print what went wrong in a run (task states and the end of each failed task's log)."""
    for ti in airflow.task_instances(DAG_ID, run_id):
        if ti["state"] != "success":
            print(f"{run_id} {ti['task_id']}[{ti['map_index']}]: {ti['state']}")
            log = airflow.task_log(DAG_ID, run_id, ti["task_id"], max(ti["try_number"], 1))
            print(log[-3000:])


def test_a_run_triggered_with_conf_backs_up_and_waits_for_regions_on_the_triggerer(
    airflow: AirflowStack, lab_sim: Sim
) -> None:
    # Region copies long enough for a REST poll to see them deferred.
    lab_sim.admin.config(region_copy_seconds=3)
    conf = {"dr_regions": ["EMEA", "APAC-2"], "dr_poll_seconds": 1, "keep": 3}
    run_id = airflow.trigger(DAG_ID, conf)
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=300)
    if state != "success":
        show_failures(airflow, run_id)
    assert state == "success"
    assert airflow.dag_run(DAG_ID, run_id)["conf"] == conf

    copies = templates(lab_sim)
    assert sorted(t["region"] for t in copies) == ["APAC-2", "EMEA", "US-West"]
    for template in copies:
        for vm in template["vms"]:
            check = lab.check_image(vm["disk_image"])
            assert check.consistent, f"{template['region']} {vm['name']}: {check.verdict()}"
    thaw = airflow.xcom(DAG_ID, run_id, "backup.thaw")
    assert thaw["consistency"] == "application-consistent"
    deferrals = airflow.deferrals(DAG_ID, run_id)
    for i in range(2):
        assert deferrals.get(("copy_to_dr", i)) == {TRIGGER}, deferrals
    print(f"freeze window under the scheduler: {thaw['freeze_window']['seconds']} s (1 s copy)")


def test_a_backfill_makes_one_backup_per_date_and_again_makes_none(
    airflow: AirflowStack, lab_sim: Sim
) -> None:
    dates = ["2026-11-10", "2026-11-11", "2026-11-12"]
    airflow.unpause(DAG_ID)

    def backfill() -> list[str]:
        body = {
            "dag_id": DAG_ID,
            "from_date": f"{dates[0]}T00:00:00Z",
            "to_date": f"{dates[-1]}T23:59:59Z",
            "dag_run_conf": {"dr_regions": []},
            "reprocess_behavior": "completed",
            "max_active_runs": 1,
        }
        made = airflow.backfill(body)
        deadline = time.monotonic() + 400
        while True:
            done = airflow.request("GET", f"/api/v2/backfills/{made['id']}")["completed_at"]
            runs = [
                r
                for r in airflow.request(
                    "GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100}
                )["dag_runs"]
                if r["run_type"] == "backfill"
            ]
            if done and all(r["state"] in ("success", "failed") for r in runs):
                break
            assert time.monotonic() < deadline, "the backfill did not complete in 400 s"
            time.sleep(2)
        for r in runs:
            if r["state"] != "success":
                show_failures(airflow, r["dag_run_id"])
        assert sorted(r["state"] for r in runs) == ["success"] * len(dates), runs
        return sorted(r["logical_date"][:10] for r in runs)

    assert backfill() == dates
    expected = [
        f"{DAG_ID}-environment-{ENV}-{d.replace('-', '')}T020000Z" for d in dates
    ]  # 02:00: the schedule; each name marked with its freeze window (-w<token>)
    names = sorted(t["name"] for t in templates(lab_sim))
    assert len(names) == len(expected)
    assert all(marked_token(n, base) for n, base in zip(names, expected, strict=True)), names

    before = {t["id"] for t in templates(lab_sim)}
    assert backfill() == dates  # the same dates again: every run finds its backup
    assert {t["id"] for t in templates(lab_sim)} == before
    print(f"backfill of {len(dates)} dates twice: {len(before)} backups")
