"""One backup DAG and one restore drill per Skytap environment, from a config file.

A small YAML file, reviewed in git beside the DAGs, names each environment and how to back
it up: its schedule, DR regions, how many backups to keep, its VMs, mounts, preset and SSH
connection (both picked from the DAG author's lists in the DAG file), the deadline, who is
mailed when a run fails, and its restore drill::

    environments:
      erp:                                # DAG ids skytap_backup_erp, skytap_restore_drill_erp
        environment_id: "1234567"
        schedule: "0 2 * * *"
        dr_regions: [EMEA]
        keep: 7
        mounts: [/srv/data]
        profile: postgres
        drill: {region: EMEA, rpo_hours: 30}

Its path comes from ``SKYTAP_BACKUPS_CONFIG``, else ``skytap_backups.yaml`` beside the DAG
file. Without that file there is no backup DAG and no drill: nothing runs against an
environment nobody named. A file named by the variable that is missing, or any bad field,
is an import error of the DAG file naming the field and the value (the UI shows it); no
environment of a bad file gets a DAG.

Why a file and not an Airflow Variable: the file is reviewed in git with the DAGs (it
decides which machines are frozen, and how), while a Variable is editable by anyone with
Variable rights in the UI, and a Variable read at parse time costs a metadata-database read
on every parse of the DAG file.

``SKYTAP_DEADLINE_ALERTS=off`` leaves every deadline alert out (backup and drill): ``airflow
dags test`` on Airflow 3.3.2 crashes at the end of a successful run of a DAG with a deadline.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_provider_skytap.exceptions import InvalidValueError
from airflow_provider_skytap.operators.quiesce import QuiescePreset

log = logging.getLogger(__name__)

#: The environment variable naming the config file.
CONFIG_ENV = "SKYTAP_BACKUPS_CONFIG"
#: The config's file name beside the DAG file when the variable is not set.
CONFIG_NAME = "skytap_backups.yaml"
#: ``off`` leaves the deadline alerts out (``SKYTAP_DRILL_RPO_ALERT=off`` is the older name).
DEADLINES_ENV = "SKYTAP_DEADLINE_ALERTS"
START_DATE = datetime(2026, 11, 1, tzinfo=timezone.utc)
_ID = re.compile(r"^[0-9]+$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_VM = re.compile(r"^\S.*$")  # a Skytap VM name (spaces allowed) or "*"

_BACKUP_KEYS = {
    "environment_id": "the Skytap environment (the number in its URL); required",
    "dag_id": "the backup DAG's id (default skytap_backup_<name>)",
    "schedule": "cron expression, UTC (default '0 2 * * *')",
    "dr_regions": "Skytap regions to copy each backup to (default [])",
    "keep": "backups kept per region (default 7)",
    "vm_names": "only these VMs (default: every VM)",
    "mounts": "filesystems to freeze: a list, or VM name -> list with '*' (default [/srv/data])",
    "profile": "one of the DAG file's presets (default fsfreeze)",
    "ssh_conn_id": "one of the DAG file's SSH connections (default: its first)",
    "max_freeze_seconds": "the longest freeze, 10..7200 (default 600)",
    "deadline_minutes": "alert when a run is not done this long after its schedule (360)",
    "notify": "mail on a failed run or a missed deadline: {to: [...], from_email, smtp_conn_id}",
    "drill": "the restore drill of this environment (none without it)",
}
_DRILL_KEYS = {
    "dag_id": "the drill DAG's id (default skytap_restore_drill_<name>)",
    "schedule": "cron expression, UTC (default '0 4 * * 0'); also on each new backup",
    "region": "the region whose copy is restored (default: the first DR region)",
    "rpo_hours": "alert when no backup was verified this long after a drill was queued (30)",
    "mounts": "filesystems checked with e2fsck -n (default: the backup's, as a list)",
    "app_check": "shell command run on each restored VM; exit 0 passes (default: none)",
    "allow_publish_ssh": "publish SSH on the restored VMs for the checks (default false)",
}
_NOTIFY_KEYS = {
    "to": "addresses to mail",
    "from_email": "the sender (default airflow@localhost)",
    "smtp_conn_id": "the Airflow SMTP connection (default smtp_default)",
}


@dataclass(frozen=True)
class Notify:
    """Who is mailed, through which SMTP connection.

    :param to: the addresses
    :param from_email: the sender
    :param smtp_conn_id: the Airflow SMTP connection
    """

    to: tuple[str, ...]
    from_email: str = "airflow@localhost"
    smtp_conn_id: str = "smtp_default"


@dataclass(frozen=True)
class DrillConfig:
    """One environment's restore drill.

    :param dag_id: the drill DAG's id
    :param schedule: its cron schedule (UTC)
    :param region: the region whose copy is restored
    :param rpo_hours: the recovery point objective, for the deadline alert
    :param mounts: the filesystems checked
    :param app_check: the application's check command ("" for none)
    :param allow_publish_ssh: whether SSH may be published on the restored VMs
    """

    dag_id: str
    schedule: str
    region: str
    rpo_hours: float
    mounts: tuple[str, ...]
    app_check: str
    allow_publish_ssh: bool


@dataclass(frozen=True)
class EnvironmentConfig:
    """One environment's backup, as the config names it (see the module's docs).

    :param name: its key in the config
    :param environment_id: the Skytap environment
    :param dag_id: the backup DAG's id
    :param schedule: the cron schedule (UTC)
    :param dr_regions: the DR regions
    :param keep: backups kept per region
    :param vm_names: only these VMs (None: every VM)
    :param mounts: the mounts, a list or VM name -> list
    :param profile: the preset's name
    :param ssh_conn_id: the SSH connection
    :param max_freeze_seconds: the longest freeze
    :param deadline_minutes: the deadline after the schedule
    :param notify: who is mailed (None: nobody)
    :param drill: its restore drill (None: none)
    """

    name: str
    environment_id: str
    dag_id: str
    schedule: str
    dr_regions: tuple[str, ...]
    keep: int
    vm_names: tuple[str, ...] | None
    mounts: Any
    profile: str
    ssh_conn_id: str
    max_freeze_seconds: int
    deadline_minutes: int
    notify: Notify | None
    drill: DrillConfig | None


def config_path(dag_file: str | os.PathLike[str]) -> Path:
    """The config file: ``$SKYTAP_BACKUPS_CONFIG``, else ``skytap_backups.yaml`` beside the DAG.

    :param dag_file: the DAG file (``__file__``)
    """
    named = os.environ.get(CONFIG_ENV)
    return Path(named) if named else Path(dag_file).resolve().with_name(CONFIG_NAME)


def deadlines_on() -> bool:
    """Whether DAGs declare their deadline alerts (``SKYTAP_DEADLINE_ALERTS=off``: no)."""
    values = (os.environ.get(DEADLINES_ENV), os.environ.get("SKYTAP_DRILL_RPO_ALERT"))
    return "off" not in {str(v).strip().lower() for v in values if v}


def load_config(
    path: str | os.PathLike[str],
    *,
    presets: Mapping[str, QuiescePreset] | None,
    ssh_conn_ids: Sequence[str],
    required: bool = False,
) -> list[EnvironmentConfig]:
    """Every environment of the config file, checked; [] when there is no file.

    :param path: the YAML file
    :param presets: the presets the DAG file offers (``profile`` must name one); None: the
        profile is the backup DAG file's to check (the drill's file does not use it)
    :param ssh_conn_ids: the SSH connections the DAG file allows (``ssh_conn_id`` must be one)
    :param required: a missing file is an error (the path was named explicitly)
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        if required:
            raise InvalidValueError(f"{CONFIG_ENV}: {str(path)!r} is not a file")
        log.info("No backup config at %s: no backup DAG and no restore drill", path)
        return []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidValueError(f"{path}: not YAML: {exc}") from exc
    where = str(path)
    top = _mapping(doc if doc is not None else {}, where)
    _known(top, {"environments": "name -> environment"}, where)
    environments = _mapping(top.get("environments") or {}, f"{where}: environments")
    found = [
        _environment(str(name), raw, f"{where}: environments.{name}", presets, tuple(ssh_conn_ids))
        for name, raw in environments.items()
    ]
    _unique([e.environment_id for e in found], "environment_id", where)
    ids = [e.dag_id for e in found] + [e.drill.dag_id for e in found if e.drill]
    _unique(ids, "dag_id", where)
    return found


def configured(
    dag_file: str | os.PathLike[str],
    *,
    presets: Mapping[str, QuiescePreset] | None,
    ssh_conn_ids: Sequence[str],
) -> list[EnvironmentConfig]:
    """The environments of the DAG file's config (:func:`config_path`), checked.

    :param dag_file: the DAG file (``__file__``)
    :param presets: the presets the DAG file offers
    :param ssh_conn_ids: the SSH connections the DAG file allows
    """
    return load_config(
        config_path(dag_file),
        presets=presets,
        ssh_conn_ids=ssh_conn_ids,
        required=bool(os.environ.get(CONFIG_ENV)),
    )


# -- validation ------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValueError(f"{where}: must be a mapping, got {value!r}")
    return value


def _known(raw: Mapping[str, Any], keys: Mapping[str, str], where: str) -> None:
    for key in raw:
        if key not in keys:
            close = difflib.get_close_matches(str(key), list(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidValueError(f"{where}: unknown key {key!r}{hint}; known: {', '.join(keys)}")


def _unique(values: list[str], field: str, where: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise InvalidValueError(f"{where}: {field} {sorted(seen)[0]!r} is named twice")


def _text(value: Any, field: str, pattern: re.Pattern[str] | None = None) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (pattern and not pattern.match(value)):
        raise InvalidValueError(f"{field}: {value!r} is not valid")
    if "{{" in value or "{%" in value:
        raise InvalidValueError(f"{field}: {value!r} holds a template; the config is literal")
    return value


def _integer(value: Any, field: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidValueError(f"{field}: {value!r} is not an integer >= {low}")
    if high is not None and value > high:
        raise InvalidValueError(f"{field}: {value!r} is above {high}")
    return value


def _texts(value: Any, field: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidValueError(f"{field}: {value!r} is not a list")
    return tuple(_text(v, field, pattern) for v in value)


def _paths(value: Any, field: str) -> tuple[str, ...]:
    paths = _texts(value, field)
    if not paths:
        raise InvalidValueError(f"{field}: {value!r} is empty")
    for path in paths:
        if not path.startswith("/") or path.rstrip("/") == "":
            raise InvalidValueError(f"{field}: {path!r} is not an absolute path other than '/'")
    return paths


def _schedule(value: Any, field: str) -> str:
    from airflow.sdk import CronTriggerTimetable

    text = _text(value, field)
    try:
        CronTriggerTimetable(text, timezone="UTC").validate()
    except Exception as exc:
        raise InvalidValueError(f"{field}: {text!r} is not a cron expression: {exc}") from exc
    return text


def _environment(
    name: str,
    raw: Any,
    where: str,
    presets: Mapping[str, QuiescePreset] | None,
    ssh_conn_ids: tuple[str, ...],
) -> EnvironmentConfig:
    _text(name, f"{where} (its name)", _NAME)
    raw = _mapping(raw, where)
    _known(raw, _BACKUP_KEYS, where)
    if "environment_id" not in raw:
        raise InvalidValueError(f"{where}: environment_id is required")

    def at(key: str) -> str:
        return f"{where}.{key}"

    mounts_raw = raw.get("mounts", ["/srv/data"])
    if isinstance(mounts_raw, dict):
        mounts: Any = {
            _text(vm, at("mounts"), _VM): list(_paths(paths, at(f"mounts.{vm}")))
            for vm, paths in mounts_raw.items()
        }
    else:
        mounts = list(_paths(mounts_raw, at("mounts")))
    profile = _text(raw.get("profile", "fsfreeze"), at("profile"))
    if presets is not None and profile not in presets:
        raise InvalidValueError(
            f"{at('profile')}: {profile!r} is not one of the DAG file's presets "
            f"({', '.join(presets)})"
        )
    ssh_conn_id = _text(raw.get("ssh_conn_id", ssh_conn_ids[0]), at("ssh_conn_id"))
    if ssh_conn_id not in ssh_conn_ids:
        raise InvalidValueError(
            f"{at('ssh_conn_id')}: {ssh_conn_id!r} is not one of the DAG file's SSH "
            f"connections ({', '.join(ssh_conn_ids)})"
        )
    vm_names = raw.get("vm_names")
    dr_regions = _texts(raw.get("dr_regions", []), at("dr_regions"))
    notify = _notify(raw["notify"], at("notify")) if raw.get("notify") is not None else None
    backup = EnvironmentConfig(
        name=name,
        environment_id=_text(raw["environment_id"], at("environment_id"), _ID),
        dag_id=_text(raw.get("dag_id", f"skytap_backup_{name}"), at("dag_id"), _NAME),
        schedule=_schedule(raw.get("schedule", "0 2 * * *"), at("schedule")),
        dr_regions=dr_regions,
        keep=_integer(raw.get("keep", 7), at("keep"), 1),
        vm_names=_texts(vm_names, at("vm_names"), _VM) if vm_names else None,
        mounts=mounts,
        profile=profile,
        ssh_conn_id=ssh_conn_id,
        max_freeze_seconds=_integer(
            raw.get("max_freeze_seconds", 600), at("max_freeze_seconds"), 10, 7200
        ),
        deadline_minutes=_integer(raw.get("deadline_minutes", 360), at("deadline_minutes"), 1),
        notify=notify,
        drill=None,
    )
    if raw.get("drill") is None:
        return backup
    drill = _drill(name, raw["drill"], at("drill"), backup)
    return EnvironmentConfig(**{**backup.__dict__, "drill": drill})


def _notify(raw: Any, where: str) -> Notify:
    raw = _mapping(raw, where)
    _known(raw, _NOTIFY_KEYS, where)
    to = _texts(raw.get("to"), f"{where}.to", _EMAIL)
    if not to:
        raise InvalidValueError(f"{where}.to: [] names nobody")
    return Notify(
        to=to,
        from_email=_text(raw.get("from_email", Notify.from_email), f"{where}.from_email", _EMAIL),
        smtp_conn_id=_text(raw.get("smtp_conn_id", Notify.smtp_conn_id), f"{where}.smtp_conn_id"),
    )


def _drill(name: str, raw: Any, where: str, backup: EnvironmentConfig) -> DrillConfig:
    raw = _mapping(raw, where)
    _known(raw, _DRILL_KEYS, where)
    region = raw.get("region", backup.dr_regions[0] if backup.dr_regions else None)
    if region is None:
        raise InvalidValueError(f"{where}.region: required when the backup has no dr_regions")
    mounts = backup.mounts if isinstance(backup.mounts, list) else ["/srv/data"]
    rpo = raw.get("rpo_hours", 30)
    if not isinstance(rpo, (int, float)) or isinstance(rpo, bool) or rpo <= 0:
        raise InvalidValueError(f"{where}.rpo_hours: {rpo!r} is not a number above 0")
    publish = raw.get("allow_publish_ssh", False)
    if not isinstance(publish, bool):
        raise InvalidValueError(f"{where}.allow_publish_ssh: {publish!r} is not true or false")
    app_check = raw.get("app_check") or ""
    return DrillConfig(
        dag_id=_text(raw.get("dag_id", f"skytap_restore_drill_{name}"), f"{where}.dag_id", _NAME),
        schedule=_schedule(raw.get("schedule", "0 4 * * 0"), f"{where}.schedule"),
        region=_text(region, f"{where}.region"),
        rpo_hours=float(rpo),
        mounts=_paths(raw.get("mounts", mounts), f"{where}.mounts"),
        app_check=_text(app_check, f"{where}.app_check") if app_check else "",
        allow_publish_ssh=publish,
    )


# -- notifications and deadlines -----------------------------------------------------------


def failure_notifier(env: EnvironmentConfig, what: str) -> Any:
    """An SMTP notifier for a failed task of ``what`` (None when the config mails nobody).

    Each task's ``on_failure_callback`` (after its last try): it runs in the task's own
    process, where Airflow renders it. A DAG-level ``on_failure_callback`` would mail once per
    run, but ``airflow dags test`` on 3.3.2 cannot render a notifier there
    (``'SerializedDAG' object has no attribute 'get_template_env'``). The mail names the DAG,
    the run, the task and its error (which never holds a secret: the house rule of every
    error this package raises), and nothing else of the run: no conf, no connection.

    :param env: the environment's config
    :param what: "backup" or "restore drill"
    """
    if env.notify is None:
        return None
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=list(env.notify.to),
        from_email=env.notify.from_email,
        smtp_conn_id=env.notify.smtp_conn_id,
        subject=f"[skytap] {what} of environment {env.environment_id} failed: "
        "{{ dag.dag_id }} {{ run_id }} task {{ ti.task_id }}",
        html_content=f"<p>The {what} of Skytap environment {env.environment_id} "
        "(DAG {{ dag.dag_id }}) failed at task {{ ti.task_id }}.</p>"
        "<p>Run: {{ run_id }}<br>Error: {{ exception }}</p>"
        "<p>Its log: {{ ti.log_url }}</p>",
    )


async def backup_late(context: Any = None, **kwargs: Any) -> None:
    """The backup's deadline callback (on the triggerer) when the config mails nobody: a run
    not finished ``deadline_minutes`` after its schedule. Logs an error naming the run.

    :param kwargs: ``environment_id``, ``dag_id`` and ``deadline_minutes`` as the DAG set them
    """
    run = context.get("dag_run") if isinstance(context, Mapping) else None
    run_id = run.get("run_id") if isinstance(run, Mapping) else getattr(run, "run_id", None)
    log.error(
        "Backup late: %s of environment %s (run %s) has not finished %s min after its schedule",
        kwargs.get("dag_id"),
        kwargs.get("environment_id"),
        run_id,
        kwargs.get("deadline_minutes"),
    )


def backup_deadline(env: EnvironmentConfig, dag_id: str) -> Any:
    """The backup's deadline alert: ``deadline_minutes`` after the run's logical date (its
    schedule); a mail through the config's notifier, else an error in the triggerer's log.

    :param env: the environment's config
    :param dag_id: the DAG's id
    """
    from airflow.sdk import (  # type: ignore[attr-defined]
        AsyncCallback,
        DeadlineAlert,
        DeadlineReference,
    )

    if env.notify is not None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        callback = AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": list(env.notify.to),
                "from_email": env.notify.from_email,
                "smtp_conn_id": env.notify.smtp_conn_id,
                "subject": f"[skytap] backup of environment {env.environment_id} is late: "
                f"{dag_id} not done {env.deadline_minutes} min after its schedule",
                "html_content": f"<p>{dag_id} (environment {env.environment_id}) has not "
                f"finished {env.deadline_minutes} min after its scheduled time.</p>",
            },
        )
    else:
        callback = AsyncCallback(
            backup_late,
            kwargs={
                "dag_id": dag_id,
                "environment_id": env.environment_id,
                "deadline_minutes": env.deadline_minutes,
            },
        )
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=timedelta(minutes=env.deadline_minutes),
        callback=callback,
    )


# -- the DAGs --------------------------------------------------------------------------------

_DOCS = {
    "dr_regions": "Checks the run's DR regions (Skytap's names, each once, not the "
    "environment's own region) and refuses a conf key that is no param, before anything is "
    "frozen or copied.",
    "copy_to_dr": "Copies the template to one DR region (one mapped task per region). Region "
    "copies take hours on Skytap: the wait is deferred, on the triggerer, with no worker slot; "
    "its log shows the copy's state and the time spent.",
    "prune": "Keeps the newest `keep` backups per region made by this DAG for this environment "
    "(only ones tagged consistent count; the newest verified one is never deleted). It touches "
    "nothing else.",
    "backups_made": "Lists the backups this run made (the template and each DR copy) with the "
    "thaw's verdict.",
    "announce": "One `skytap_backup` asset event per backup: the restore drill's cue.",
}


def backup_dag(
    env: EnvironmentConfig,
    *,
    presets: Mapping[str, QuiescePreset],
    ssh_conn_ids: Sequence[str],
    doc_md: str | None = None,
) -> Any:
    """The backup DAG of one environment: dr_regions -> freeze/copy/wait/thaw -> copy_to_dr ->
    prune, announce. The trigger form holds only the DR regions, keep, the longest freeze and
    the DR poll: the environment, VMs, mounts, preset and SSH connection are the config's.

    :param env: the environment's config
    :param presets: the DAG file's presets
    :param ssh_conn_ids: the DAG file's SSH connections
    :param doc_md: the DAG's docs (the DAG file's docstring)
    """
    from airflow.sdk import DAG, Param, TriggerRule, task

    from airflow_provider_skytap import checks
    from airflow_provider_skytap.backups import consistency
    from airflow_provider_skytap.frozen_copy import CopySpec, QuiesceChoice, frozen_copy
    from airflow_provider_skytap.hooks.skytap import SkytapHook
    from airflow_provider_skytap.operators.clone import CopyTemplateToRegionOperator
    from airflow_provider_skytap.operators.retention import PruneBackupsOperator
    from airflow_provider_skytap.verification import backup_asset

    environment_id = env.environment_id
    notifier = failure_notifier(env, "backup")
    with DAG(
        dag_id=env.dag_id,
        description=f"Backup of Skytap environment {environment_id}: freeze, live-clone to a "
        "template, thaw, copy to DR regions, keep the last N",
        schedule=env.schedule,
        start_date=START_DATE,
        # After an outage the scheduler makes only the latest night's run; `airflow backfill
        # create` makes one backup per missed date (each named after its date).
        catchup=False,
        # One run at a time, so two freezes of one environment never overlap (the config
        # refuses one environment named twice; a second freeze is refused on the VM as well).
        max_active_runs=1,
        render_template_as_native_obj=True,
        default_args={
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "on_failure_callback": notifier,  # None: no mail
        },
        deadline=backup_deadline(env, env.dag_id) if deadlines_on() else None,
        tags=["skytap", "backup", f"environment:{environment_id}"],
        doc_md=doc_md,
        params={
            "dr_regions": Param(
                list(env.dr_regions),
                type="array",
                items={"type": "string"},
                title="DR regions",
                description="Skytap regions to copy the template to, one per line; empty: none.",
            ),
            "keep": Param(
                env.keep,
                type="integer",
                minimum=1,
                title="Backups to keep",
                description="How many backups of this environment to keep in each region.",
            ),
            "max_freeze_seconds": Param(
                env.max_freeze_seconds,
                type="integer",
                minimum=10,
                maximum=7200,
                title="Longest freeze (seconds)",
                description="Each VM's guardian thaws by itself after this long, whatever "
                "happens to Airflow; the copy is then reported as not application-consistent. "
                "Size it to the copy's time plus a margin.",
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
            copy=CopySpec(environment_id=environment_id, target="template"),
            quiesce=QuiesceChoice(
                environment_id=environment_id,
                mounts=env.mounts,
                max_freeze_seconds="{{ params.max_freeze_seconds }}",
                preset=env.profile,
                ssh_conn_id=env.ssh_conn_id,
                vm_names=list(env.vm_names) if env.vm_names else None,
                presets=presets,
                ssh_conn_ids=tuple(ssh_conn_ids),
            ),
        )

        # the hook retries what is worth retrying; a bad region stays bad
        @task(retries=0, doc_md=_DOCS["dr_regions"])
        def dr_regions(params: dict[str, Any], dag: Any = None, dag_run: Any = None) -> list[str]:
            """The DR regions from the trigger form, checked before anything is frozen."""
            checks.conf_keys(getattr(dag_run, "conf", None), getattr(dag, "params", params))
            hook = SkytapHook()
            source = hook.get_environment(environment_id)
            return checks.dr_regions(
                params["dr_regions"],
                source_region=source.get("region"),
                known=hook.settings.regions,
            )

        regions: Any = dr_regions()  # type: ignore[call-arg]
        copied: Any = chain.copy.output
        regions >> chain.freeze
        copy_to_dr = CopyTemplateToRegionOperator.partial(
            task_id="copy_to_dr",
            template_id=copied["id"],
            deferrable=True,
            poll_interval="{{ params.dr_poll_seconds }}",
            max_poll_interval="{{ params.dr_poll_seconds * 10 }}",
            doc_md=_DOCS["copy_to_dr"],
        ).expand(target_region=regions)
        prune = PruneBackupsOperator(
            task_id="prune",
            environment_id=environment_id,
            keep="{{ params.keep }}",
            confirmed_only=True,  # a torn or unfinished template is no backup
            # Runs when there are no DR regions (the mapped copy is skipped), not after a failure.
            trigger_rule=TriggerRule.NONE_FAILED,
            doc_md=_DOCS["prune"],
        )

        # no DR regions: copy_to_dr is skipped
        @task(trigger_rule=TriggerRule.NONE_FAILED, doc_md=_DOCS["backups_made"])
        def backups_made(template_id: str, dr_copies: Any) -> list[dict[str, Any]]:
            """The template and its DR copies, each with the template's verdict."""
            template = SkytapHook().get_template(template_id)
            made = [{"template_id": str(template_id), "region": template.get("region")}]
            made += [
                {"template_id": str(c["id"]), "region": c.get("region")} for c in dr_copies or []
            ]
            verdict = consistency(template)
            return [{"environment_id": environment_id, **m, "verdict": verdict} for m in made]

        @task(outlets=[backup_asset()], doc_md=_DOCS["announce"])
        def announce(backup: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
            """One ``skytap_backup`` asset event for one backup: the restore drill's cue."""
            outlet_events[backup_asset()].extra = backup
            return backup

        made: Any = backups_made(copied["id"], copy_to_dr.output)
        [chain.wait, chain.thaw] >> copy_to_dr >> [prune, made]
        announce.expand(backup=made)
    return dag


def backup_dags(
    dag_file: str | os.PathLike[str],
    *,
    presets: Mapping[str, QuiescePreset],
    ssh_conn_ids: Sequence[str],
    doc_md: str | None = None,
) -> dict[str, Any]:
    """dag_id -> backup DAG, one per environment of the DAG file's config ({} without one).

    :param dag_file: the DAG file (``__file__``)
    :param presets: the presets the config may name
    :param ssh_conn_ids: the SSH connections the config may name
    :param doc_md: the DAGs' docs
    """
    environments = configured(dag_file, presets=presets, ssh_conn_ids=ssh_conn_ids)
    built = [
        backup_dag(env, presets=presets, ssh_conn_ids=ssh_conn_ids, doc_md=doc_md)
        for env in environments
    ]
    return {dag.dag_id: dag for dag in built}


def drill_dag(env: EnvironmentConfig, *, doc_md: str | None = None) -> Any:
    """The restore drill of one environment (its ``drill`` section): pick -> restore -> start
    -> reach -> check -> vouch -> delete (teardown) -> report. Scheduled weekly and on each
    ``skytap_backup`` asset event; a deadline alert fires when no backup was verified within
    ``rpo_hours`` of a run being queued. The form holds only the region and the timeouts.

    :param env: the environment's config (with ``drill``)
    :param doc_md: the DAG's docs
    """
    from airflow.sdk import (  # type: ignore[attr-defined]
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

    drill = env.drill
    if drill is None:
        raise ValueError(f"environment {env.name!r} has no drill section")
    environment_id, backup_dag_id = env.environment_id, env.dag_id
    # Fires when a run has not verified a backup rpo_hours after it was queued (a run that
    # succeeds cancels it).
    rpo_alert = DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=drill.rpo_hours),
        callback=AsyncCallback(
            rpo_missed, kwargs={"rpo_hours": drill.rpo_hours, "environment_id": environment_id}
        ),
    )
    with DAG(
        dag_id=drill.dag_id,
        description=f"Restore drill of Skytap environment {environment_id}: restore the newest "
        "consistent backup in isolation, check it, time it, delete it",
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(drill.schedule, timezone="UTC"),
            assets=[backup_asset()],
        ),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        default_args={
            "retries": 0,
            "on_failure_callback": failure_notifier(env, "restore drill"),
        },
        deadline=rpo_alert if deadlines_on() else None,
        tags=["skytap", "backup", "restore-drill", f"environment:{environment_id}"],
        doc_md=doc_md,
        params={
            "region": Param(
                drill.region,
                type="string",
                minLength=1,
                title="Region",
                description="Restore the backup copy in this Skytap region (the DR region).",
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

        @task(
            retries=0,
            doc_md="Picks the newest `application-consistent` backup of the environment "
            "(made by its backup DAG) in the region.",
        )
        def pick(params: dict[str, Any], dag: Any = None, dag_run: Any = None) -> dict[str, Any]:
            """The newest application-consistent backup of the environment in the region."""
            from airflow_provider_skytap.backups import recovery_point, source_tag
            from airflow_provider_skytap.hooks.skytap import SkytapHook
            from airflow_provider_skytap.verification import newest_consistent

            checks.conf_keys(getattr(dag_run, "conf", None), getattr(dag, "params", params))
            hook = SkytapHook()
            tag = source_tag(backup_dag_id, "environment", environment_id)
            found = hook.list_resources("template", region=params["region"], tags=[tag])
            best = newest_consistent(found, params["region"])
            if best is None:
                raise AirflowFailException(
                    f"no application-consistent backup of environment {environment_id} "
                    f"by {backup_dag_id} in region {params['region']!r} "
                    f"({len(found)} backups there)"
                )
            point = recovery_point(best)
            return {
                "template_id": str(best["id"]),
                "name": best.get("name"),
                "region": best.get("region"),
                "recovery_point": point.isoformat() if point else None,
            }

        picked: Any = pick()  # type: ignore[call-arg]
        restore = RestoreEnvironmentOperator(
            task_id="restore",
            template_id=picked["template_id"],
            region="{{ params.region }}",
            timeout="{{ params.restore_timeout_minutes * 60 }}",
            retries=1,
            retry_delay=timedelta(seconds=30),
            doc_md="Makes a new environment from the backup, in its region, isolated "
            "(`outbound_traffic` and `routable` false, no VPN or tunnel: read back from the "
            "environment). The request time starts the recovery time.",
        )
        restored_id = "{{ ti.xcom_pull(task_ids='restore')['id'] }}"
        start = StartEnvironmentOperator(
            task_id="start",
            environment_id=restored_id,
            doc_md="Runs the restored environment; the log shows each VM's runstate and the "
            "time spent.",
        )
        reach = PublishSshOperator(
            task_id="reach",
            environment_id=restored_id,
            allow_publish=drill.allow_publish_ssh,
            doc_md="Each VM's SSH address: published (and unpublished by `delete`) only when "
            "the config allows it, otherwise the interface IPs.",
        )
        check = CheckRestoredVMsOperator(
            task_id="check",
            endpoints="{{ ti.xcom_pull(task_ids='reach')['endpoints'] }}",
            ssh_conn_id=env.ssh_conn_id,
            mounts=list(drill.mounts),
            app_check=drill.app_check,
            requested_at="{{ ti.xcom_pull(task_ids='restore')['requested_at'] }}",
            boot_timeout="{{ params.boot_timeout }}",
            doc_md="Over SSH on each VM: reachable, each mount clean (`e2fsck -n`), the "
            "application's check passing. The recovery time ends here.",
        )

        @task(retries=2, doc_md="Tags the backup `airflow-skytap-verified/<when>/rto-<s>s`.")
        def vouch(picked: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
            """Tag the backup verified, with its recovery time."""
            from airflow_provider_skytap.hooks.skytap import SkytapHook
            from airflow_provider_skytap.verification import verified_tag

            seconds = float(checked["recovery_seconds"])
            when = datetime.fromtimestamp(float(checked["finished_at"]), tz=timezone.utc)
            tag = verified_tag(when, seconds)
            SkytapHook().add_tags("template", picked["template_id"], [tag])
            return {"template_id": picked["template_id"], "tag": tag, "recovery_seconds": seconds}

        vouched: Any = vouch(picked, check.output)  # type: ignore[arg-type]
        delete = DeleteRestoredEnvironmentOperator(
            task_id="delete",
            environment_id="{{ ti.xcom_pull(task_ids='restore', key='environment_id') }}",
            published="{{ (ti.xcom_pull(task_ids='reach') or {}).get('published', []) }}",
            doc_md="Teardown: deletes the drill environment on every path, failed or not "
            "(idempotent).",
        ).as_teardown(setups=restore)

        @task(
            trigger_rule=TriggerRule.ALL_DONE,
            retries=0,
            doc_md="The drill's outcome (recovery time, each VM's verdict, what was deleted); "
            "fails the run unless the backup was verified.",
        )
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
                problems: Any = outcome["problems"]
                reasons = [str(p) for p in problems] or ["an earlier task failed: see its log"]
                raise AirflowFailException(
                    f"backup {outcome['template_id']} was not verified: " + " | ".join(reasons)
                )
            return outcome

        picked >> restore >> start >> reach >> check
        vouched >> delete >> report()
    return dag


def drill_dags(
    dag_file: str | os.PathLike[str],
    *,
    ssh_conn_ids: Sequence[str],
    doc_md: str | None = None,
) -> dict[str, Any]:
    """dag_id -> restore drill, one per environment of the config with a ``drill`` section.

    :param dag_file: the DAG file (``__file__``)
    :param ssh_conn_ids: the SSH connections the config may name
    :param doc_md: the DAGs' docs
    """
    environments = configured(dag_file, presets=None, ssh_conn_ids=ssh_conn_ids)
    built = [drill_dag(env, doc_md=doc_md) for env in environments if env.drill]
    return {dag.dag_id: dag for dag in built}
