"""The restore operators in-process against the simulator: restore (isolated), start, publish
SSH only when allowed, and the teardown that deletes on every path."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_skytap.checks import InvalidValueError
from airflow_provider_skytap.operators.restore import (
    ENVIRONMENT_ID_KEY,
    DeleteRestoredEnvironmentOperator,
    PublishSshOperator,
    RestoreEnvironmentOperator,
    StartEnvironmentOperator,
)
from tests.conftest import Sim
from tests.helpers import api_requests
from tests.skytap_simulator.helpers import seed_with
from tests.tasks import context, run_task

DAG_ID = "restore_drill_test"
FAST = {"poll_interval": 0.1, "log_every": 1, "timeout": 60}


def make(cls: type, conn: str, **kwargs: Any) -> Any:
    with DAG(DAG_ID, schedule=None):
        return cls(task_id=cls.__name__, skytap_conn_id=conn, **kwargs)


def test_restore_start_publish_and_delete(skytap_conn: str, sim: Sim) -> None:
    ctx = context()
    restored = run_task(
        make(RestoreEnvironmentOperator, skytap_conn, template_id="5001", **FAST), ctx
    )
    env = restored.result
    assert env["name"] == f"restore-{DAG_ID}-template-5001-20261124T000000Z"
    assert env["region"] == "US-West" and env["template_id"] == "5001"
    assert (env["outbound_traffic"], env["routable"]) == (False, False)
    assert ctx["ti"].xcoms[ENVIRONMENT_ID_KEY] == env["id"]
    assert ctx["ti"].xcoms["skytap_resource"]["url"].endswith(f"/configurations/{env['id']}")
    # A retry of the same run finds the environment and keeps the first request time.
    again = run_task(make(RestoreEnvironmentOperator, skytap_conn, template_id="5001", **FAST))
    assert again.result["id"] == env["id"]
    assert again.result["requested_at"] == pytest.approx(env["requested_at"], abs=0.001)
    assert len(sim.admin.restored()) == 1

    started = run_task(
        make(StartEnvironmentOperator, skytap_conn, environment_id=env["id"], poll_interval=0.1)
    ).result
    assert started["runstate"] == "running" and started["vms"] == {"linux-1": "running"}
    assert started["running_at"] > env["requested_at"]

    reach = run_task(
        make(PublishSshOperator, skytap_conn, environment_id=env["id"], allow_publish="true")
    ).result
    [endpoint] = reach["endpoints"]
    [published] = reach["published"]
    assert endpoint["via"] == "published_service"
    assert (endpoint["host"], endpoint["port"]) == (published["host"], published["port"])

    delete = make(
        DeleteRestoredEnvironmentOperator,
        skytap_conn,
        environment_id=env["id"],
        published=reach["published"],
    )
    assert run_task(delete).result == {"id": env["id"], "deleted": True}
    assert run_task(delete).result == {"id": env["id"], "deleted": True}  # already gone: fine
    assert sim.admin.restored_left() == []


def test_ssh_is_published_only_when_allowed(skytap_conn: str, sim: Sim) -> None:
    env = run_task(make(RestoreEnvironmentOperator, skytap_conn, template_id="5001", **FAST)).result
    sim.admin.clear_requests()
    reach = run_task(make(PublishSshOperator, skytap_conn, environment_id=env["id"])).result
    assert reach["published"] == []
    assert [e["via"] for e in reach["endpoints"]] == ["interface_ip"]
    assert not [r for r in api_requests(sim) if r["method"] == "POST"]
    run_task(make(DeleteRestoredEnvironmentOperator, skytap_conn, environment_id=env["id"]))


def test_a_template_that_cannot_be_isolated_fails_and_leaves_nothing(
    skytap_conn: str, sim: Sim
) -> None:
    tunnel = {"id": "88", "status": "connected"}
    template = {
        "id": "5101",
        "name": "routed",
        "networks": [{"id": "3101", "name": "net", "tunnels": [tunnel]}],
        "vms": [{"id": "2501", "name": "vm", "interfaces": [{"id": "2601"}]}],
    }
    sim.admin.reset(seed_with(templates=[template]))
    sim.admin.config(copy_seconds=0.2, delete_seconds=0.2)
    ctx = context()
    op = make(RestoreEnvironmentOperator, skytap_conn, template_id="5101", **FAST)
    with pytest.raises(AirflowFailException, match=r"has a tunnel \(1\): 88"):
        run_task(op, ctx)
    assert ctx["ti"].xcoms[ENVIRONMENT_ID_KEY]  # the teardown would know it, too
    assert sim.admin.restored_left() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"template_id": "12 OR 1"},
            "template_id must be a Skytap id (digits only), got '12 OR 1'",
        ),
        ({"template_id": "5001", "region": "Mars-1"}, "region"),
        (
            {"template_id": "5001", "region": "EMEA"},
            "region 'EMEA': template 5001 ('base-linux') is in 'US-West'",
        ),
        (
            {"template_id": "5001", "outbound_traffic": "maybe"},
            "outbound_traffic must be true or false, got 'maybe'",
        ),
        (
            {"template_id": "5001", "timeout": -1},
            "timeout must be a positive number of seconds, got -1",
        ),
    ],
)
def test_bad_restore_values_name_the_field_and_make_nothing(
    skytap_conn: str, sim: Sim, kwargs: dict[str, Any], message: str
) -> None:
    op = make(RestoreEnvironmentOperator, skytap_conn, poll_interval=0.1, **kwargs)
    with pytest.raises(InvalidValueError) as err:
        run_task(op)
    assert message in str(err.value)
    assert sim.admin.restored() == []


def test_the_teardown_finds_by_name_what_never_reached_xcom(skytap_conn: str, sim: Sim) -> None:
    env = run_task(make(RestoreEnvironmentOperator, skytap_conn, template_id="5001", **FAST)).result
    by_name = make(
        DeleteRestoredEnvironmentOperator, skytap_conn, environment_id="None", name=env["name"]
    )
    assert run_task(by_name).result == {"id": env["id"], "deleted": True}
    assert run_task(by_name).result == {"id": None, "deleted": False}
    nothing = make(DeleteRestoredEnvironmentOperator, skytap_conn, environment_id="")
    assert run_task(nothing).result == {"id": None, "deleted": False}
    with pytest.raises(InvalidValueError, match="environment_id must be a Skytap id"):
        run_task(make(DeleteRestoredEnvironmentOperator, skytap_conn, environment_id="1; x"))
    assert sim.admin.restored_left() == []
