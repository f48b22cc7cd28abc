"""Weekly restore drill: prove the newest backup restores, and say how long it took.

pick -> restore -> start -> reach -> check -> vouch -> delete (teardown) -> report

1. ``pick``: the newest ``application-consistent`` backup of the environment (made by the
   backup DAG ``backup_dag_id``) in ``region`` (the DR region by default).
2. ``restore``: a new environment from that template, in its region, isolated:
   ``outbound_traffic`` and ``routable`` false, no VPN attachment or tunnel, each read back
   from the environment itself. The request time starts the recovery time.
3. ``start``: runs it; the log shows each VM's runstate and the time spent.
4. ``reach``: each VM's SSH address. SSH is published (and unpublished by the teardown) only
   when ``allow_publish_ssh`` is true; otherwise the interface IPs, reachable only from
   inside the environment's network.
5. ``check``: over SSH on each VM: reachable, each mount's filesystem clean (``e2fsck -n``,
   read-only), the application's own ``app_check`` passing. The recovery time ends here.
6. ``vouch``: tags the template ``airflow-skytap-verified/<when>/rto-<seconds>s``.
7. ``delete``: a teardown: the drill environment is deleted on every path, failed or not.
8. ``report``: the recovery time, each VM's verdict, what was deleted; fails the run when
   the backup did not pass (a broken backup gets no verified tag).

Scheduled weekly, and on every update of the backup asset (``skytap_backup``). A deadline
alert fires when a run has not verified a backup within ``RPO_HOURS`` of being queued: the
newest verified backup is then older than the recovery point objective.
Connections: ``skytap_default`` and ``skytap_vm_ssh`` (the user and key the VMs let in).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import (
    DAG,
    AssetOrTimeSchedule,
    AsyncCallback,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    TriggerRule,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_skytap import checks
from airflow_provider_skytap.operators.restore import (
    CheckRestoredVMsOperator,
    DeleteRestoredEnvironmentOperator,
    PublishSshOperator,
    RestoreEnvironmentOperator,
    StartEnvironmentOperator,
)
from airflow_provider_skytap.verification import backup_asset, rpo_missed

# Sundays at 04:00 UTC, and whenever the backup DAG reports a new backup.
SCHEDULE = CronTriggerTimetable("0 4 * * 0", timezone="UTC")
START_DATE = datetime(2026, 11, 1, tzinfo=timezone.utc)
# The recovery point objective: a verified backup at most this old.
RPO_HOURS = 30
ENVIRONMENT_ID = "1001"
SSH_CONN_ID = "skytap_vm_ssh"
log = logging.getLogger(__name__)
# Fires when a run has not verified a backup RPO_HOURS after it was queued (a run that
# succeeds cancels it). SKYTAP_DRILL_RPO_ALERT=off leaves it out: `airflow dags test` on
# Airflow 3.3.2 crashes at the end of a successful run of a DAG that has a deadline (the
# in-process DAG's alerts are not the database ids DagRun.update_state looks up).
RPO_ALERT = DeadlineAlert(
    reference=DeadlineReference.DAGRUN_QUEUED_AT,
    interval=timedelta(hours=RPO_HOURS),
    callback=AsyncCallback(
        rpo_missed, kwargs={"rpo_hours": RPO_HOURS, "environment_id": ENVIRONMENT_ID}
    ),
)

with DAG(
    dag_id="skytap_restore_drill",
    description="Restore the newest consistent backup in isolation, check it, time it, delete it",
    schedule=AssetOrTimeSchedule(timetable=SCHEDULE, assets=[backup_asset()]),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    deadline=RPO_ALERT if os.environ.get("SKYTAP_DRILL_RPO_ALERT") != "off" else None,
    tags=["skytap", "backup", "restore-drill"],
    doc_md=__doc__,
    params={
        "environment_id": Param(
            ENVIRONMENT_ID,
            type="string",
            pattern=r"^[0-9]+$",
            title="Environment",
            description="The Skytap environment whose backups are drilled (digits).",
        ),
        "backup_dag_id": Param(
            "skytap_live_clone_backup",
            type="string",
            minLength=1,
            title="Backup DAG",
            description="The DAG that made the backups (their source tag names it).",
        ),
        "region": Param(
            "EMEA",
            type="string",
            minLength=1,
            title="Region",
            description="Restore the backup copy in this Skytap region (the DR region).",
        ),
        "allow_publish_ssh": Param(
            False,
            type="boolean",
            title="Publish SSH",
            description="Publish each restored VM's SSH port for the checks (removed "
            "afterwards). Off: the checks reach the VMs' interface IPs, from inside only.",
        ),
        "mounts": Param(
            ["/srv/data"],
            type="array",
            items={"type": "string"},
            title="Mounts to check",
            description="The frozen filesystems; each gets e2fsck -n (read-only).",
        ),
        "app_check": Param(
            "",
            type="string",
            title="Application check",
            description="A shell command run on each VM; exit 0 passes (empty: none), e.g. "
            "pg_isready && psql -Atc 'select count(*) from orders'.",
        ),
        "boot_timeout": Param(
            300,
            type="integer",
            minimum=1,
            title="Boot timeout (seconds)",
            description="How long each VM's SSH server may take to answer after it runs.",
        ),
        "restore_timeout_minutes": Param(
            60,
            type="integer",
            minimum=1,
            title="Restore timeout (minutes)",
            description="How long Skytap may take to make the environment from the template.",
            section="Advanced",
        ),
    },
) as dag:

    @task(retries=0)
    def pick(params: dict[str, Any], dag: Any = None, dag_run: Any = None) -> dict[str, Any]:
        """The newest application-consistent backup of the environment in the region."""
        from airflow_provider_skytap.backups import recovery_point, source_tag
        from airflow_provider_skytap.hooks.skytap import SkytapHook
        from airflow_provider_skytap.verification import newest_consistent

        checks.conf_keys(getattr(dag_run, "conf", None), getattr(dag, "params", params))
        hook = SkytapHook()
        tag = source_tag(params["backup_dag_id"], "environment", params["environment_id"])
        found = hook.list_resources("template", region=params["region"], tags=[tag])
        best = newest_consistent(found, params["region"])
        if best is None:
            raise AirflowFailException(
                f"no application-consistent backup of environment {params['environment_id']} "
                f"by {params['backup_dag_id']} in region {params['region']!r} "
                f"({len(found)} backups there)"
            )
        point = recovery_point(best)
        return {
            "template_id": str(best["id"]),
            "name": best.get("name"),
            "region": best.get("region"),
            "recovery_point": point.isoformat() if point else None,
        }

    picked = pick()
    restore = RestoreEnvironmentOperator(
        task_id="restore",
        template_id=picked["template_id"],
        region="{{ params.region }}",
        timeout="{{ params.restore_timeout_minutes * 60 }}",
        retries=1,
        retry_delay=timedelta(seconds=30),
    )
    environment_id = "{{ ti.xcom_pull(task_ids='restore')['id'] }}"
    start = StartEnvironmentOperator(task_id="start", environment_id=environment_id)
    reach = PublishSshOperator(
        task_id="reach",
        environment_id=environment_id,
        allow_publish="{{ params.allow_publish_ssh }}",
    )
    check = CheckRestoredVMsOperator(
        task_id="check",
        endpoints="{{ ti.xcom_pull(task_ids='reach')['endpoints'] }}",
        ssh_conn_id=SSH_CONN_ID,
        mounts="{{ params.mounts }}",
        app_check="{{ params.app_check }}",
        requested_at="{{ ti.xcom_pull(task_ids='restore')['requested_at'] }}",
        boot_timeout="{{ params.boot_timeout }}",
    )

    @task(retries=2)
    def vouch(picked: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
        """Tag the backup verified, with its recovery time."""
        from airflow_provider_skytap.hooks.skytap import SkytapHook
        from airflow_provider_skytap.verification import verified_tag

        seconds = float(checked["recovery_seconds"])
        when = datetime.fromtimestamp(float(checked["finished_at"]), tz=timezone.utc)
        tag = verified_tag(when, seconds)
        SkytapHook().add_tags("template", picked["template_id"], [tag])
        return {"template_id": picked["template_id"], "tag": tag, "recovery_seconds": seconds}

    vouched = vouch(picked, check.output)
    delete = DeleteRestoredEnvironmentOperator(
        task_id="delete",
        environment_id="{{ ti.xcom_pull(task_ids='restore', key='environment_id') }}",
        published="{{ (ti.xcom_pull(task_ids='reach') or {}).get('published', []) }}",
    ).as_teardown(setups=restore)

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def report(ti: Any = None) -> dict[str, Any]:
        """The drill's outcome; fails the run unless the backup was verified."""
        picked_ = ti.xcom_pull(task_ids="pick") or {}
        checked = ti.xcom_pull(task_ids="check", key="report") or {}
        vouched_ = ti.xcom_pull(task_ids="vouch") or {}
        deleted = ti.xcom_pull(task_ids="delete") or {}
        vms = checked.get("vms") or []
        outcome = {
            "template_id": picked_.get("template_id"),
            "region": picked_.get("region"),
            "recovery_point": picked_.get("recovery_point"),
            "verified": bool(vouched_),
            "recovery_seconds": vouched_.get("recovery_seconds"),
            "tag": vouched_.get("tag"),
            "vms": {vm["host"]: "healthy" if vm["ok"] else vm["problems"] for vm in vms},
            "app_output": {vm["host"]: vm.get("app_output") for vm in vms},
            "problems": checked.get("problems") or [],
            "drill_environment": deleted.get("id"),
            "drill_environment_deleted": bool(deleted),
        }
        log.info("Restore drill: %s", outcome)
        if not outcome["verified"]:
            reasons = outcome["problems"] or ["an earlier task failed: see its log"]
            raise AirflowFailException(
                f"backup {outcome['template_id']} was not verified: " + " | ".join(reasons)
            )
        return outcome

    picked >> restore >> start >> reach >> check
    vouched >> delete >> report()
