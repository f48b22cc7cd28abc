"""One live clone of environment 1001, for the browser test of the "Skytap" extra link."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG

from airflow_provider_skytap.operators.clone import LiveCloneOperator

with DAG(
    "skytap_ui_link",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
):
    LiveCloneOperator(
        task_id="clone", environment_id="1001", target="template", wait_for_completion=False
    )
