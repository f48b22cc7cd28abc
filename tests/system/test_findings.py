"""Issue 14's findings, each through the entry point a user has: the example backup DAG under
``airflow dags test`` (real VMs from ``demo.lab``, the simulator), a DAG file of one task, the
trigger form. Each asserts what a user would see in Skytap or in the run, nothing internal,
so the same test reads the same on the code before the fix (where it fails).
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skytap.backups import source_tag, time_tag
from airflow_provider_skytap.hooks.skytap import SkytapHook
from demo import airflow_cli, lab
from tests.conftest import Sim
from tests.system.conftest import ENV, skytap_conn

BACKUP = "skytap_live_clone_backup"
FAST = {"dr_poll_seconds": 1, "max_freeze_seconds": 60, "dr_regions": []}


def name_of(date: str) -> str:
    """The backup's predictable name for ``date`` (DAG, environment, logical date)."""
    return f"{BACKUP}-environment-{ENV}-{date.replace('-', '')}T000000Z"


def template(sim: Sim, rid: str) -> dict[str, Any]:
    return next(t for t in sim.admin.state()["templates"] if t["id"] == rid)


def tags(sim: Sim, rid: str) -> set[str]:
    return {t["value"] for t in template(sim, rid)["tags"]}


def hook(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> SkytapHook:
    import json

    monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_FINDINGS", json.dumps(skytap_conn(sim)))
    return SkytapHook("skytap_findings")


def test_an_untagged_template_with_tomorrows_name_is_not_adopted_vouched_or_pruned(
    run_env: dict[str, str], lab_sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: someone makes an untagged template under tomorrow's predictable name. The
    run must not take it for its backup (nor tag it), and the next night's prune (keep=1)
    must not delete it."""
    planted = hook(lab_sim, monkeypatch).copy_template("5001", name=name_of("2026-11-27"))
    planted_id = str(planted["id"])
    lab_sim.admin.config(copy_seconds=1)
    done = airflow_cli.dags_test(run_env, BACKUP, "2026-11-27", FAST, timeout=300)
    out = done.stdout + done.stderr
    assert not airflow_cli.succeeded(done), "a run whose name is taken by a stranger fails"
    assert f"template {planted_id}" in out and "not this DAG's" in out, out[-3000:]
    assert tags(lab_sim, planted_id) == set(), "nothing of ours was put on it"
    # The next night: a good backup, and prune keep=1 leaves the stranger's template alone.
    done = airflow_cli.dags_test(run_env, BACKUP, "2026-11-28", FAST | {"keep": 1}, timeout=300)
    assert airflow_cli.succeeded(done), (done.stdout + done.stderr)[-3000:]
    assert not template(lab_sim, planted_id)["deleted"], "prune deleted what it cannot prove ours"
    assert tags(lab_sim, planted_id) == set()


def test_a_copy_left_by_another_freeze_window_is_not_vouched_for(
    run_env: dict[str, str], lab_sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1, second path: a freeze task killed mid-copy leaves this date's copy tagged
    as this DAG's but with no verdict; the run is cleared. The re-run must not tag it
    application-consistent: it was requested in another freeze window."""
    date = "2026-11-29"
    theirs = hook(lab_sim, monkeypatch)
    left = theirs.save_as_template(ENV, name=name_of(date))
    when = datetime(2026, 11, 29, tzinfo=timezone.utc)
    theirs.add_tags(
        "template", left["id"], [source_tag(BACKUP, "environment", ENV), time_tag(when)]
    )
    theirs.wait_until_ready("template", left["id"], timeout=30, poll_interval=0.2)
    lab_sim.admin.clear_requests()
    done = airflow_cli.dags_test(run_env, BACKUP, date, FAST, timeout=300)
    out = done.stdout + done.stderr
    assert "airflow-skytap-consistency/application-consistent" not in tags(
        lab_sim, str(left["id"])
    ), out[-3000:]
    posts = [r for r in lab_sim.admin.requests() if r["method"] == "POST"]
    assert posts == [], "the re-run made no second copy"


def test_a_bad_value_fails_the_task_without_a_retry(home: Path, sim: Sim, tmp_path: Path) -> None:
    """A task with retries=2 given a bad environment id fails at its first try: a retry would
    meet the same value (today's clone operators raised a plain ValueError, retried)."""
    (tmp_path / "bad_value.py").write_text(
        textwrap.dedent(
            """
            from datetime import datetime, timedelta, timezone
            from airflow.sdk import DAG
            from airflow_provider_skytap.operators.clone import LiveCloneOperator

            START = datetime(2026, 11, 1, tzinfo=timezone.utc)
            with DAG("bad_value", schedule=None, start_date=START):
                LiveCloneOperator(
                    task_id="clone",
                    environment_id="10 01",
                    retries=2,
                    retry_delay=timedelta(seconds=1),
                )
            """
        )
    )
    env = airflow_cli.airflow_env(home, {"skytap_default": skytap_conn(sim)}, tmp_path)
    done = airflow_cli.dags_test(env, "bad_value", "2026-11-27", timeout=300)
    assert not airflow_cli.succeeded(done)
    assert "environment_id" in done.stdout + done.stderr
    [ti] = airflow_cli.run_record(env, "bad_value")["task_instances"]
    assert (ti["state"], ti["try_number"]) == ("failed", 1)


@pytest.mark.parametrize(
    "conf",
    [
        {"profile": "custom", "pre_freeze_command": "touch {marker}"},
        {"profile": "app", "pre_freeze_command": "touch {marker}", "post_thaw_command": "true"},
        {"ssh_conn_id": "skytap_default"},
    ],
    ids=["custom-command", "app-command", "other-connection"],
)
def test_a_trigger_cannot_run_a_command_on_the_vms_or_pick_a_connection(
    run_env: dict[str, str], lab_sim: Sim, vms: lab.Lab, tmp_path: Path, conf: dict[str, Any]
) -> None:
    """Finding 2: what a user allowed only to trigger the DAG sends in the conf. The run is
    refused, naming the field and the value; no command runs on a VM, no VM is frozen."""
    marker = tmp_path / "ran-on-the-vm"
    conf = {k: v.format(marker=marker) if isinstance(v, str) else v for k, v in conf.items()}
    lab_sim.admin.clear_requests()
    done = airflow_cli.dags_test(run_env, BACKUP, "2026-11-30", FAST | conf, timeout=300)
    out = done.stdout + done.stderr
    assert not airflow_cli.succeeded(done)
    field = "ssh_conn_id" if "ssh_conn_id" in conf else "profile"
    assert field in out and repr(conf[field]).strip("'") in out, out[-3000:]
    assert not marker.exists(), "the conf's command ran on a VM"
    assert vms.frozen() == []
    posts = [r for r in lab_sim.admin.requests() if r["method"] == "POST"]
    assert posts == []
