"""Nightly application-consistent backup of a Skytap environment, with copies in DR regions.

dr_regions -> backup.freeze -> backup.copy -> backup.wait -> backup.thaw -> copy_to_dr -> prune

0. ``dr_regions``: checks the DR regions (Skytap's names, each once, not the environment's own
   region) before anything is frozen or copied, so a typo fails the run at once.
1. ``backup.freeze``: over SSH, a guardian on every VM freezes the mounts (after the
   preset's preparation, e.g. a PostgreSQL CHECKPOINT) and thaws by itself after
   ``max_freeze_seconds`` whatever happens to Airflow. Once every VM is frozen it requests
   the template (a Skytap live clone), polls it every 0.5-1 s and releases the VMs over the
   SSH connections it still holds the moment Skytap shows it complete: no task starts while
   the VMs are frozen. The template's name comes from the DAG, the environment and the
   logical date, marked with this freeze window; a retry or a re-run of the date finds the
   one an earlier try made (and does not freeze again), and anything under that name that
   is not provably this DAG's fails the run, named.
2. ``backup.copy``: adopts that template (this DAG's tags, made by the connection's user)
   and keeps its id (``chain.copy.output["id"]``); it waits for it if the freeze could not.
3. ``backup.wait``: checks the template is complete (it pokes; it does not defer).
4. ``backup.thaw``: runs whatever happened upstream (``all_done``), releases whatever is
   still frozen, reports per VM how long it was frozen, and tags the template
   ``application-consistent`` only if it was requested in this freeze window and complete
   before the first release. It fails when a guardian had to thaw on its own (the template
   is then tagged ``inconsistent``).
5. ``copy_to_dr``: copies the template to each DR region; these copies take hours on Skytap,
   so each waits deferred, on the triggerer, holding no worker slot.
6. ``announce``: one event of the Airflow asset ``skytap_backup`` per backup made (the
   template and each DR copy), carrying the environment, the template, its region and its
   verdict: the restore drill (``skytap_restore_drill``) runs on it.
7. ``prune``: keeps the newest ``keep`` backups per region made by this DAG for this
   environment; it never touches anything else. Only backups the thaw tagged consistent
   count: a torn or unfinished one never pushes a good one out (it is deleted once a newer
   good one exists).

If the copy fails, the VMs are thawed all the same, and the run fails: the DR copies and
the prune never run, and they are the run's leaves.

Change the defaults below, or the values in the trigger form (Trigger DAG in the UI): the
environment, the VMs, the mounts, the longest freeze, and a choice among the DAG's presets
and SSH connections (no command and no connection can be typed in the form).
Connections: ``skytap_default`` (Skytap API) and ``skytap_vm_ssh`` (SSH user and key for
the VMs; hosts and ports come from each VM's published SSH service in Skytap).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task

from airflow_provider_skytap import checks
from airflow_provider_skytap.backups import consistency
from airflow_provider_skytap.frozen_copy import (
    DEFAULT_PRESETS,
    QuiescePreset,
    choice_from_params,
    frozen_copy,
    quiesce_params,
)
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.operators.clone import CopyTemplateToRegionOperator
from airflow_provider_skytap.operators.retention import PruneBackupsOperator
from airflow_provider_skytap.verification import backup_asset

# Nightly at 02:00 UTC: the one place the schedule is set.
SCHEDULE = "0 2 * * *"
START_DATE = datetime(2026, 11, 1, tzinfo=timezone.utc)
# How the VMs may be quiesced: the trigger form offers these names and nothing else, so a
# user who may only trigger this DAG never writes a command that runs on the VMs. Add your
# own here (DAG code is reviewed; the trigger form is not).
PRESETS = {
    **DEFAULT_PRESETS,
    # Profile app, no root: pause the application whose pid is in writer.pid in each of the
    # VM's directories (``mounts``), resume it after the copy. `make demo` without root uses it.
    "app-pidfile": QuiescePreset(
        "app",
        pre_freeze_command='for m in $SKYTAP_QUIESCE_MOUNTS; do kill -STOP "$(cat "$m/writer.pid")"'
        " || exit 1; done",
        post_thaw_command='for m in $SKYTAP_QUIESCE_MOUNTS; do kill -CONT "$(cat "$m/writer.pid")"'
        " || exit 1; done",
        description="pause the process in writer.pid of each directory (no root)",
    ),
}
# The SSH connections a run may use (the form offers these only).
SSH_CONN_IDS = ("skytap_vm_ssh",)


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
        **quiesce_params(presets=PRESETS, ssh_conn_ids=SSH_CONN_IDS),
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
    chain = frozen_copy(
        group_id="backup",
        target="template",
        quiesce=choice_from_params(presets=PRESETS, ssh_conn_ids=SSH_CONN_IDS),
    )

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

    @task(trigger_rule=TriggerRule.NONE_FAILED)  # no DR regions: copy_to_dr is skipped
    def backups_made(
        template_id: str, dr_copies: Any, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The template and its DR copies, each with the template's verdict (the thaw's tag)."""
        template = SkytapHook().get_template(template_id)
        made = [{"template_id": str(template_id), "region": template.get("region")}]
        made += [{"template_id": str(c["id"]), "region": c.get("region")} for c in dr_copies or []]
        verdict = consistency(template)
        return [{"environment_id": params["environment_id"], **m, "verdict": verdict} for m in made]

    @task(outlets=[backup_asset()])
    def announce(backup: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        """One ``skytap_backup`` asset event for one backup: the restore drill's cue."""
        outlet_events[backup_asset()].extra = backup
        return backup

    made = backups_made(chain.copy.output["id"], copy_to_dr.output)
    [chain.wait, chain.thaw] >> copy_to_dr >> [prune, made]
    announce.expand(backup=made)
