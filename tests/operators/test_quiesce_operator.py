"""QuiesceOperator's shape checks, templating and the validation it does before any I/O."""

from __future__ import annotations

import re

import pytest
from airflow.sdk import DAG

from airflow_provider_skytap.operators.quiesce import QuiesceOperator, wants_sudo


def make(**kwargs: object) -> QuiesceOperator:
    with DAG("quiesce_unit", schedule=None, params={"seconds": "120", "env": "1001"}):
        settings = {
            "task_id": "freeze",
            "action": "freeze",
            "ssh_conn_ids": ["ssh_db"],
            "mounts": ["/data"],
            "max_freeze_seconds": 60,
            **kwargs,
        }
        return QuiesceOperator(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "pause"}, "action must be 'freeze' or 'thaw', got 'pause'"),
        ({"environment_id": "1001"}, "either ssh_conn_ids or environment_id"),
        ({"ssh_conn_ids": None}, "either ssh_conn_ids or environment_id"),
        ({"max_freeze_seconds": None}, "max_freeze_seconds is required to freeze"),
    ],
)
def test_the_shape_of_the_task_is_checked_when_the_dag_loads(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make(**kwargs)


def test_thaw_needs_no_max_freeze_seconds() -> None:
    op = make(action="thaw", max_freeze_seconds=None)
    assert op.spec().max_seconds is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_freeze_seconds": "abc"},
            "max_freeze_seconds must be a positive number of seconds (at least 1), got 'abc'",
        ),
        ({"mounts": ["/"]}, "refusing to freeze '/'"),
        ({"failure_policy": "ignore"}, "failure_policy must be one of fail, continue_crash"),
        ({"max_parallel": "0"}, "max_parallel must be a positive whole number, got '0'"),
        ({"profile": "oracle"}, "profile must be one of"),
        ({"profile": "app"}, "profile='app' needs pre_freeze_command and post_thaw_command"),
        (
            {
                "profile": "app",
                "mounts": ["/"],
                "pre_freeze_command": "kill -STOP 1",
                "post_thaw_command": "kill -CONT 1",
            },
            "mounts: refusing '/', a system directory",
        ),
        (
            {
                "profile": "app",
                "mounts": {"ssh_db": ["data"]},
                "pre_freeze_command": "kill -STOP 1",
                "post_thaw_command": "kill -CONT 1",
            },
            "mounts['ssh_db']: mounts: 'data' is not an absolute path",
        ),
    ],
)
def test_templated_values_are_validated_in_execute_before_any_io(
    kwargs: dict[str, object], message: str
) -> None:
    op = make(**kwargs)  # building the task is fine: these may be templates
    with pytest.raises(ValueError, match=re.escape(message)):
        op.execute({"run_id": "r"})  # type: ignore[arg-type]


def test_templated_fields_render() -> None:
    op = make(
        max_freeze_seconds="{{ params.seconds }}",
        environment_id="{{ params.env }}",
        ssh_conn_ids=None,
        mounts=["/data/{{ params.env }}"],
        profile_options=None,
    )
    op.render_template_fields({"params": {"seconds": "120", "env": "1001"}})  # type: ignore[arg-type]
    assert op.max_freeze_seconds == "120"
    assert op.environment_id == "1001"
    assert op.mounts == ["/data/1001"]
    assert op.spec().max_seconds == 120
    for name in ("mounts", "max_freeze_seconds", "environment_id", "vm_names", "profile"):
        assert name in QuiesceOperator.template_fields


@pytest.mark.parametrize(
    ("use_sudo", "user", "profile", "expected"),
    [
        (None, "root", "fsfreeze", False),
        (None, "backup", "fsfreeze", True),
        (None, "backup", "postgres", True),
        (None, "backup", "app", False),  # app needs no root: it runs as the SSH user
        (None, "root", "app", False),
        (True, "backup", "app", True),  # forced: the guardian runs as root, state in /run
        (False, "backup", "fsfreeze", False),  # the VM then refuses, suggesting app
    ],
)
def test_sudo_is_used_unless_root_or_app(
    use_sudo: bool | None, user: str, profile: str, expected: bool
) -> None:
    assert wants_sudo(use_sudo, user, profile) is expected
