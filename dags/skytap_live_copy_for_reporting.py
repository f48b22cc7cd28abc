"""A consistent, running copy of a live Skytap environment, for reporting or troubleshooting.

reporting_copy.freeze -> .copy -> .wait -> .thaw -> power_on -> delete_later -> wait_hours -> delete

The copy is taken like the nightly backup (frozen VMs, live clone, thaw once Skytap has
read the disks), but as an environment, which is then powered on: reports and queries
run against it instead of production, and it is as of one instant on every VM. With
``delete_after_hours`` above 0 the copy is deleted that many hours after it was powered
on (the wait is deferred: it holds no worker slot); with 0 it is kept.

Triggered by hand (no schedule): Trigger DAG in the UI, or
``airflow dags trigger skytap_live_copy_for_reporting --conf '{"delete_after_hours": 8}'``.
If the copy fails, the VMs are thawed all the same and the run fails.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import DAG, Param, task

from airflow_provider_skytap.frozen_copy import frozen_copy, quiesce_params
from airflow_provider_skytap.hooks.skytap import SkytapHook

log = logging.getLogger(__name__)


with DAG(
    dag_id="skytap_live_copy_for_reporting",
    description="Freeze, live-copy the environment, thaw, power the copy on; delete it later",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # two freezes of one environment never overlap
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["skytap", "reporting"],
    doc_md=__doc__,
    params={
        **quiesce_params(),
        "delete_after_hours": Param(
            24,
            type="number",
            minimum=0,
            title="Delete the copy after (hours)",
            description="Hours after it is powered on; 0 keeps the copy.",
        ),
    },
) as dag:
    chain = frozen_copy(group_id="reporting_copy", target="environment")

    @task(doc_md="Starts the copy's VMs; the log and the result give each VM's SSH address.")
    def power_on(environment_id: str) -> dict[str, Any]:
        """Start the copy's VMs and answer where to reach them over SSH."""
        hook = SkytapHook()
        env = hook.set_runstate(environment_id, "running")
        endpoints = hook.get_ssh_endpoints(environment_id)
        ssh = {ep.vm_name: f"{ep.host}:{ep.port}" for ep in endpoints}
        for name, address in ssh.items():
            log.info("Copy %s is running; VM %s: ssh %s", environment_id, name, address)
        return {"id": environment_id, "name": env["name"], "runstate": env["runstate"], "ssh": ssh}

    @task.short_circuit(doc_md="Skips the timed delete when `delete_after_hours` is 0.")
    def delete_later(params: dict[str, Any]) -> bool:
        """Go on to the timed delete only when delete_after_hours is above 0."""
        return float(params["delete_after_hours"]) > 0

    @task(doc_md="When the copy is to be deleted: `delete_after_hours` from now.")
    def delete_at(params: dict[str, Any]) -> str:
        """When the copy is to be deleted: delete_after_hours from now."""
        hours = float(params["delete_after_hours"])
        return (datetime.now(timezone.utc) + timedelta(hours=hours)).isoformat()

    @task(doc_md="Deletes the copy (False if someone already deleted it).")
    def delete(environment_id: str) -> bool:
        """Delete the copy (answers False if someone already deleted it)."""
        return SkytapHook().delete("environment", environment_id)

    on = power_on(chain.copy.output["id"])
    at = delete_at()
    wait_hours = DateTimeSensorAsync(
        task_id="wait_hours",
        target_time=at,
        doc_md="Waits, deferred (no worker slot), until the copy is to be deleted.",
    )
    [chain.wait, chain.thaw] >> on >> delete_later() >> at >> wait_hours
    wait_hours >> delete(chain.copy.output["id"])
