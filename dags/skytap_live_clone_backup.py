"""Nightly application-consistent backup of a Skytap environment, with copies in DR regions.

dr_regions -> freeze -> clone -> wait_for_clone -> thaw -> copy_to_dr (one per region) -> prune

0. ``dr_regions``: checks the DR regions (Skytap's names, each once, not the environment's own
   region) before anything is frozen or copied, so a typo fails the run at once.
1. ``freeze``: over SSH, a guardian on every VM freezes the mounts (after the profile's
   preparation, e.g. a PostgreSQL CHECKPOINT) and thaws by itself after
   ``max_freeze_seconds`` whatever happens to Airflow. Once every VM is frozen it requests
   the clone at once (Airflow takes seconds to start the next task: that would be downtime).
2. ``clone``: saves the running environment as a template (a Skytap live clone). Its name is
   derived from the DAG, the environment and the logical date, so a retry or a re-run of the
   same date finds the template an earlier try made instead of making a second one (and the
   clone task finds the one the freeze task requested). It waits for the template itself,
   polling every 0.5-1 s (every second of it is the application's downtime, so it does not
   defer), and thaws the VMs the moment the template is complete.
3. ``wait_for_clone``: checks the template is complete (it pokes; it does not defer).
4. ``thaw``: runs whatever happened upstream (``all_done``), thaws whatever is still frozen,
   checks every mount is writable and reports per VM how long it was frozen and whether the
   copy is application-consistent, and tags the template with that verdict. It fails when a
   guardian had to thaw on its own (the template is then tagged ``inconsistent``).
5. ``copy_to_dr``: copies the template to each DR region; these copies take hours on Skytap,
   so each waits deferred, on the triggerer, holding no worker slot.
6. ``prune``: keeps the newest ``keep`` backups per region made by this DAG for this
   environment; it never touches anything else. Only backups the thaw tagged consistent
   count: a torn or unfinished one never pushes a good one out (it is deleted once a newer
   good one exists).

If the clone fails, the VMs are thawed all the same, and the run fails: the DR copies and
the prune never run, and they are the run's leaves.

Change the defaults below, or the values in the trigger form (Trigger DAG in the UI).
Connections: ``skytap_default`` (Skytap API) and ``skytap_vm_ssh`` (SSH user and key for
the VMs; hosts and ports come from each VM's published SSH service in Skytap).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task

from airflow_provider_skytap import checks
from airflow_provider_skytap.frozen_copy import frozen_copy, quiesce_params
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.operators.clone import CopyTemplateToRegionOperator
from airflow_provider_skytap.operators.retention import PruneBackupsOperator

# Nightly at 02:00 UTC: the one place the schedule is set.
SCHEDULE = "0 2 * * *"
START_DATE = datetime(2026, 11, 1, tzinfo=timezone.utc)


with DAG(
    dag_id="skytap_live_clone_backup",
    description="Freeze, live-clone to a template, thaw, copy to DR regions, keep the last N",
    schedule=SCHEDULE,
    start_date=START_DATE,
    # After an outage the scheduler makes only the latest night's run; `airflow backfill
    # create` makes one backup per missed date (each named after its date).
    catchup=False,
    # One run at a time, so two freezes of one environment never overlap (a second freeze of a
    # mount that is already frozen is refused on the VM as well).
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["skytap", "backup"],
    doc_md=__doc__,
    params={
        **quiesce_params(),
        "dr_regions": Param(
            ["EMEA"],
            type="array",
            items={"type": "string"},
            title="DR regions",
            description="Skytap regions to copy the template to, one per line; empty: none.",
        ),
        "keep": Param(
            7,
            type="integer",
            minimum=1,
            title="Backups to keep",
            description="How many backups of this environment to keep in each region.",
        ),
        "dr_poll_seconds": Param(
            60,
            type="integer",
            minimum=1,
            title="DR copy: first poll (seconds)",
            description="First pause between status checks of a region copy; it grows to "
            "10x this. Region copies take hours, and the wait holds no worker slot.",
            section="Advanced",
        ),
    },
) as dag:
    chain = frozen_copy(target="template", copy_task_id="clone", wait_task_id="wait_for_clone")

    @task(retries=0)  # the hook retries what is worth retrying; a bad region stays bad
    def dr_regions(params: dict[str, Any], dag: Any = None, dag_run: Any = None) -> list[str]:
        """The DR regions from the trigger form, checked before anything is frozen or copied:
        Skytap's region names, each once, none the environment's own region. A conf key that
        is no param (a typo) is refused too."""
        checks.conf_keys(getattr(dag_run, "conf", None), getattr(dag, "params", params))
        hook = SkytapHook()
        source = hook.get_environment(params["environment_id"])
        return checks.dr_regions(
            params["dr_regions"], source_region=source.get("region"), known=hook.settings.regions
        )

    regions = dr_regions()
    regions >> chain.freeze
    copy_to_dr = CopyTemplateToRegionOperator.partial(
        task_id="copy_to_dr",
        template_id=chain.copy.output["id"],
        deferrable=True,
        poll_interval="{{ params.dr_poll_seconds }}",
        max_poll_interval="{{ params.dr_poll_seconds * 10 }}",
    ).expand(target_region=regions)
    prune = PruneBackupsOperator(
        task_id="prune",
        environment_id="{{ params.environment_id }}",
        keep="{{ params.keep }}",
        confirmed_only=True,  # a torn or unfinished template is no backup
        # Runs when there are no DR regions (the mapped copy is skipped), not after a failure.
        trigger_rule=TriggerRule.NONE_FAILED,
    )

    [chain.wait, chain.thaw] >> copy_to_dr >> prune
