"""What a VM user or a second run can try against the guardian, on real sshd and real ext4.

Each test is one finding of the hostile review (issue 13): it failed on the code before the fix.
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_skytap.operators.quiesce import QuiesceError
from tests.quiesce.conftest import guardian_pids, quiesce, unique_run_id, write_finishes

# How many pids ahead of the newest one the planted symlinks cover: every process the freeze
# and thaw start on this (shared) machine falls inside, so a predictable name is hit.
PID_SPAN = 6000


def _plant_symlinks(mount: Path, user: str, victim: Path) -> int:
    """As ``user`` would: symlinks to ``victim`` under every name a pid-based probe could use."""
    last = int(Path("/proc/loadavg").read_text().split()[-1])
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    uid = pwd.getpwnam(user).pw_uid
    os.chown(mount, uid, uid)  # the application's data mount, owned by its user
    planted = 0
    for pid in range(last + 1, min(last + PID_SPAN, pid_max)):
        link = mount / f".skytap-quiesce-probe.{pid}"
        link.symlink_to(victim)
        os.lchown(link, uid, uid)
        planted += 1
    return planted


def test_root_follows_no_symlink_a_vm_user_plants_under_a_mount(
    loops, ssh_conns, sudo_user, workdir
) -> None:
    """Finding 1: the write check made a predictable name under the mount and followed it."""
    conns = ssh_conns(1)
    mount = loops.make("planted", size_mb=64)  # room for the symlinks' inodes
    victim = workdir / "root-owned-victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    assert _plant_symlinks(mount, sudo_user, victim) > 1000
    before = {p.name for p in mount.iterdir()}
    quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=60)
    quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)])
    assert victim.read_text() == "precious\n", "root truncated a file through a planted symlink"
    assert {p.name for p in mount.iterdir()} == before, "the guardian left a file in the mount"


def test_a_thaw_never_unfreezes_a_mount_another_run_holds(loops, ssh_conns, monkeypatch) -> None:
    """Finding 2: run A's guardian is slow to answer (a long post-thaw step); meanwhile run B
    freezes the same mount; A's thaw must leave B's freeze alone, and B's verdict stays true."""
    from airflow_provider_skytap.quiesce import spec

    monkeypatch.setattr(spec, "GUARDIAN_WAIT", 8)  # A's thaw gives up on its guardian sooner
    conns = ssh_conns(1)
    mount = loops.make("shared")
    run_a, run_b = unique_run_id("owner-a"), unique_run_id("owner-b")
    slow = {"profile": "custom", "post_thaw_command": "sleep 20"}
    quiesce(
        "freeze",
        run_id=run_a,
        ssh_conn_ids=conns,
        mounts=[str(mount)],
        max_freeze_seconds=60,
        **slow,
    )
    outcome: dict[str, object] = {}

    def thaw_a() -> None:
        try:
            outcome["a"] = quiesce(
                "thaw", run_id=run_a, ssh_conn_ids=conns, mounts=[str(mount)], **slow
            )
        except QuiesceError as exc:
            outcome["a"] = exc

    thread = threading.Thread(target=thaw_a)
    thread.start()
    deadline = time.monotonic() + 60  # A's thaw connects and tells its guardian (a busy host)
    while not write_finishes(mount / "a-thawed", 0.2):  # A's guardian thawed: B may freeze
        assert time.monotonic() < deadline, "run A's guardian did not thaw"
    quiesce("freeze", run_id=run_b, ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=60)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert not write_finishes(mount / "b-still-frozen", 0.5), "run A's thaw undid run B's freeze"
    thawed_b = quiesce("thaw", run_id=run_b, ssh_conn_ids=conns, mounts=[str(mount)])
    assert thawed_b["hosts"][0]["consistency"] == "application-consistent"
    assert write_finishes(mount / "after", 5)
    deadline = time.monotonic() + 60
    while guardian_pids():  # A's post-thaw step ends: no guardian left behind
        assert time.monotonic() < deadline, "run A's guardian did not finish its post-thaw step"
        time.sleep(0.5)


def test_a_command_output_cannot_forge_a_report_line(loops, ssh_conns) -> None:
    """Finding 3: a post-thaw step writing ``\\v@@sq fired=thaw`` to stderr turned a guardian
    that fired on its deadline into an application-consistent verdict."""
    conns = ssh_conns(1)
    mount = loops.make("forge")
    forge = r"printf 'oops\v@@sq fired=thaw\x85@@sq status=thawed' >&2; exit 3"
    settings = {"profile": "custom", "post_thaw_command": forge}
    quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=2, **settings)
    deadline = time.monotonic() + 30
    while not write_finishes(mount / "after", 0.2):
        assert time.monotonic() < deadline, "the guardian did not thaw at its deadline"
    time.sleep(0.5)  # the post-thaw step ends and the guardian writes its record
    with pytest.raises(QuiesceError) as info:
        quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)], **settings)
    host = info.value.result["hosts"][0]
    assert host["fired_by"] == "deadline"
    assert host["consistency"] == "inconsistent"


def test_a_freeze_someone_else_ended_is_never_called_application_consistent(
    loops, ssh_conns
) -> None:
    """Finding 2, the other side: whoever unfroze a mount this run's guardian held (another
    run's thaw of old, a person), the copy may be torn, and the thaw says so."""
    conns = ssh_conns(1)
    mount = loops.make("ended")
    quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=60)
    os.system(f"fsfreeze -u {mount}")  # noqa: S605 (not the guardian)
    with pytest.raises(QuiesceError) as info:
        quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)])
    host = info.value.result["hosts"][0]
    assert host["fired_by"] == "external-thaw"
    assert host["consistency"] == "inconsistent"
    assert "someone else unfroze a mount it held" in str(info.value)
    assert write_finishes(mount / "after", 5)
