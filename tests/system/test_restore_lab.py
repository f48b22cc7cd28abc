"""Restored environments booted on the lab: new VMs (an sshd each, in a mount namespace of its
own) on the restored environment's own copied disks, checked over SSH by quiesce.verify."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.quiesce.verify import (
    VerifySpec,
    targets_from_endpoints,
    verify_targets,
)
from demo import lab
from tests.conftest import Sim
from tests.system.conftest import ENV, skytap_conn

SSH_CONN = "skytap_vm_ssh"


@pytest.fixture
def hook(lab_sim: Sim, vms: lab.Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[SkytapHook]:
    monkeypatch.setenv("AIRFLOW_CONN_SKYTAP_DEFAULT", json.dumps(skytap_conn(lab_sim)))
    monkeypatch.setenv(f"AIRFLOW_CONN_{SSH_CONN.upper()}", json.dumps(vms.ssh_connection()))
    with SkytapHook() as made:
        yield made


def frozen_backup(hook: SkytapHook, vms: lab.Lab, name: str) -> dict[str, object]:
    """A template saved from environment 1001 while every lab VM's disk was frozen."""
    for vm in vms.vms:
        assert vm.in_vm("fsfreeze", "-f", lab.MOUNT).returncode == 0
    try:
        made = hook.save_as_template(ENV, name=name)
        return hook.wait_until_ready("template", made["id"], timeout=60, poll_interval=0.2)
    finally:
        vms.thaw_all()


def drill(hook: SkytapHook, vms: lab.Lab, template_id: str, name: str) -> dict[str, object]:
    """Restore, start, publish SSH, check every VM; always delete. Answers the report."""
    env = hook.restore_environment(template_id, name=name, timeout=60, poll_interval=0.2)
    try:
        hook.start_environment(env["id"], timeout=60, log_every=5, poll_interval=0.2)
        published = hook.publish_ssh(env["id"])
        spec = VerifySpec.build(mounts=[lab.MOUNT], app_check=vms.app_check(), boot_timeout=20)
        report = verify_targets(spec, targets_from_endpoints(published, SSH_CONN))
        return report.to_xcom()
    finally:
        hook.delete_restored(env["id"])


def test_a_restored_backup_boots_on_its_own_disks_and_passes(
    hook: SkytapHook, vms: lab.Lab, lab_sim: Sim
) -> None:
    template = frozen_backup(hook, vms, "lab-backup-good")
    with lab.Hypervisor(vms, lab_sim.admin) as hypervisor:
        report = drill(hook, vms, str(template["id"]), "drill-good")
        assert report["ok"], report["problems"]
        checked = {vm["host"].split(" ")[0]: vm for vm in report["vms"]}
        assert sorted(checked) == ["app-1", "app-2", "db-1"]
        for vm in checked.values():
            assert vm["mounts"][0]["fsck_exit"] == 0
            assert vm["app_output"].startswith("verified ") and int(vm["app_output"].split()[1]) > 0
        # The VMs ran on the restored environment's disks: neither the template's nor the source's.
        state = lab_sim.admin.state()
        restored = next(e for e in state["environments"] if e["name"] == "drill-good")
        backup = {vm["disk_image"] for vm in template_vms(state, str(template["id"]))}
        assert {vm["disk_image"] for vm in restored["vms"]}.isdisjoint(backup)
        assert hypervisor.errors == []
    assert vms.restored == [], "every restored VM is shut down once its environment is deleted"
    assert lab_sim.admin.restored_left() == []


def test_a_broken_copied_disk_fails_the_check_of_its_vm(
    hook: SkytapHook, vms: lab.Lab, lab_sim: Sim
) -> None:
    template = frozen_backup(hook, vms, "lab-backup-broken")
    image = next(
        vm["disk_image"]
        for vm in template_vms(lab_sim.admin.state(), str(template["id"]))
        if vm["name"] == "db-1"
    )
    subprocess.run(
        ["debugfs", "-w", "-R", f"set_inode_field /{lab.RECORDS} links_count 9", image],
        check=True,
        capture_output=True,
    )
    with lab.Hypervisor(vms, lab_sim.admin):
        report = drill(hook, vms, str(template["id"]), "drill-broken")
    assert not report["ok"]
    assert len(report["problems"]) == 1, report["problems"]
    assert report["problems"][0].startswith("db-1 (127.0.0.1:"), report["problems"]
    assert f"{lab.MOUNT}: e2fsck -n exit 4" in report["problems"][0]
    assert lab_sim.admin.restored_left() == []


def template_vms(state: dict[str, object], template_id: str) -> list[dict[str, str]]:
    templates = state["templates"]
    assert isinstance(templates, list)
    found: list[dict[str, str]] = next(t for t in templates if t["id"] == template_id)["vms"]
    return found
