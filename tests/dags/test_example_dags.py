"""The example DAGs in dags/: they parse without touching the network, their trigger forms
are complete, and the wiring keeps the promises the DAGs' docs make."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import ParamValidationError

DAGS = Path(__file__).parents[2] / "dags"
BACKUP, REPORTING = "skytap_live_clone_backup", "skytap_live_copy_for_reporting"


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    # No Skytap API call, no SSH connection at parse time: any connect() fails the parse.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a DAG file opened a connection while parsing: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        bag = DagBag(str(DAGS))  # no examples: tests/conftest.py
    assert bag.import_errors == {}
    return bag.dags


def test_both_example_dags_parse(dags: dict[str, Any]) -> None:
    assert sorted(dags) == [BACKUP, REPORTING, "skytap_restore_drill"]


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
        ({"environment_id": "10 01"}, "environment_id"),
        ({"mounts": []}, "mounts"),
        ({"mounts": ["data"]}, "mounts"),
        ({"max_freeze_seconds": 0}, "max_freeze_seconds"),
        ({"keep": 0}, "keep"),
        ({"profile": "vss"}, "profile"),
    ],
)
def test_the_trigger_form_refuses_bad_values(
    dags: dict[str, Any], conf: dict[str, Any], field: str
) -> None:
    params = copy.deepcopy(dags[BACKUP].params)
    ((key, value),) = conf.items()
    with pytest.raises(ParamValidationError, match=field):
        params[key] = value


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


@pytest.mark.parametrize("dag_id", [BACKUP, REPORTING])
def test_the_trigger_form_needs_only_the_environment(dags: dict[str, Any], dag_id: str) -> None:
    """No command and no free-text connection in the form; "VMs to freeze" may stay empty."""
    params = copy.deepcopy(dags[dag_id].params)
    dumped = params.dump()
    assert "pre_freeze_command" not in dumped and "post_thaw_command" not in dumped
    assert params.get_param("vm_names").value is None
    assert "null" in params.get_param("vm_names").schema["type"]
    for name in ("profile", "ssh_conn_id"):
        assert params.get_param(name).schema["enum"], name  # a choice, not free text
    params["environment_id"] = "1002"
    params.validate()


@pytest.mark.parametrize(
    ("field", "value"),
    [("profile", "custom"), ("ssh_conn_id", "prod_db_root"), ("profile", "fsfreeze; rm -rf /")],
)
@pytest.mark.parametrize("dag_id", [BACKUP, REPORTING])
def test_the_trigger_form_refuses_a_profile_or_connection_the_dag_does_not_list(
    dags: dict[str, Any], dag_id: str, field: str, value: str
) -> None:
    params = copy.deepcopy(dags[dag_id].params)
    with pytest.raises(ParamValidationError, match=field):
        params[field] = value


def test_the_backup_announces_each_backup_as_an_asset_event(dags: dict[str, Any]) -> None:
    from airflow_provider_skytap.verification import backup_asset

    announce = dags[BACKUP].get_task("announce")
    assert backup_asset() in announce.outlets
