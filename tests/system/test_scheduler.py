"""The backup DAG under the real scheduler, triggered through the REST API as the UI does.

Slow (about 35 s here): ``AirflowStack`` starts the api-server, scheduler (LocalExecutor),
dag-processor and triggerer on a temporary AIRFLOW_HOME. The simulator runs on loopback, so
every component and every task process reaches it through ``AIRFLOW_CONN_SKYTAP_DEFAULT``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.airflow_stack import AIRFLOW, AirflowStack

DAGS = Path(__file__).with_name("dags")
ROOT = Path(__file__).parents[2]
DAG_ID = "skytap_clone_test"
REGIONS = ["EMEA", "APAC-2", "US-East-2"]
TRIGGER = "airflow_provider_skytap.triggers.clone.CloneCompleteTrigger"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _can_run_airflow() -> None:
    """The stack needs the ``airflow`` command beside this Python and POSIX process groups."""
    if not hasattr(os, "killpg"):
        pytest.skip("needs POSIX process groups to stop Airflow's components and their tasks")
    if not AIRFLOW.exists():
        pytest.skip(f"no airflow command beside {sys.executable}: run pytest from the venv")


def sim_env(sim: Any) -> dict[str, str]:
    conn = {"conn_type": "skytap", "host": sim.url, "login": sim.username, "password": sim.token}
    return {
        "AIRFLOW_CONN_SKYTAP_DEFAULT": json.dumps(conn),
        "PYTHONPATH": str(ROOT),
        # One worker slot: three region copies waiting at once prove a wait holds none.
        "AIRFLOW__CORE__PARALLELISM": "1",
    }


def test_a_run_triggered_through_the_rest_api_defers_its_waits_to_the_triggerer(
    tmp_path: Path, sim: Any
) -> None:
    began = time.monotonic()
    # Copies long enough that a poll of the REST API sees each wait deferred, and that the
    # first region copy is still running when the third mapped task defers: on Airflow 3.3 a
    # task takes 1.5 to 2 s from running to deferred on a loaded 2-core machine, so three on
    # one worker slot took 5.4 s, longer than a 3 s copy.
    sim.admin.config(copy_seconds=3.0, region_copy_seconds=10.0)
    conf = {"note": "triggered by test"}
    with AirflowStack(
        tmp_path / "airflow", DAGS, sim_env(sim), dag_ids=[DAG_ID], secrets=[sim.token]
    ) as airflow:
        run_id = airflow.trigger(DAG_ID, conf)
        assert airflow.wait_for_run(DAG_ID, run_id, timeout=180) == "success"

        # The conf the Trigger button sent came back with the run.
        run = airflow.dag_run(DAG_ID, run_id)
        assert run["conf"] == conf
        assert run["run_type"] == "manual"

        tis = {(t["task_id"], t["map_index"]): t for t in airflow.task_instances(DAG_ID, run_id)}
        expected = {("clone", -1), ("wait_for_clone", -1), ("prune", -1)}
        expected |= {("copy_to_dr", i) for i in range(len(REGIONS))}
        assert set(tis) == expected
        assert {k: t["state"] for k, t in tis.items()} == dict.fromkeys(expected, "success")
        # A resumed deferral is the same try: nothing failed and was retried.
        assert all(t["try_number"] == 1 for t in tis.values())

        # What the tasks returned, through the REST API, matches Skytap (the simulator).
        clone = airflow.xcom(DAG_ID, run_id, "clone")
        assert clone["created"] is True and clone["kind"] == "template"
        dr = [airflow.xcom(DAG_ID, run_id, "copy_to_dr", map_index=i) for i in range(3)]
        assert [d["region"] for d in dr] == REGIONS
        copies = [t for t in sim.admin.state()["templates"] if t["name"] == clone["name"]]
        assert sorted(t["region"] for t in copies) == sorted(["US-West", *REGIONS])
        assert not any(t["deleted"] for t in copies)
        assert {d["id"] for d in dr} <= {t["id"] for t in copies}

        # Every wait ran on the triggerer: a poll saw it deferred on a TriggererJob...
        deferrals = airflow.deferrals(DAG_ID, run_id)
        waits = [("wait_for_clone", -1)] + [("copy_to_dr", i) for i in range(len(REGIONS))]
        assert {w: deferrals.get(w) for w in waits} == {w: {TRIGGER} for w in waits}
        # ...and the log the UI shows has the triggerer's part (a .trigger.<job id>.log file).
        for task_id, map_index in waits:
            text = airflow.task_log(DAG_ID, run_id, task_id, 1, map_index=map_index)
            assert ".log.trigger." in text and "Trigger fired event" in text, (task_id, map_index)
        # With one worker slot, the three region copies waited at the same time.
        assert airflow.max_deferred_at_once(DAG_ID, run_id) == len(REGIONS)

        assert airflow.files_with_secrets() == []  # the API token never reaches a log
    assert airflow.leftovers() == []  # no component, worker, task or trigger survives
    print(f"scheduler test: {time.monotonic() - began:.1f}s in all")
