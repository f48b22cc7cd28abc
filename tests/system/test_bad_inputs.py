"""Bad inputs a user meets, on the lab's VMs and the simulator: each fails before anything is
frozen or created, with a message naming the field and the value.

The whole catalogue (27 inputs, trigger form and operators) is ``bench/bad_inputs.py``; these
are the inputs whose message or timing had to be fixed.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from demo import airflow_cli, lab
from tests.conftest import Sim
from tests.helpers import api_requests
from tests.system.conftest import ENV, skytap_conn

BACKUP = "skytap_live_clone_backup"
WRITES = ("POST", "PUT", "DELETE")


@pytest.fixture
def conns(lab_sim: Sim, vms: lab.Lab, monkeypatch: pytest.MonkeyPatch) -> Sim:
    """skytap_default (the simulator) and skytap_vm_ssh (the lab's VMs) as env-var secrets."""
    monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_DEFAULT", json.dumps(skytap_conn(lab_sim)))
    monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_VM_SSH", json.dumps(vms.ssh_connection()))
    lab_sim.admin.clear_requests()
    return lab_sim


def freeze(**kwargs: Any) -> Exception:
    """Run a freeze task of the lab's environment in-process; answers what it raised."""
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    settings = {
        "environment_id": ENV,
        "ssh_conn_id": "skytap_vm_ssh",
        "mounts": [lab.MOUNT],
        "max_freeze_seconds": 60,
    } | kwargs
    with DAG("bad_inputs_test", schedule=None):
        op = QuiesceOperator(task_id="freeze", action="freeze", **settings)
    try:
        op.execute({"run_id": f"manual__bad_inputs_{uuid.uuid4().hex[:8]}"})  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    raise AssertionError("the freeze was not refused")


def assert_nothing_written(sim: Sim) -> None:
    writes = [r for r in api_requests(sim) if r["method"] in WRITES]
    assert writes == [], writes


def test_an_unknown_ssh_connection_is_named_once_before_any_host(conns: Sim, vms: lab.Lab) -> None:
    error = freeze(ssh_conn_id="no_such_ssh")
    assert isinstance(error, ValueError)
    assert str(error).startswith("ssh_conn_id: 'no_such_ssh' is not an Airflow connection")
    assert str(error).count("no_such_ssh") <= 2, "named once, not once per VM"
    assert_nothing_written(conns)
    assert vms.frozen() == []


def test_an_ssh_login_refused_names_the_connection_and_the_user(
    conns: Sim, vms: lab.Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = vms.ssh_connection() | {"login": "nobody"}
    monkeypatch.setenv("AIRFLOW_CONN_WRONG_USER_SSH", json.dumps(wrong))
    error = freeze(ssh_conn_id="wrong_user_ssh", ssh_connect_attempts=1)
    text = str(error)
    assert text.startswith("preflight failed; nothing was frozen: "), text
    assert "preflight (ssh connect) failed: as 'nobody' with ssh_conn_id 'wrong_user_ssh'" in text
    assert "AuthenticationException" in text
    assert_nothing_written(conns)
    assert vms.frozen() == []


def test_a_filesystem_that_cannot_be_frozen_is_refused_before_any_freeze(
    conns: Sim, vms: lab.Lab
) -> None:
    # In each lab VM /srv is a tmpfs (its /srv/data the ext4 disk). Before the check, the
    # preflight passed, /srv/data was frozen, and fsfreeze -f /srv failed: a freeze, then a
    # rollback, on every VM.
    error = freeze(mounts=[lab.MOUNT, "/srv"])
    text = str(error)
    assert text.startswith("preflight failed; nothing was frozen: "), text
    assert "/srv is a tmpfs filesystem, which cannot be frozen" in text
    result: Any = getattr(error, "result", None)
    assert result is not None
    assert [h["frozen_at"] for h in result["hosts"]] == [None, None, None]
    assert_nothing_written(conns)
    assert vms.frozen() == []


def test_a_freeze_shorter_than_the_copy_says_max_freeze_seconds_was_too_short(
    conns: Sim, vms: lab.Lab
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.quiesce import QuiesceError, QuiesceOperator

    targets: dict[str, Any] = {
        "environment_id": ENV,
        "ssh_conn_id": "skytap_vm_ssh",
        "mounts": [lab.MOUNT],
        "vm_names": ["app-1"],
    }
    with DAG("bad_inputs_test", schedule=None):
        freeze_op = QuiesceOperator(
            task_id="freeze", action="freeze", max_freeze_seconds=1, **targets
        )
        thaw_op = QuiesceOperator(task_id="thaw", action="thaw", **targets)
    context: Any = {"run_id": f"manual__bad_inputs_{uuid.uuid4().hex[:8]}"}
    freeze_op.execute(context)
    deadline = time.monotonic() + 30
    while vms.frozen() and time.monotonic() < deadline:  # the guardian thaws after 1 s
        time.sleep(0.2)
    with pytest.raises(QuiesceError) as caught:
        thaw_op.execute(context)
    assert "the guardian thawed by itself (deadline)" in str(caught.value)
    assert "max_freeze_seconds reached" in str(caught.value)
    assert vms.frozen() == []


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"dr_regions": ["Mars-1"]},
            "dr_regions 'Mars-1' is not a Skytap region this provider knows (APAC-2, ",
        ),
        (
            {"dr_regions": ["US-West"]},
            "dr_regions: 'US-West' is the region the backup is made in",
        ),
        (
            {"max_freeze_second": 30},
            "conf: 'max_freeze_second' is not a param of this DAG "
            "(did you mean 'max_freeze_seconds'?)",
        ),
    ],
)
def test_a_bad_dr_region_or_conf_key_fails_the_backup_before_anything_is_frozen_or_copied(
    home: Path, lab_sim: Sim, vms: lab.Lab, conf: dict[str, Any], message: str
) -> None:
    env = airflow_cli.airflow_env(
        home, {"skytap_default": skytap_conn(lab_sim), "skytap_vm_ssh": vms.ssh_connection()}
    )
    lab_sim.admin.clear_requests()
    done = airflow_cli.dags_test(
        env, BACKUP, "2026-11-18", {"max_freeze_seconds": 60} | conf, timeout=300
    )
    out = done.stdout + done.stderr
    assert not airflow_cli.succeeded(done)
    assert message in out, out[-3000:]
    assert lab_sim.token not in out
    tis = airflow_cli.run_record(env, BACKUP)["task_instances"]
    got = {t["task_id"]: t["state"] for t in tis if t["logical_date"] == "2026-11-18"}
    assert got["dr_regions"] == "failed"
    assert got["backup.freeze"] == "upstream_failed" and got["backup.copy"] == "upstream_failed"
    assert_nothing_written(lab_sim)
    assert vms.frozen() == []
    state = lab_sim.admin.state()
    assert [t["id"] for t in state["templates"]] == ["5001"], "no template was made"
