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


@pytest.mark.parametrize(("dag_id", "copy"), [(BACKUP, "clone"), (REPORTING, "copy")])
def test_the_thaw_runs_whatever_happened_and_a_failed_copy_still_fails_the_run(
    dags: dict[str, Any], dag_id: str, copy: str
) -> None:
    dag = dags[dag_id]
    thaw = dag.get_task("thaw")
    assert thaw.trigger_rule == "all_done"
    assert thaw.upstream_task_ids == {f"wait_for_{copy if copy == 'copy' else 'clone'}"}
    # The run's state comes from its leaves: none of them is the thaw, and every one of
    # them is downstream of the wait, so a failed copy leaves them upstream_failed.
    leaves = [t for t in dag.tasks if not t.downstream_task_ids]
    assert thaw not in leaves
    wait = dag.get_task(f"wait_for_{copy if copy == 'copy' else 'clone'}")
    for leaf in leaves:
        assert wait.task_id in leaf.get_flat_relative_ids(upstream=True), leaf.task_id


def test_the_backup_runs_one_at_a_time_and_backfills_by_date(dags: dict[str, Any]) -> None:
    dag = dags[BACKUP]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.timetable.expression == "0 2 * * *"
    assert dag.get_task("copy_to_dr").partial_kwargs["deferrable"] is True
    assert dag.get_task("wait_for_clone").mode == "poke"  # the VMs are frozen: no deferral lag


@pytest.mark.parametrize(("dag_id", "copy"), [(BACKUP, "clone"), (REPORTING, "copy")])
def test_no_task_starts_while_the_vms_are_frozen(
    dags: dict[str, Any], dag_id: str, copy: str
) -> None:
    dag = dags[dag_id]
    freeze, clone, thaw = dag.get_task("freeze"), dag.get_task(copy), dag.get_task("thaw")
    assert freeze.retries == 0  # a freeze is never retried
    assert freeze.copy_task_id == copy  # it requests the copy once every VM is frozen
    assert dag.get_task(freeze.copy_task_id) is clone
    # The copy task waits for its copy itself, in the worker (no deferral while frozen) ...
    assert clone.wait_for_completion is True and clone.deferrable is False
    # ... then runs the thaw task's thaw at once; the thaw task still runs after it.
    assert dag.get_task(clone.thaw_task_id) is thaw and thaw.action == "thaw"
