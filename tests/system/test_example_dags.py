"""The example DAGs in dags/, run with `airflow dags test` against the simulator and real VMs.

The VMs are ``demo.lab``'s: each an OpenSSH sshd in its own mount namespace with a
loop-mounted ext4 disk at /srv/data and a writer fsyncing checksummed records. The
simulator's environment 1001 has its three VMs on them: the copies the DAG makes are copies
of those disks, checked afterwards the way the demo checks them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skytap.backups import consistency
from airflow_provider_skytap.consistency import marked_token
from demo import airflow_cli, lab
from skytap_simulator.seed import default_seed
from tests.conftest import Sim
from tests.helpers import api_requests
from tests.system.conftest import ENV, skytap_conn

BACKUP = "skytap_live_clone_backup"
REPORTING = "skytap_live_copy_for_reporting"
# What the trigger form would send to make the waits fit the simulator's seconds-long copies.
FAST = {"dr_poll_seconds": 1, "max_freeze_seconds": 60}


def run(env: dict[str, str], dag_id: str, date: str, **conf: Any) -> tuple[bool, str]:
    done = airflow_cli.dags_test(env, dag_id, date, FAST | conf, timeout=300)
    return airflow_cli.succeeded(done), done.stdout + done.stderr


def states(env: dict[str, str], dag_id: str, date: str) -> dict[str, str]:
    """``{task_id[map_index]: state}`` of the run of ``date``."""
    tis = airflow_cli.run_record(env, dag_id)["task_instances"]
    return {
        t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): t["state"]
        for t in tis
        if t["logical_date"] == date
    }


def result_of(env: dict[str, str], date: str, task_id: str) -> Any:
    """What ``task_id`` returned in the backup run of ``date``."""
    record = airflow_cli.run_record(env, BACKUP)
    run_id = next(t["run_id"] for t in record["task_instances"] if t["logical_date"] == date)
    return airflow_cli.results(record, run_id)[(task_id, -1)]


def templates(sim: Sim, name: str) -> list[dict[str, Any]]:
    """The templates named ``name``, marked with a freeze window (``<name>-w<token>``)."""
    return [
        t
        for t in sim.admin.state()["templates"]
        if not t["deleted"] and marked_token(t["name"], name) is not None
    ]


def at(iso: str) -> float:
    """An ISO time (Airflow's or the thaw report's) as epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def copies_id(copies: list[dict[str, Any]]) -> str:
    """The id of the backup in the source's region (the live clone, not a DR copy)."""
    return str(next(t["id"] for t in copies if t["region"] == "US-West"))


def backup_name(date: str) -> str:
    return f"{BACKUP}-environment-{ENV}-{date.replace('-', '')}T000000Z"


def test_the_backup_is_consistent_in_every_region_and_every_vm_was_thawed(
    run_env: dict[str, str], sim: Sim
) -> None:
    ok, out = run(run_env, BACKUP, "2026-11-20", dr_regions=["EMEA", "APAC-2"])
    assert ok, out[-5000:]
    assert sim.token not in out
    copies = templates(sim, backup_name("2026-11-20"))
    assert sorted(t["region"] for t in copies) == ["APAC-2", "EMEA", "US-West"]
    for template in copies:
        for vm in template["vms"]:
            check = lab.check_image(vm["disk_image"])
            assert check.consistent, f"{template['region']} {vm['name']}: {check.verdict()}"
    thaw = result_of(run_env, "2026-11-20", "backup.thaw")
    assert thaw["consistency"] == "application-consistent"
    assert len(thaw["hosts"]) == 3
    # The thaw vouched for the template, and each DR copy carries its verdict once complete.
    assert {k: thaw["copy"][k] for k in ("id", "kind", "consistency")} == {
        "id": copies_id(copies),
        "kind": "template",
        "consistency": "application-consistent",
    }
    assert "in this freeze window" in thaw["copy"]["note"]
    for template in copies:
        assert consistency(template) == "application-consistent", template["region"]
    # One skytap_backup asset event per backup, for the restore drill.
    record = airflow_cli.run_record(run_env, BACKUP)
    run_id = next(
        t["run_id"] for t in record["task_instances"] if t["logical_date"] == "2026-11-20"
    )
    results = airflow_cli.results(record, run_id)
    announced = [results[key] for key in sorted(results) if key[0] == "announce"]
    assert sorted((a["region"], a["template_id"], a["verdict"]) for a in announced) == sorted(
        (t["region"], str(t["id"]), "application-consistent") for t in copies
    )
    # No task starts while the VMs are frozen: the freeze task requested the copy and
    # released the VMs as soon as it was complete (the thaw task reports).
    tis = {
        t["task_id"]: t
        for t in airflow_cli.run_record(run_env, BACKUP)["task_instances"]
        if t["logical_date"] == "2026-11-20"
    }
    job = next(j for j in sim.admin.state()["jobs"] if j["target_id"] == copies_id(copies))
    assert job["start_at"] < at(tis["backup.freeze"]["end"]), "the freeze task requests it"
    # The lab's VMs share this machine's clock, so their own thaw times compare here.
    last_thaw = max(at(h["thawed_at"]) for h in thaw["hosts"])
    assert thaw["freeze_window"]["clock"] == "controller"  # the freeze report reached the thaw
    assert last_thaw < at(tis["backup.freeze"]["end"]) < at(tis["backup.copy"]["start"])
    assert job["ready_at"] <= last_thaw, "released once the copy was complete, not before"
    print(f"freeze window {thaw['freeze_window']['seconds']} s over 3 VMs (1 s copy)")


def test_a_failed_clone_thaws_the_vms_and_fails_the_run(run_env: dict[str, str], sim: Sim) -> None:
    sim.admin.faults(fail_next_copy="Storage error")
    ok, out = run(run_env, BACKUP, "2026-11-21", dr_regions=["EMEA"])
    assert not ok, "a run whose clone failed must not end green"
    assert "state=failed" in out, out[-3000:]
    got = states(run_env, BACKUP, "2026-11-21")
    assert got["backup.freeze"] == "success"
    assert got["backup.copy"] == "failed"  # it waits for its copy, and the copy failed
    assert got["backup.wait"] == "upstream_failed"
    assert got["backup.thaw"] == "success"  # the VMs were thawed all the same
    assert got["copy_to_dr"] == "upstream_failed" and got["prune"] == "upstream_failed"
    assert "Storage error" in out
    # No DR copy was made of the failed template.
    assert [t["region"] for t in templates(sim, backup_name("2026-11-21"))] == ["US-West"]


def test_a_copy_that_outlasts_the_freeze_fails_the_run_and_is_tagged_inconsistent(
    run_env: dict[str, str], sim: Sim
) -> None:
    # The copy outlasts max_freeze_seconds: the guardians thaw while Skytap is still copying.
    # (What prune then does with such a template: tests/operators/test_retention.py.)
    sim.admin.config(copy_seconds=12)
    ok, out = run(run_env, BACKUP, "2026-11-26", dr_regions=[], max_freeze_seconds=10)
    assert not ok, "a run whose guardians thawed before the copy was complete must fail"
    assert "the copy is not application-consistent" in out, out[-3000:]
    got = states(run_env, BACKUP, "2026-11-26")
    assert got["backup.wait"] == "success"  # the copy completed, after the thaw
    assert got["backup.thaw"] == "failed" and got["prune"] == "upstream_failed"
    [torn] = templates(sim, backup_name("2026-11-26"))
    assert consistency(torn) == "inconsistent"
    thaw = result_of(run_env, "2026-11-26", "backup.thaw")
    assert {h["fired_by"] for h in thaw["hosts"]} == {"deadline"}


def test_a_freeze_failure_on_one_vm_thaws_the_others_and_fails_the_run(
    run_env: dict[str, str], sim: Sim, vms: lab.Lab
) -> None:
    # Another tool holds db-1's disk frozen: our freeze of it fails at fsfreeze -f.
    held = vms.vm("db-1")
    assert held.in_vm("fsfreeze", "-f", lab.MOUNT).returncode == 0
    try:
        ok, out = run(run_env, BACKUP, "2026-11-22", dr_regions=[])
        assert vms.frozen() == ["db-1"], "app-1 and app-2 must be thawed, db-1 left to its owner"
    finally:
        held.in_vm("fsfreeze", "-u", lab.MOUNT)
    assert not ok
    got = states(run_env, BACKUP, "2026-11-22")
    assert got["backup.freeze"] == "failed"
    assert got["backup.copy"] == "upstream_failed"
    assert got["backup.thaw"] == "success"
    assert "db-1" in out
    assert templates(sim, backup_name("2026-11-22")) == []  # nothing was copied


def test_a_copy_made_but_not_tagged_is_tagged_by_the_copy_task_and_not_made_twice(
    run_env: dict[str, str], sim: Sim
) -> None:
    sim.admin.faults(
        rules=[
            # The save is carried out but its answer is lost (the hook finds it by name) ...
            {"method": "POST", "path": "/templates", "action": "drop", "after": True},
            # ... then tagging it is refused twice (a conflict Airflow may retry): the freeze
            # task goes on with the copy requested (nothing freezes again), the copy task's
            # first try fails, its second tags the copy (its name has this window's mark).
            {
                "method": "PUT",
                "path": "/v2/templates/*",
                "action": "error",
                "status": 409,
                "count": 2,
            },
        ]
    )
    ok, out = run(run_env, BACKUP, "2026-11-23", dr_regions=[])
    assert ok, out[-5000:]
    got = airflow_cli.run_record(run_env, BACKUP)["task_instances"]
    clone = next(
        t for t in got if t["task_id"] == "backup.copy" and t["logical_date"] == "2026-11-23"
    )
    assert clone["try_number"] == 2, "the first try of the copy task must have failed"
    [made] = templates(sim, backup_name("2026-11-23"))
    assert consistency(made) == "application-consistent"
    assert len(templates(sim, backup_name("2026-11-23"))) == 1
    posts = [r for r in api_requests(sim) if r["method"] == "POST" and r["path"] == "/templates"]
    assert len(posts) == 1, posts


def test_the_reporting_copy_is_powered_on_and_deleted_after_the_hours(
    run_env: dict[str, str], sim: Sim
) -> None:
    ok, out = run(run_env, REPORTING, "2026-11-24", delete_after_hours=0.001)
    assert ok, out[-5000:]
    result = airflow_cli.results(airflow_cli.run_record(run_env, REPORTING))
    on = result[("power_on", -1)]
    assert on["runstate"] == "running"
    assert sorted(on["ssh"]) == ["app-1", "app-2", "db-1"]
    copy = next(e for e in sim.admin.state()["environments"] if e["id"] == str(on["id"]))
    assert copy["deleted"], "the copy must be deleted after delete_after_hours"
    for vm in copy["vms"]:
        check = lab.check_image(vm["disk_image"])
        assert check.consistent, f"{vm['name']}: {check.verdict()}"
    assert result[("reporting_copy.thaw", -1)]["consistency"] == "application-consistent"


@pytest.fixture(scope="module")
def rootless_vms() -> Iterator[lab.Lab]:
    reason = lab.unavailable(rootless=True)
    if reason:
        pytest.skip(f"the rootless lab: {reason}")
    with lab.Lab(rootless=True) as started:
        yield started


def test_without_root_the_backup_pauses_the_application_instead(
    home: Path, sim: Sim, rootless_vms: lab.Lab, tmp_path: Path
) -> None:
    # What make demo does on a machine without root (here as root, the same code path):
    # plain directories, raw disk files, profile app pausing each writer.
    sim.admin.reset(rootless_vms.seed(default_seed(), ENV))
    sim.admin.config(copy_seconds=1, region_copy_seconds=1, delete_seconds=0.2)
    env = airflow_cli.airflow_env(
        home, {"skytap_default": skytap_conn(sim), "skytap_vm_ssh": rootless_vms.ssh_connection()}
    )
    # The config names the preset and the VMs' directories (the form cannot).
    config = tmp_path / "skytap_backups.yaml"
    env[airflow_cli.CONFIG_ENV] = str(
        airflow_cli.write_config(config, rootless_vms.backup_config())
    )
    try:
        ok, out = run(env, BACKUP, "2026-11-19", dr_regions=["EMEA"])
        paused = rootless_vms.frozen()
    finally:
        rootless_vms.thaw_all()
    assert ok, out[-5000:]
    assert paused == [], f"left paused: {paused}"
    copies = templates(sim, backup_name("2026-11-19"))
    assert sorted(t["region"] for t in copies) == ["EMEA", "US-West"]
    for template in copies:
        for vm in template["vms"]:
            check = lab.check_image(vm["disk_image"])
            assert not check.filesystem and check.consistent, check.verdict()
    assert result_of(env, "2026-11-19", "backup.thaw")["consistency"] == "application-consistent"
