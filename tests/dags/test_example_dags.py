"""The example DAGs in dags/: they parse without touching the network, their trigger forms
are complete, and the wiring keeps the promises the DAGs' docs make. The backup DAG and the
drill come from the demo's config (demo/skytap_backups.yaml, as make demo and the system
tests use it); tests/dags/test_backup_config.py covers the config itself."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import ParamValidationError

DAGS = Path(__file__).parents[2] / "dags"
DEMO_CONFIG = Path(__file__).parents[2] / "demo" / "skytap_backups.yaml"
BACKUP, REPORTING = "skytap_live_clone_backup", "skytap_live_copy_for_reporting"
DRILL = "skytap_restore_drill"


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    # No Skytap API call, no SSH connection at parse time: any connect() fails the parse.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a DAG file opened a connection while parsing: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKYTAP_BACKUPS_CONFIG", str(DEMO_CONFIG))
        mp.delenv("SKYTAP_DEADLINE_ALERTS", raising=False)
        mp.delenv("SKYTAP_DRILL_RPO_ALERT", raising=False)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        bag = DagBag(str(DAGS))  # no examples: tests/conftest.py
    assert bag.import_errors == {}
    return bag.dags


def test_the_example_dags_parse(dags: dict[str, Any]) -> None:
    assert sorted(dags) == [BACKUP, REPORTING, DRILL]


@pytest.mark.parametrize("dag_id", [BACKUP, REPORTING])
def test_every_param_has_a_title_a_description_and_a_type_and_the_defaults_validate(
    dags: dict[str, Any], dag_id: str
) -> None:
    params = dags[dag_id].params
    for name in params:
        param = params.get_param(name)
        assert param.description, f"{dag_id} param {name} has no description"
        for key in ("title", "type"):
            assert param.schema.get(key), f"{dag_id} param {name} has no {key}"
    params.validate()  # a manual trigger with the defaults is accepted


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"max_freeze_seconds": 0}, "max_freeze_seconds"),
        ({"max_freeze_seconds": 7201}, "max_freeze_seconds"),
        ({"keep": 0}, "keep"),
        ({"dr_regions": "EMEA"}, "dr_regions"),
    ],
)
def test_the_trigger_form_refuses_bad_values(
    dags: dict[str, Any], conf: dict[str, Any], field: str
) -> None:
    params = copy.deepcopy(dags[BACKUP].params)
    ((key, value),) = conf.items()
    with pytest.raises(ParamValidationError, match=field):
        params[key] = value


def test_the_backup_form_holds_only_what_a_manual_run_may_change(dags: dict[str, Any]) -> None:
    """The environment, VMs, mounts, preset and SSH connection are the config's: a manual run
    changes the DR regions, keep and the longest freeze (and the DR poll, under Advanced),
    and its defaults are the config's values."""
    params = dags[BACKUP].params
    assert sorted(params) == ["dr_poll_seconds", "dr_regions", "keep", "max_freeze_seconds"]
    assert params.dump() | {"dr_poll_seconds": 0} == {
        "dr_regions": ["EMEA"],
        "keep": 7,
        "max_freeze_seconds": 600,
        "dr_poll_seconds": 0,
    }
    freeze = dags[BACKUP].get_task("backup.freeze")
    assert freeze.quiesce.environment_id == "1001" and freeze.copy.environment_id == "1001"
    assert (freeze.quiesce.preset, freeze.quiesce.ssh_conn_id) == ("fsfreeze", "skytap_vm_ssh")
    assert freeze.quiesce.mounts == ["/srv/data"] and freeze.quiesce.vm_names is None
    assert dags[BACKUP].get_task("prune").environment_id == "1001"
    assert sorted(dags[DRILL].params) == ["boot_timeout", "region", "restore_timeout_minutes"]


@pytest.mark.parametrize(
    "conf",
    [
        {"environment_id": "1002"},
        {"profile": "custom"},
        {"ssh_conn_id": "prod_db_root"},
        {"mounts": ["/"]},
        {"vm_names": ["db-1"]},
        {"pre_freeze_command": "touch /tmp/x"},
    ],
)
def test_a_run_conf_cannot_pick_another_environment_or_what_runs_on_the_vms(
    dags: dict[str, Any], conf: dict[str, Any]
) -> None:
    """A Trigger-only user's conf: a key that is no param fails the run's first task
    (dr_regions, before any freeze), naming the key and the value."""
    from airflow_provider_skytap import checks

    ((key, value),) = conf.items()
    with pytest.raises(ValueError, match=f"conf: '{key}' is not a param") as err:
        checks.conf_keys(conf, dags[BACKUP].params)
    assert repr(value) in str(err.value)
    assert dags[BACKUP].get_task("backup.freeze").upstream_task_ids == {"dr_regions"}


def test_every_task_of_the_example_dags_has_docs(dags: dict[str, Any]) -> None:
    for dag_id, dag in dags.items():
        for task in dag.tasks:
            assert task.doc_md, f"{dag_id}.{task.task_id} has no doc_md"


def test_the_backup_declares_its_deadline_and_the_drill_its_rpo_alert(
    dags: dict[str, Any],
) -> None:
    from datetime import timedelta

    [alert] = dags[BACKUP].deadline
    assert alert.interval == timedelta(minutes=360)
    from airflow.sdk import DeadlineReference

    # from the run's logical date, i.e. its scheduled time (not when it was queued)
    assert isinstance(alert.reference, type(DeadlineReference.DAGRUN_LOGICAL_DATE))
    assert alert.callback.path == "airflow_provider_skytap.factory.backup_late"
    [rpo] = dags[DRILL].deadline
    assert rpo.interval == timedelta(hours=30)
    assert rpo.callback.path == "airflow_provider_skytap.verification.rpo_missed"


GROUPS = {BACKUP: "backup", REPORTING: "reporting_copy"}


@pytest.mark.parametrize("dag_id", [BACKUP, REPORTING])
def test_the_thaw_runs_whatever_happened_and_a_failed_copy_still_fails_the_run(
    dags: dict[str, Any], dag_id: str
) -> None:
    dag = dags[dag_id]
    group = GROUPS[dag_id]
    thaw = dag.get_task(f"{group}.thaw")
    assert thaw.trigger_rule == "all_done"
    assert thaw.upstream_task_ids == {f"{group}.wait"}
    # The run's state comes from its leaves: none of them is the thaw, and every one of
    # them is downstream of the wait, so a failed copy leaves them upstream_failed.
    leaves = [t for t in dag.tasks if not t.downstream_task_ids]
    assert thaw not in leaves
    wait = dag.get_task(f"{group}.wait")
    for leaf in leaves:
        assert wait.task_id in leaf.get_flat_relative_ids(upstream=True), leaf.task_id


def test_the_backup_runs_one_at_a_time_and_backfills_by_date(dags: dict[str, Any]) -> None:
    dag = dags[BACKUP]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.timetable.expression == "0 2 * * *"
    assert dag.get_task("copy_to_dr").partial_kwargs["deferrable"] is True
    assert dag.get_task("backup.wait").mode == "poke"  # no deferral lag


@pytest.mark.parametrize("dag_id", [BACKUP, REPORTING])
def test_the_chain_is_four_tasks_that_run_nothing_of_each_other(
    dags: dict[str, Any], dag_id: str
) -> None:
    dag = dags[dag_id]
    group = GROUPS[dag_id]
    freeze, copy_, wait, thaw = (
        dag.get_task(f"{group}.{t}") for t in ("freeze", "copy", "wait", "thaw")
    )
    assert freeze.upstream_task_ids <= {"dr_regions"}
    assert copy_.upstream_task_ids == {freeze.task_id}
    assert wait.upstream_task_ids == {copy_.task_id}
    assert thaw.upstream_task_ids == {wait.task_id}
    # One copy spec and one quiesce spec, handed to the tasks that need them.
    assert repr(freeze.copy) == repr(copy_.copy)
    assert repr(freeze.quiesce) == repr(thaw.quiesce)
    assert copy_.freeze_task_id == freeze.task_id and thaw.copy_task_id == copy_.task_id


def test_the_backup_form_needs_nothing_filled(dags: dict[str, Any]) -> None:
    """No command, no connection, no environment in the form: its defaults validate."""
    params = copy.deepcopy(dags[BACKUP].params)
    params.validate()


def test_the_reporting_form_offers_choices_and_needs_only_the_environment(
    dags: dict[str, Any],
) -> None:
    """The manual reporting copy keeps its environment in the form (it has no schedule):
    no command and no free-text connection; "VMs to freeze" may stay empty."""
    params = copy.deepcopy(dags[REPORTING].params)
    dumped = params.dump()
    assert "pre_freeze_command" not in dumped and "post_thaw_command" not in dumped
    assert params.get_param("vm_names").value is None
    assert "null" in params.get_param("vm_names").schema["type"]
    for name in ("profile", "ssh_conn_id"):
        assert params.get_param(name).schema["enum"], name  # a choice, not free text
    params["environment_id"] = "1002"
    params.validate()
    assert dags[REPORTING].schedule is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("profile", "custom"), ("ssh_conn_id", "prod_db_root"), ("profile", "fsfreeze; rm -rf /")],
)
def test_the_reporting_form_refuses_a_profile_or_connection_the_dag_does_not_list(
    dags: dict[str, Any], field: str, value: str
) -> None:
    params = copy.deepcopy(dags[REPORTING].params)
    with pytest.raises(ParamValidationError, match=field):
        params[field] = value


def test_the_backup_announces_each_backup_as_an_asset_event(dags: dict[str, Any]) -> None:
    from airflow_provider_skytap.verification import backup_asset

    announce = dags[BACKUP].get_task("announce")
    assert backup_asset() in announce.outlets
