"""frozen_copy's shape: a task group per chain, spec objects Airflow renders, no fixed ids."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_skytap.consistency import (
    APPLICATION_CONSISTENT,
    CRASH_CONSISTENT,
    INCONSISTENT,
    FreezeWindow,
    copy_verdict,
    marked_token,
    not_ours_reason,
)
from airflow_provider_skytap.copies import CopySpec
from airflow_provider_skytap.exceptions import InvalidValueError, is_final
from airflow_provider_skytap.frozen_copy import (
    QuiesceChoice,
    choice_from_params,
    frozen_copy,
    quiesce_params,
)


def two_chains() -> Any:
    with DAG("two_envs", schedule=None, params=quiesce_params()) as dag:
        erp = frozen_copy(group_id="erp")
        crm = frozen_copy(
            group_id="crm",
            copy=CopySpec(environment_id="1002", target="environment"),
            quiesce=QuiesceChoice(environment_id="1002", mounts=["/data"]),
        )
        erp.thaw >> crm.freeze  # one after the other
    return dag, erp, crm


def test_two_chains_fit_in_one_dag_each_wired_inside_its_group() -> None:
    dag, erp, crm = two_chains()
    assert (erp.group_id, crm.group_id) == ("erp", "crm")
    for group in (erp, crm):
        ids = {t.task_id for t in (group.freeze, group.copy, group.wait, group.thaw)}
        assert ids == {f"{group.group_id}.{n}" for n in ("freeze", "copy", "wait", "thaw")}
        assert group.copy.freeze_task_id == group.freeze.task_id
        assert group.thaw.freeze_task_id == group.freeze.task_id
        assert group.thaw.copy_task_id == group.copy.task_id
        assert group.thaw.trigger_rule == "all_done"
    assert len(dag.task_dict) == 8


def test_the_specs_are_nested_template_fields_airflow_renders() -> None:
    dag, erp, _ = two_chains()
    task = erp.freeze
    assert "copy" in task.template_fields and "quiesce" in task.template_fields
    context: Any = {"params": {**dag.params.dump(), "environment_id": "4242"}, "dag": dag}
    task.render_template_fields(context)  # what the task runner does before execute
    assert task.copy.environment_id == "4242"
    assert task.quiesce.environment_id == "4242"
    assert task.quiesce.preset == "fsfreeze"
    # Each task renders its own copy of the spec: the other tasks' stay templates.
    assert erp.copy.copy.environment_id == "{{ params.environment_id }}"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"preset": "custom"}, "profile: 'custom'"),
        ({"ssh_conn_id": "elsewhere", "ssh_conn_ids": ["vm_ssh"]}, "ssh_conn_id: 'elsewhere'"),
    ],
)
def test_a_choice_outside_the_dags_lists_is_refused_naming_field_and_value(
    change: dict[str, Any], field: str
) -> None:
    choice = QuiesceChoice(environment_id="1001", mounts=["/data"], **change)
    with pytest.raises(InvalidValueError, match=field) as err:
        choice.chosen()
    assert is_final(err.value)


def test_a_templated_connection_needs_a_list_written_in_the_dag() -> None:
    with pytest.raises(ValueError, match="ssh_conn_ids"):
        QuiesceChoice(environment_id="1", mounts=["/d"], ssh_conn_id="{{ params.ssh_conn_id }}")
    assert choice_from_params(ssh_conn_ids=("a", "b")).ssh_conn_ids == ("a", "b")


def test_a_bad_copy_value_is_final_and_named() -> None:
    with pytest.raises(InvalidValueError, match="environment_id") as err:
        CopySpec(environment_id="10 01").checked()
    assert is_final(err.value)
    with pytest.raises(InvalidValueError, match="vm_ids works with target='environment'"):
        CopySpec(environment_id="1001", vm_ids=["1"]).checked()


def test_the_window_mark_names_one_try_of_one_run_of_one_chain() -> None:
    base = "erp-environment-1001-20261124T000000Z"
    a = FreezeWindow("erp", "scheduled__x", 1, "backup")
    assert a.token != FreezeWindow("erp", "scheduled__x", 2, "backup").token
    assert a.token != FreezeWindow("erp", "scheduled__x", 1, "other").token
    assert marked_token(a.mark(base), base) == a.token
    assert marked_token(base, base) is None and marked_token(base + "-wXYZ", base) is None
    assert len(a.mark("x" * 300)) == 255 and marked_token(a.mark("x" * 300), "x" * 300) == a.token
    assert FreezeWindow.from_xcom(a.to_xcom()) == a
    assert FreezeWindow.from_xcom({**a.to_xcom(), "try_number": 3}) is None


def test_only_a_copy_of_this_window_complete_before_the_release_is_application_consistent() -> None:
    app = APPLICATION_CONSISTENT
    assert copy_verdict(app, same_window=True, complete_before_release=True)[0] == app
    assert copy_verdict(app, same_window=True, complete_before_release=False)[0] == INCONSISTENT
    assert copy_verdict(app, same_window=False, complete_before_release=True)[0] == INCONSISTENT
    verdict, note = copy_verdict(
        app, same_window=False, complete_before_release=True, earlier_verdict=app
    )
    assert verdict == CRASH_CONSISTENT and "another freeze window" in note


def test_ours_means_our_source_tag_and_made_by_the_connections_user() -> None:
    tag = "airflow-skytap/erp/environment-1001"
    mine = {"id": "1", "tags": [{"value": tag}], "owner_name": "demo"}
    assert not_ours_reason(mine, tag, "demo") is None
    assert "does not carry" in str(not_ours_reason({**mine, "tags": []}, tag, "demo"))
    assert "made by 'other'" in str(not_ours_reason({**mine, "owner_name": "other"}, tag, "demo"))
    assert "no owner" in str(not_ours_reason({"id": "1", "tags": [{"value": tag}]}, tag, "demo"))
