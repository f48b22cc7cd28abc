"""A small backup DAG for the system tests: clone, wait, three DR regions, prune.

Everything defers. Poll intervals are short because the simulator's copies take a second.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG

from airflow_provider_skytap.operators.clone import (
    CopyTemplateToRegionOperator,
    LiveCloneOperator,
)
from airflow_provider_skytap.operators.retention import PruneBackupsOperator
from airflow_provider_skytap.sensors.clone import CloneCompleteSensor

FAST = {"poll_interval": 0.2, "max_poll_interval": 0.5, "timeout": 120, "deferrable": True}

with DAG(
    "skytap_clone_test",
    schedule="@daily",
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
):
    clone = LiveCloneOperator(
        task_id="clone", environment_id="1001", target="template", wait_for_completion=False
    )
    wait = CloneCompleteSensor(
        task_id="wait_for_clone",
        resource_id=clone.output["id"],
        kind=clone.output["kind"],
        poke_interval=0.2,
        max_poll_interval=0.5,
        timeout=120,
        deferrable=True,
    )
    dr = CopyTemplateToRegionOperator.partial(
        task_id="copy_to_dr", template_id=clone.output["id"], **FAST
    ).expand(target_region=["EMEA", "APAC-2", "US-East-2"])
    prune = PruneBackupsOperator(task_id="prune", environment_id="1001", keep=1)
    clone >> wait >> dr >> prune
