"""DAG runs with `airflow dags test` on a temporary AIRFLOW_HOME (SQLite), against the simulator.

`airflow dags test` is `dag.test()`: the real task runner executes each task, a deferral
runs its trigger in-process to the event, and XComs and extra links land in the database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from demo import airflow_cli
from tests.helpers import api_requests

DAGS = Path(__file__).with_name("dags")
DAG_ID = "skytap_clone_test"
REGIONS = ["EMEA", "APAC-2", "US-East-2"]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = airflow_cli.airflow_env(tmp_path_factory.mktemp("airflow_home"), {}, DAGS)
    airflow_cli.migrate(env)
    return env


def run(env: dict[str, str], *args: str) -> Any:
    return airflow_cli.airflow(env, *args, timeout=300)


def xcoms(env: dict[str, str]) -> list[dict[str, Any]]:
    return airflow_cli.run_record(env, DAG_ID)["xcoms"]


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
