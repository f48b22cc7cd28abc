"""Profile app over a real sshd, as a user without root or sudo: plain directories, and an
application (a writer process of that user) paused with kill -STOP and resumed with kill -CONT.

Nothing here freezes a filesystem, so these tests need no loop devices or fsfreeze: only the
test sshd and the ``skytapq`` user (logged in with use_sudo=False).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skytap.operators.quiesce import QuiesceError
from tests.quiesce.conftest import Writer, assert_all_stalled, guardian_pids, quiesce

ROOT_STATE = Path("/run/skytap-quiesce")
# The application: appends a line every 10 ms (echo is a builtin: the shell itself writes).
APP = 'while :; do echo x >>"$1"; sleep 0.01; done'
# Pause and resume every application whose directory this host lists (one pid file in each).
PAUSE = 'for m in $SKYTAP_QUIESCE_MOUNTS; do kill -STOP "$(cat "$m/app.pid")" || exit 1; done'
RESUME = 'for m in $SKYTAP_QUIESCE_MOUNTS; do kill -CONT "$(cat "$m/app.pid")" || exit 1; done'


def own_dir(user: str) -> Path:
    """Where the VM side keeps the script and the records of a user other than root."""
    return Path(f"/tmp/skytap-quiesce-{pwd.getpwnam(user).pw_uid}")


def stopped(pid: int) -> bool:
    """Whether the process is stopped (state T: SIGSTOP)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def record(user: str, result: dict[str, Any], name: str, host: int = 0) -> str:
    """A file of the guardian's record in the user's own dir, once it has finished."""
    state = own_dir(user) / result["hosts"][host]["guardian_id"]
    deadline = time.monotonic() + 10
    while not (state / "result").exists():
        assert time.monotonic() < deadline, f"the guardian in {state} did not finish"
        time.sleep(0.05)
    return (state / name).read_text().strip()


@pytest.fixture
def app_dirs(sudo_user: str, workdir: Path) -> Iterator[Callable[[str], Path]]:
    """``app_dirs(name)``: a plain directory (no mount point) owned by the app's user."""
    root = Path(tempfile.mkdtemp(prefix="app-", dir=workdir))
    root.chmod(0o755)
    user = pwd.getpwnam(sudo_user)

    def make(name: str) -> Path:
        path = root / name
        path.mkdir()
        os.chown(path, user.pw_uid, user.pw_gid)
        return path

    try:
        yield make
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def apps(sudo_user: str) -> Iterator[Callable[[Path], Writer]]:
    """``apps(dir)``: the application, run as the app's user, writing to ``dir/app.log``; its
    pid in ``dir/app.pid`` for the pause and resume commands."""
    started: list[Writer] = []

    def start(directory: Path) -> Writer:
        log = directory / "app.log"
        proc = subprocess.Popen(["sh", "-c", APP, "app", str(log)], user=sudo_user)
        (directory / "app.pid").write_text(f"{proc.pid}\n")
        writer = Writer(log, proc)
        started.append(writer)
        deadline = time.monotonic() + 10
        while not log.exists():
            assert time.monotonic() < deadline, "the application did not start"
            time.sleep(0.01)
        writer.wait_progress()
        return writer

    try:
        yield start
    finally:
        for writer in started:
            writer.proc.kill()  # SIGKILL ends a stopped process too
            writer.proc.wait(timeout=30)


def app_task(conns: list[str], mounts: Any, **kwargs: Any) -> dict[str, Any]:
    """The arguments both tasks share: profile app as the SSH user, without sudo."""
    return {
        "ssh_conn_ids": conns,
        "mounts": mounts,
        "profile": "app",
        "pre_freeze_command": PAUSE,
        "post_thaw_command": RESUME,
        "use_sudo": False,
        **kwargs,
    }


def test_app_pauses_and_resumes_the_application_without_root(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_app")
    directory = app_dirs("data")
    app = apps(directory)
    task = app_task(conns, [str(directory)])

    frozen = quiesce("freeze", max_freeze_seconds=60, **task)
    host = frozen["hosts"][0]
    assert (host["status"], host["consistency"]) == ("frozen", "application-consistent")
    assert host["mounts"] == {str(directory): "paused"}
    assert stopped(app.proc.pid)
    app.assert_stalled()

    # The guardian runs as the user, and keeps everything in the user's own dir, made 0700.
    uid = pwd.getpwnam(sudo_user).pw_uid
    status = Path(f"/proc/{host['pid']}/status").read_text()
    assert f"\nUid:\t{uid}\t" in status
    state = own_dir(sudo_user)
    info = state.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (uid, 0o700)
    assert (state / host["guardian_id"] / "status").read_text().strip() == "frozen"
    assert list((state / "lib").glob("*.sh"))
    assert not (ROOT_STATE / host["guardian_id"]).exists()

    time.sleep(0.5)
    thawed = quiesce("thaw", **task)
    app.wait_progress()
    assert not stopped(app.proc.pid)
    host = thawed["hosts"][0]
    assert (host["guardian"], host["fired_by"], host["guardian_fired"]) == ("told", "thaw", False)
    assert host["mounts"] == {str(directory): "resumed-by-guardian"}
    assert host["consistency"] == thawed["consistency"] == "application-consistent"
    assert host["seconds_frozen"] >= 0.5
    assert host["exit_codes"]["pre_freeze"] == host["exit_codes"]["post_thaw"] == 0
    assert record(sudo_user, thawed, "result") == "thawed"
    assert not (ROOT_STATE / host["guardian_id"]).exists()

    # Idempotent: a second thaw finds the record and leaves the application running.
    again = quiesce("thaw", **task)["hosts"][0]
    assert (again["guardian"], again["consistency"]) == ("finished", "application-consistent")
    app.wait_progress()


def test_app_the_guardians_deadline_resumes_and_the_thaw_says_inconsistent(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_app")
    directory = app_dirs("late")
    app = apps(directory)
    task = app_task(conns, [str(directory)])
    frozen = quiesce("freeze", max_freeze_seconds=2, **task)
    app.assert_stalled(0.3)
    app.wait_progress(timeout=2 + 5)  # the deadline: the guardian resumes it by itself
    assert not stopped(app.proc.pid)
    assert record(sudo_user, frozen, "fired") == "deadline"

    with pytest.raises(QuiesceError) as info:
        quiesce("thaw", **task)
    assert "the guardian thawed by itself (deadline)" in str(info.value)
    assert "not application-consistent" in str(info.value)
    host = info.value.result["hosts"][0]
    assert (host["fired_by"], host["guardian_fired"]) == ("deadline", True)
    assert host["consistency"] == "inconsistent"
    assert 1.5 <= host["seconds_frozen"] <= 2 + 1


def test_app_a_failed_pause_on_one_host_resumes_the_other(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(2, user=sudo_user, prefix="quiesce_app")
    mounts = {cid: [str(app_dirs(f"h{i}"))] for i, cid in enumerate(conns)}
    feed = [apps(Path(paths[0])) for paths in mounts.values()]
    (Path(mounts[conns[1]][0]) / "refuse").touch()
    # The second host's pause stops its application, then fails: a half-done pause.
    refuse = '; for m in $SKYTAP_QUIESCE_MOUNTS; do [ ! -e "$m/refuse" ] || exit 7; done'
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            max_freeze_seconds=60,
            **app_task(conns, mounts, pre_freeze_command=PAUSE + refuse),
        )
    message = str(info.value)
    assert (
        "quiesce_app_1: pre-freeze failed (exit 1): app pre-freeze (the pause) failed (exit 7)"
        in message
    )
    assert "thawed the 2 host(s) again" in message
    hosts = {h["host"]: h for h in info.value.result["hosts"]}
    paused = hosts[conns[0]]
    assert paused["frozen_at"] is not None  # it did pause ...
    assert paused["status"] == "thawed"  # ... and was resumed again
    assert record(sudo_user, info.value.result, "fired") == "rollback"
    assert hosts[conns[1]]["frozen_at"] is None  # its pause failed, and was resumed all the same
    for app in feed:
        app.wait_progress()
        assert not stopped(app.proc.pid)


def test_app_the_backstop_resumes_when_the_guardian_is_killed(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(2, user=sudo_user, prefix="quiesce_app")
    mounts = {cid: [str(app_dirs(f"k{i}"))] for i, cid in enumerate(conns)}
    feed = [apps(Path(paths[0])) for paths in mounts.values()]
    task = app_task(conns, mounts)
    frozen = quiesce("freeze", max_freeze_seconds=60, **task)
    assert frozen["frozen_hosts"] == 2
    assert_all_stalled(feed)
    # The guardian and its deadline timer die, no trap runs: the backstop must act.
    os.killpg(frozen["hosts"][0]["pid"], signal.SIGKILL)
    feed[0].wait_progress(timeout=5)
    assert stopped(feed[1].proc.pid)  # the other host still holds its pause
    with pytest.raises(QuiesceError) as info:
        quiesce("thaw", **task)
    assert "the guardian thawed by itself (guardian-died)" in str(info.value)
    levels = [h["consistency"] for h in info.value.result["hosts"]]
    assert levels == ["inconsistent", "application-consistent"]
    for app in feed:
        app.wait_progress()


def test_app_refuses_a_state_dir_that_others_could_change(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_app")
    directory = app_dirs("guarded")
    app = apps(directory)
    task = app_task(conns, [str(directory)])
    state = own_dir(sudo_user)
    user = pwd.getpwnam(sudo_user)
    if not state.exists():
        state.mkdir(mode=0o700)
        os.chown(state, user.pw_uid, user.pw_gid)
    try:
        state.chmod(0o770)
        with pytest.raises(QuiesceError) as info:
            quiesce("freeze", max_freeze_seconds=60, **task)
        assert (
            f"quiesce_app_0: preflight failed (exit 1): {state} may be written by its group or "
            "others (mode 770): refusing to keep the guardian script and its records there"
        ) in str(info.value)
        state.chmod(0o700)
        os.chown(state, 0, 0)
        with pytest.raises(QuiesceError) as info:
            quiesce("freeze", max_freeze_seconds=60, **task)
        assert (f"{state} belongs to uid 0, not to this user (uid {user.pw_uid}): refusing") in str(
            info.value
        )
        assert "nothing was frozen" in str(info.value)
    finally:
        os.chown(state, user.pw_uid, user.pw_gid)
        state.chmod(0o700)
    assert not stopped(app.proc.pid)
    app.wait_progress()


def test_app_thaw_resumes_when_guardian_and_backstop_are_both_killed(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_app")
    directory = app_dirs("both")
    app = apps(directory)
    task = app_task(conns, [str(directory)])
    frozen = quiesce("freeze", max_freeze_seconds=60, **task)
    pid = frozen["hosts"][0]["pid"]
    backstops = [each for each in guardian_pids() if each != pid]
    for each in backstops:
        os.kill(each, signal.SIGKILL)  # first: it would resume for a dead guardian
    os.killpg(pid, signal.SIGKILL)  # the guardian (its own session) and its deadline timer
    app.assert_stalled(1.5)  # nobody on the VM holds or ends the pause any more
    thawed = quiesce("thaw", **task)
    app.wait_progress()
    host = thawed["hosts"][0]
    assert (host["guardian"], host["fired_by"], host["guardian_fired"]) == ("dead", "thaw", False)
    assert host["mounts"] == {str(directory): "resumed"}
    assert host["consistency"] == "application-consistent"


def test_app_a_failed_resume_fails_the_thaw_and_a_retry_resumes(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_app")
    directory = app_dirs("stuck")
    app = apps(directory)
    blocked = directory / "no-resume"
    blocked.touch()
    wait = 'for m in $SKYTAP_QUIESCE_MOUNTS; do [ ! -e "$m/no-resume" ] || exit 5; done; '
    task = app_task(conns, [str(directory)], post_thaw_command=wait + RESUME)
    quiesce("freeze", max_freeze_seconds=60, **task)
    with pytest.raises(QuiesceError) as info:
        quiesce("thaw", **task)
    assert (
        "quiesce_app_0: post-thaw failed (exit 1): app post-thaw (the resume) failed (exit 5)"
    ) in str(info.value)
    assert "the application may still be paused" in str(info.value)
    assert stopped(app.proc.pid)
    blocked.unlink()
    retried = quiesce("thaw", **task)  # the thaw task's retry tries the resume again
    app.wait_progress()
    host = retried["hosts"][0]
    assert (host["guardian"], host["mounts"]) == ("finished", {str(directory): "resumed"})
    assert host["exit_codes"]["post_thaw"] == 0
    assert host["consistency"] == "application-consistent"


def test_app_preflight_checks_each_directory_and_pauses_nothing(
    app_dirs, apps, ssh_conns, sudo_user
) -> None:
    conns = ssh_conns(2, user=sudo_user, prefix="quiesce_app")
    good = app_dirs("good")
    app = apps(good)
    locked = good.parent / "root-only"
    locked.mkdir(mode=0o755)  # root's: the app's user cannot write there
    for other, message in [
        (good.parent / "missing", "does not exist (or is not a directory)"),
        (locked, f"is not writable by {sudo_user}"),
    ]:
        with pytest.raises(QuiesceError) as info:
            quiesce(
                "freeze",
                max_freeze_seconds=60,
                **app_task(conns, {conns[0]: [str(good)], conns[1]: [str(other)]}),
            )
        assert f"quiesce_app_1: preflight failed (exit 1): {other} {message}" in str(info.value)
        assert "nothing was frozen" in str(info.value)
        assert not stopped(app.proc.pid)


def test_app_as_root_keeps_its_records_in_run(app_dirs, apps, ssh_conns, sudo_user) -> None:
    conns = ssh_conns(1, prefix="quiesce_app_root")  # root: no sudo, no per-user dir
    directory = app_dirs("rooted")
    app = apps(directory)
    task = {**app_task(conns, [str(directory)]), "use_sudo": None}
    frozen = quiesce("freeze", max_freeze_seconds=60, **task)
    gid = frozen["hosts"][0]["guardian_id"]
    assert stopped(app.proc.pid)
    assert (ROOT_STATE / gid / "profile").read_text().strip() == "app"
    assert not (own_dir(sudo_user) / gid).exists()
    thawed = quiesce("thaw", **task)
    app.wait_progress()
    assert thawed["consistency"] == "application-consistent"
