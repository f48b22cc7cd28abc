"""Airflow on a temporary AIRFLOW_HOME (SQLite), driven through its own CLI: for the demo and
the system tests. ``airflow dags test`` runs a DAG with the real task runner; what the run
left (task states, XComs) is read back from the metadata database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

AIRFLOW = Path(sys.executable).with_name("airflow")
REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
# The demo's backup config (environment 1001 of the simulator, the demo's lab): the DAG files
# of dags/ make a backup DAG and a restore drill per environment of the file named here.
DEMO_CONFIG = REPO / "demo" / "skytap_backups.yaml"
CONFIG_ENV = "SKYTAP_BACKUPS_CONFIG"

# Read in a separate interpreter with the run's AIRFLOW_HOME: the caller's process may
# have another Airflow configuration loaded.
_READ = """
import json, sys
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
dag_id = sys.argv[1]
with create_session() as session:
    xcoms = [
        {"run_id": r.run_id, "task_id": r.task_id, "map_index": r.map_index, "key": r.key,
         "value": XComModel.deserialize_value(r)}
        for r in session.query(XComModel).filter(XComModel.dag_id == dag_id)
    ]
    tis = [
        {"run_id": t.run_id, "logical_date": str(t.dag_run.logical_date)[:10],
         "task_id": t.task_id, "map_index": t.map_index,
         "state": t.state, "try_number": t.try_number,
         "start": t.start_date.isoformat() if t.start_date else None,
         "end": t.end_date.isoformat() if t.end_date else None, "duration": t.duration}
        for t in session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id)
    ]
print(json.dumps({"xcoms": xcoms, "task_instances": tis}, default=str))
"""


def airflow_env(
    home: Path, connections: dict[str, dict[str, Any]], dags_folder: Path = DAGS
) -> dict[str, str]:
    """Environment for Airflow commands on ``home``, with ``connections`` as env-var secrets."""
    env = dict(os.environ)
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        CONFIG_ENV: env.get(CONFIG_ENV) or str(DEMO_CONFIG),
    }
    for conn_id, doc in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(doc)
    return env


def write_config(
    path: Path, backup: dict[str, Any] | None = None, drill: dict[str, Any] | None = None
) -> Path:
    """The demo's config with its environment's fields changed (``backup``) and its drill's
    (``drill``), written to ``path``: for VMs known only at run time (the rootless lab's
    directories, the lab's app check). Point ``SKYTAP_BACKUPS_CONFIG`` at the answer.

    :param path: where to write it
    :param backup: fields of the demo environment to set
    :param drill: fields of its drill to set
    """
    import yaml

    doc = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    (environment,) = doc["environments"].values()
    environment.update(backup or {})
    environment["drill"].update(drill or {})
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def airflow(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow ARGS``; answers the completed process (stdout and stderr captured)."""
    return subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def migrate(env: dict[str, str]) -> None:
    """Create the metadata database; raises with Airflow's stderr if it cannot."""
    done = airflow(env, "db", "migrate")
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {done.stderr[-3000:]}")


def dags_test(
    env: dict[str, str],
    dag_id: str,
    logical_date: str | None = None,
    conf: dict[str, Any] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test`` one run of ``dag_id`` (its logical date, its conf), without the
    deadline alerts: ``airflow dags test`` on 3.3.2 crashes after a successful run of a DAG
    with a deadline (SKYTAP_DEADLINE_ALERTS=off; tests/dags checks they are declared)."""
    env = env | {"SKYTAP_DEADLINE_ALERTS": "off"}
    args = ["dags", "test", dag_id]
    if logical_date:
        args.append(logical_date)
    if conf is not None:
        args += ["--conf", json.dumps(conf)]
    return airflow(env, *args, timeout=timeout)


def succeeded(done: subprocess.CompletedProcess[str]) -> bool:
    """Whether ``airflow dags test`` ended with the run in state success."""
    out = done.stdout + done.stderr
    return done.returncode == 0 and "DagRun Finished" in out and "state=success" in out


def run_record(env: dict[str, str], dag_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every XCom and task instance of ``dag_id``: ``{"xcoms": [...], "task_instances": [...]}``."""
    done = subprocess.run(
        [sys.executable, "-c", _READ, dag_id], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"reading the run back failed: {done.stderr[-3000:]}")
    record: dict[str, list[dict[str, Any]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def results(record: dict[str, list[dict[str, Any]]], run_id: str | None = None) -> dict[Any, Any]:
    """``{(task_id, map_index): return value}`` (of one run, or of all when ``run_id`` is None)."""
    return {
        (x["task_id"], x["map_index"]): x["value"]
        for x in record["xcoms"]
        if x["key"] == "return_value" and (run_id is None or x["run_id"] == run_id)
    }
