"""DAG runs with `airflow dags test` on a temporary AIRFLOW_HOME (SQLite), against the simulator.

`airflow dags test` is `dag.test()`: the real task runner executes each task, a deferral
runs its trigger in-process to the event, and XComs and extra links land in the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import api_requests

AIRFLOW = Path(sys.executable).with_name("airflow")
DAGS = Path(__file__).with_name("dags")
DAG_ID = "skytap_clone_test"
REGIONS = ["EMEA", "APAC-2", "US-East-2"]

READ_XCOMS = """
import json, sys
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as session:
    rows = session.query(XComModel).filter(XComModel.dag_id == sys.argv[1]).all()
    print(json.dumps([
        {"run_id": r.run_id, "task_id": r.task_id, "map_index": r.map_index, "key": r.key,
         "value": XComModel.deserialize_value(r)} for r in rows
    ], default=str))
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home")
    env = dict(os.environ)
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    done = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return env


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def xcoms(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", READ_XCOMS, DAG_ID], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def with_sim(env: dict[str, str], sim: Any) -> dict[str, str]:
    conn = {"conn_type": "skytap", "host": sim.url, "login": sim.username, "password": sim.token}
    return env | {"AIRFLOW_CONN_SKYTAP_DEFAULT": json.dumps(conn)}


def test_the_backup_dag_defers_completes_and_a_rerun_makes_nothing_new(
    airflow_home: dict[str, str], sim: Any
) -> None:
    env = with_sim(airflow_home, sim)
    sim.admin.faults(
        seed=7,
        error_rates={"423": 0.1, "429": 0.1, "503": 0.1},
        ambiguous_fraction=0.5,
        retry_after_s=0,
    )
    done = run(env, "dags", "test", DAG_ID, "2026-11-24")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert "DagRun Finished" in out and "state=success" in out, out[-3000:]
    assert sim.token not in out  # the API token never reaches a log

    name = f"{DAG_ID}-environment-1001-20261124T000000Z"
    copies = [t for t in sim.admin.state()["templates"] if t["name"] == name]
    assert sorted(t["region"] for t in copies) == sorted(["US-West", *REGIONS])
    assert not any(t["deleted"] for t in copies)

    values = xcoms(env)
    results = {
        (x["task_id"], x["map_index"]): x["value"] for x in values if x["key"] == "return_value"
    }
    clone = results[("clone", -1)]
    assert clone["name"] == name and clone["created"] is True
    assert [results[("copy_to_dr", i)]["region"] for i in range(3)] == REGIONS
    links = [x["value"] for x in values if x["key"] == "_link_SkytapResourceLink"]
    assert f"{sim.url}/templates/{clone['id']}" in links
    assert len(links) == 4  # the clone and each mapped DR copy

    injected = [r for r in api_requests(sim) if r.get("fault")]
    print(f"first run: {len(api_requests(sim))} requests, {len(injected)} failed by injection")

    # A re-run of the same date (a backfill, a cleared run) reuses every copy.
    sim.admin.clear_requests()
    again = run(env, "dags", "test", DAG_ID, "2026-11-24")
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    copies = [t for t in sim.admin.state()["templates"] if t["name"] == name]
    assert len(copies) == 4
    posts = [r for r in api_requests(sim) if r["method"] == "POST"]
    assert posts == [], posts
