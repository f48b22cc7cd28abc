"""The backup DAG under the real scheduler, triggered through the REST API as the UI does.

On the session's distributed Airflow (``airflow_stack``: PostgreSQL, Redis, CeleryExecutor,
two workers with one slot each, two triggerers). The simulator runs on loopback; the test sets
``skytap_default`` through the REST API, and every task and trigger reads it from there.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.system.airflow_stack import WORKER_CONCURRENCY, AirflowStack

DAG_ID = "skytap_clone_test"
REGIONS = ["EMEA", "APAC-2", "US-East-2"]
TRIGGER = "airflow_provider_skytap.triggers.clone.CloneCompleteTrigger"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def sim_conn(sim: Any) -> dict[str, str]:
    return {"conn_type": "skytap", "host": sim.url, "login": sim.username, "password": sim.token}


def test_a_run_triggered_through_the_rest_api_defers_its_waits_to_the_triggerer(
    airflow_stack: AirflowStack, sim: Any
) -> None:
    began = time.monotonic()
    # Copies long enough that a poll of the REST API sees each wait deferred: the clone's
    # outlasts the start of wait_for_clone on a Celery worker (at a load average of 60 it ran
    # 3 s after the clone, when a 3 s copy was ready: it found it ready and never deferred),
    # and the first region copy is still running when the third mapped task defers (on Airflow
    # 3.3 a task takes 1.5 to 2 s from running to deferred on a loaded 2-core machine).
    sim.admin.config(copy_seconds=15.0, region_copy_seconds=10.0)
    conf = {"note": "triggered by test"}
    airflow = airflow_stack
    airflow.set_connection("skytap_default", sim_conn(sim))
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

    # Every task ran on a Celery worker of the stack (its hostname is the worker's name).
    assert {t["hostname"] for t in tis.values()} <= set(airflow.names("worker"))
    # Every wait ran on the triggerer: a poll saw it deferred on a TriggererJob...
    deferrals = airflow.deferrals(DAG_ID, run_id)
    waits = [("wait_for_clone", -1)] + [("copy_to_dr", i) for i in range(len(REGIONS))]
    assert {w: deferrals.get(w) for w in waits} == {w: {TRIGGER} for w in waits}
    # ...and the log the UI shows has the triggerer's part (a .trigger.<job id>.log file).
    for task_id, map_index in waits:
        text = airflow.task_log(DAG_ID, run_id, task_id, 1, map_index=map_index)
        assert ".log.trigger." in text and "Trigger fired event" in text, (task_id, map_index)
    # With two worker slots in all, the three region copies waited at the same time.
    slots = WORKER_CONCURRENCY * len(airflow.names("worker"))
    assert airflow.max_deferred_at_once(DAG_ID, run_id) == len(REGIONS) > slots

    assert airflow.files_with_secrets() == []  # the API token never reaches a log
    print(f"scheduler test: {time.monotonic() - began:.1f}s in all")
