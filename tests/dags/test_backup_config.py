"""The backup config (airflow_provider_skytap/factory.py): one backup DAG and one drill per
environment it names, none without it, and a bad field refused by name and value."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skytap.exceptions import InvalidValueError
from airflow_provider_skytap.factory import load_config
from airflow_provider_skytap.frozen_copy import DEFAULT_PRESETS

DAGS = Path(__file__).parents[2] / "dags"
EXAMPLE = DAGS / "skytap_backups.example.yaml"
SSH = ("skytap_vm_ssh", "skytap_db_ssh")


def parse(monkeypatch: pytest.MonkeyPatch, config: Path | None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    if config is None:
        monkeypatch.delenv("SKYTAP_BACKUPS_CONFIG", raising=False)
    else:
        monkeypatch.setenv("SKYTAP_BACKUPS_CONFIG", str(config))
    monkeypatch.delenv("SKYTAP_DEADLINE_ALERTS", raising=False)
    return DagBag(str(DAGS))


def test_without_a_config_no_dag_backs_up_or_drills_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a user who copies dags/ gets: the manual reporting DAG only. The example config
    beside the DAGs is not loaded (its name is not skytap_backups.yaml)."""
    assert not (DAGS / "skytap_backups.yaml").exists()
    bag = parse(monkeypatch, None)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["skytap_live_copy_for_reporting"]
    assert bag.dags["skytap_live_copy_for_reporting"].schedule is None


def test_the_example_config_makes_one_dag_per_environment_each_with_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bag = parse(monkeypatch, EXAMPLE)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == [
        "skytap_backup_erp",
        "skytap_backup_web",
        "skytap_live_copy_for_reporting",
        "skytap_restore_drill_erp",
    ]
    erp, web = bag.dags["skytap_backup_erp"], bag.dags["skytap_backup_web"]
    assert (erp.timetable.expression, web.timetable.expression) == ("30 1 * * *", "0 2 * * *")
    assert erp.params.dump()["dr_regions"] == ["EMEA", "APAC-2"]
    assert (erp.params.dump()["keep"], web.params.dump()["keep"]) == (14, 7)
    freeze = erp.get_task("backup.freeze")
    assert freeze.quiesce.environment_id == "1234567"
    assert freeze.quiesce.preset == "postgres" and freeze.quiesce.vm_names == ["db-1", "app-1"]
    assert freeze.quiesce.mounts == {"db-1": ["/var/lib/postgresql"], "*": ["/srv/data"]}
    assert web.get_task("backup.freeze").quiesce.environment_id == "7654321"
    # The erp environment mails ops@ on a failed run and on a missed deadline.
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    for task in erp.tasks:  # each task mails after its last try
        notifier = task.on_failure_callback
        notifier = notifier[0] if isinstance(notifier, list) else notifier
        assert isinstance(notifier, SmtpNotifier), task.task_id
        assert list(notifier.to) == ["ops@example.com"], task.task_id
    [alert] = erp.deadline
    assert alert.callback.path.endswith("SmtpNotifier")
    assert alert.interval.total_seconds() == 240 * 60
    assert all(not t.on_failure_callback for t in web.tasks)
    drill = bag.dags["skytap_restore_drill_erp"]
    check = drill.get_task("check")
    assert check.app_check.startswith("pg_isready") and check.mounts == ["/var/lib/postgresql"]
    assert drill.params.dump()["region"] == "EMEA"
    assert drill.get_task("reach").allow_publish is False


def test_the_deadline_switch_leaves_every_alert_out(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = parse(monkeypatch, EXAMPLE)
    assert bag.dags["skytap_backup_erp"].deadline
    monkeypatch.setenv("SKYTAP_DEADLINE_ALERTS", "off")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    assert not bag.dags["skytap_backup_erp"].deadline
    assert not bag.dags["skytap_restore_drill_erp"].deadline


def test_a_config_named_but_missing_is_an_import_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bag = parse(monkeypatch, tmp_path / "nowhere.yaml")
    errors = " ".join(bag.import_errors.values())
    assert "SKYTAP_BACKUPS_CONFIG" in errors and "nowhere.yaml" in errors
    assert not any(d.startswith("skytap_backup") for d in bag.dags)


def config(tmp_path: Path, environment: str) -> Path:
    path = tmp_path / "skytap_backups.yaml"
    body = textwrap.indent(textwrap.dedent(environment).strip(), "    ")
    path.write_text(f"environments:\n  erp:\n{body}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            'environment_id: "1001"\nkep: 3',
            "environments.erp: unknown key 'kep' (did you mean 'keep'?)",
        ),
        ('environment_id: "10 01"', "environments.erp.environment_id: '10 01' is not valid"),
        ("keep: 3", "environments.erp: environment_id is required"),
        ('environment_id: "1001"\nkeep: 0', "environments.erp.keep: 0 is not an integer >= 1"),
        ('environment_id: "1001"\nprofile: vss', "environments.erp.profile: 'vss' is not one of"),
        (
            'environment_id: "1001"\nssh_conn_id: prod_root',
            "environments.erp.ssh_conn_id: 'prod_root' is not one of the DAG file's SSH",
        ),
        ('environment_id: "1001"\nmounts: ["/"]', "environments.erp.mounts: '/' is not an"),
        ('environment_id: "1001"\nmounts: [data]', "environments.erp.mounts: 'data' is not an"),
        (
            'environment_id: "1001"\nschedule: "every night"',
            "environments.erp.schedule: 'every night' is not a cron expression",
        ),
        (
            'environment_id: "1001"\nmounts: ["/srv/{{ var.value.x }}"]',
            "holds a template",
        ),
        (
            'environment_id: "1001"\nmax_freeze_seconds: 9000',
            "environments.erp.max_freeze_seconds: 9000 is above 7200",
        ),
        (
            'environment_id: "1001"\ndrill: {rpo_hours: 30}',
            "environments.erp.drill.region: required when the backup has no dr_regions",
        ),
        (
            'environment_id: "1001"\ndr_regions: [EMEA]\ndrill: {rpo: 30}',
            "environments.erp.drill: unknown key 'rpo'",
        ),
        (
            'environment_id: "1001"\nnotify: {to: [ops]}',
            "environments.erp.notify.to: 'ops' is not valid",
        ),
    ],
)
def test_a_bad_field_is_refused_naming_the_field_and_the_value(
    tmp_path: Path, environment: str, message: str
) -> None:
    with pytest.raises(InvalidValueError) as err:
        load_config(config(tmp_path, environment), presets=DEFAULT_PRESETS, ssh_conn_ids=SSH)
    assert message in str(err.value)


def test_one_environment_named_twice_is_refused(tmp_path: Path) -> None:
    """Two DAGs freezing one environment would overlap (max_active_runs is per DAG)."""
    path = tmp_path / "skytap_backups.yaml"
    path.write_text(
        'environments:\n  a: {environment_id: "1001"}\n  b: {environment_id: 1001}\n',
        encoding="utf-8",
    )
    with pytest.raises(InvalidValueError, match="environment_id '1001' is named twice"):
        load_config(path, presets=DEFAULT_PRESETS, ssh_conn_ids=SSH)


def test_vm_names_as_skytap_spells_them_are_accepted(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
        environment_id: "1001"
        vm_names: ["DB Server 1"]
        mounts: {"DB Server 1": [/var/lib/pgsql], "*": [/srv/data]}
        """,
    )
    [erp] = load_config(path, presets=DEFAULT_PRESETS, ssh_conn_ids=SSH)
    assert erp.vm_names == ("DB Server 1",)
    assert erp.mounts == {"DB Server 1": ["/var/lib/pgsql"], "*": ["/srv/data"]}
    assert (erp.dag_id, erp.drill) == ("skytap_backup_erp", None)  # no drill unless asked
