"""The restore drill's VM-side checks against a real sshd and real loop-mounted ext4:
reachable, each mount clean (``e2fsck -n``), the application's own check."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from airflow_provider_skytap.quiesce.spec import QuiesceTarget
from airflow_provider_skytap.quiesce.verify import VerifySpec, verify_targets
from tests.quiesce.conftest import LoopMounts, Sshd


def target(sshd: Sshd, monkeypatch: pytest.MonkeyPatch, name: str = "vm-1") -> QuiesceTarget:
    conn = sshd.connect(monkeypatch, f"verify_{name.replace('-', '_')}")
    return QuiesceTarget(key=name, name=name, label=name, ssh_conn_id=conn)


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def test_a_clean_disk_and_a_passing_application_check_pass(
    sshd: Sshd, loops: LoopMounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = loops.make("clean")
    (mnt / "records").write_text("1\n2\n3\n")
    spec = VerifySpec.build(
        mounts=[str(mnt)], app_check=f"test $(wc -l < {mnt}/records) -eq 3 && echo 3 records ok"
    )
    report = verify_targets(spec, [target(sshd, monkeypatch)])
    assert report.ok, report.problems()
    [vm] = report.to_xcom()["vms"]
    assert vm["reachable"] and vm["mounts"][0]["fstype"] == "ext4"
    assert vm["mounts"][0]["fsck_exit"] == 0 and vm["app_exit"] == 0
    assert vm["app_output"] == "3 records ok"


def test_a_damaged_filesystem_fails_naming_the_mount(
    sshd: Sshd, loops: LoopMounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = loops.make("damaged")
    (mnt / "file").write_text("x")
    run("umount", str(mnt))
    image = loops.root / "damaged.img"
    run("debugfs", "-w", "-R", "set_inode_field /file links_count 7", str(image))
    run("mount", "-o", "loop", str(image), str(mnt))
    report = verify_targets(VerifySpec.build(mounts=[str(mnt)]), [target(sshd, monkeypatch)])
    assert not report.ok
    [problem] = report.problems()
    assert problem.startswith(f"vm-1: {mnt}: e2fsck -n exit 4"), problem
    # -n: nothing was repaired; the damage is still there.
    again = subprocess.run(["e2fsck", "-f", "-n", str(image)], capture_output=True, check=False)
    assert again.returncode == 4


def test_a_failing_application_check_fails_with_its_exit_and_output(
    sshd: Sshd, loops: LoopMounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = loops.make("app")
    spec = VerifySpec.build(mounts=[str(mnt)], app_check="echo no database here >&2; exit 3")
    report = verify_targets(spec, [target(sshd, monkeypatch)])
    assert not report.ok
    assert report.problems() == ["vm-1: app_check exit 3: no database here"]


def test_forged_report_lines_from_the_application_count_for_nothing(
    sshd: Sshd, loops: LoopMounts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = tmp_path / "not-a-mount"
    plain.mkdir()
    forged = f"echo '@@sv mount={plain}|ext4|0|clean'; echo '@@sv done=1'"
    spec = VerifySpec.build(mounts=[str(plain)], app_check=forged)
    report = verify_targets(spec, [target(sshd, monkeypatch)])
    assert not report.ok
    assert report.problems() == [f"vm-1: {plain} is not mounted"]


def test_a_mount_name_is_data_never_shell(
    sshd: Sshd, loops: LoopMounts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    planted = tmp_path / "planted"
    hostile = f"/srv/x; touch {planted}; echo $(touch {planted})"
    report = verify_targets(VerifySpec.build(mounts=[hostile]), [target(sshd, monkeypatch)])
    assert not report.ok and not planted.exists()
    assert report.problems() == [f"vm-1: {hostile} is not mounted"]


def test_an_unreachable_vm_fails_after_the_boot_timeout(
    sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sshd.connect(monkeypatch, "verify_down")
    down = QuiesceTarget(key="d", name="db-1", label="db-1", ssh_conn_id=conn, port=1)
    up = target(sshd, monkeypatch, "app-1")
    spec = VerifySpec.build(mounts=[], boot_timeout=2)
    report = verify_targets(spec, [down, up])
    assert not report.ok
    vms = {vm["host"]: vm for vm in report.to_xcom()["vms"]}
    assert vms["app-1"]["ok"] and vms["app-1"]["reachable"]
    assert not vms["db-1"]["reachable"]
    assert "not reachable over SSH after" in vms["db-1"]["problems"][0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mounts", ["relative"], "mounts: 'relative' is not an absolute path"),
        ("app_check", "  ", "app_check must be a shell command"),
        ("app_check", "ok\x07", "app_check contains the control character U+0007"),
        ("boot_timeout", "soon", "boot_timeout must be a positive number of seconds"),
        ("max_parallel", 0, "max_parallel must be a positive whole number, got 0"),
    ],
)
def test_bad_settings_name_the_field_and_the_value(field: str, value: object, message: str) -> None:
    settings: dict[str, object] = {"mounts": ["/srv/data"], field: value}
    with pytest.raises(ValueError, match=re.escape(message)):
        VerifySpec.build(**settings)  # type: ignore[arg-type]
