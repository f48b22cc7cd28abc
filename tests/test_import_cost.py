"""Parsing a DAG that uses the provider loads no client library a task needs only to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
# Imported when a task talks to Skytap (requests) or to a VM (paramiko), never at parse time.
RUN_TIME_ONLY = ("requests", "urllib3", "paramiko", "invoke")

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])  # no examples: AIRFLOW__CORE__LOAD_EXAMPLES below
errors = {k: str(v) for k, v in bag.import_errors.items()}
loaded = sorted(m for m in sys.argv[2:] if m in sys.modules)
print(json.dumps({"dags": sorted(bag.dags), "errors": errors, "loaded": loaded}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_an_example_dag_loads_neither_requests_nor_paramiko(dag_file: Path) -> None:
    # The demo's config: without one the backup and drill files define no DAG.
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        SKYTAP_BACKUPS_CONFIG=str(ROOT / "demo" / "skytap_backups.yaml"),
    )
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(dag_file), *RUN_TIME_ONLY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert parsed["dags"], f"{dag_file.name} defines no DAG"
    assert parsed["loaded"] == []
