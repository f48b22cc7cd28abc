"""QuiesceOperator over a real sshd, freezing real loop-mounted ext4 with real writers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_skytap.operators.quiesce import QuiesceError
from tests.quiesce.conftest import (
    Sshd,
    assert_all_stalled,
    guardian_pids,
    quiesce,
    set_connection,
    unique_run_id,
    write_finishes,
)

STATE = Path("/run/skytap-quiesce")


def guardian_file(result: dict, name: str, host: int = 0) -> str:
    """A file of the guardian's record, once it has finished (it writes ``result`` last)."""
    state = STATE / result["hosts"][host]["guardian_id"]
    deadline = time.monotonic() + 10
    while not (state / "result").exists():
        assert time.monotonic() < deadline, f"the guardian in {state} did not finish"
        time.sleep(0.05)
    return (state / name).read_text().strip()


def test_eight_hosts_freeze_in_parallel_and_thaw(loops, writers, ssh_conns) -> None:
    conns = ssh_conns(8)
    mounts = {cid: [str(loops.make(f"host{i}"))] for i, cid in enumerate(conns)}
    feed = [writers(Path(m[0])) for m in mounts.values()]

    frozen = quiesce(
        "freeze", ssh_conn_ids=conns, mounts=mounts, max_freeze_seconds=60, max_parallel=8
    )
    assert frozen["frozen_hosts"] == 8
    assert frozen["consistency"] == "application-consistent"
    assert {h["status"] for h in frozen["hosts"]} == {"frozen"}
    assert_all_stalled(feed)

    thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=mounts)
    for writer in feed:
        writer.wait_progress()
    assert thawed["consistency"] == "application-consistent"
    window = thawed["freeze_window"]
    per_host = [h["seconds_frozen"] for h in thawed["hosts"]]
    assert all(h["guardian"] == "told" and not h["guardian_fired"] for h in thawed["hosts"])
    assert window["seconds"] >= max(per_host) > 0
    assert window["clock"] == "per-host"  # a thaw in another task, given no freeze report
    print(f"\n8 hosts: freeze window {window} s; seconds frozen per host {per_host}")


def test_thaw_is_idempotent_and_reverse_ordered(loops, ssh_conns) -> None:
    conns = ssh_conns(1)
    a, b = str(loops.make("a")), str(loops.make("b"))
    quiesce("freeze", ssh_conn_ids=conns, mounts=[a, b], max_freeze_seconds=60)
    first = quiesce("thaw", ssh_conn_ids=conns, mounts=[a, b])
    log = (STATE / first["hosts"][0]["guardian_id"] / "log").read_text().splitlines()
    assert log == [f"@@sq frozen={a}", f"@@sq frozen={b}", f"@@sq thawed={b}", f"@@sq thawed={a}"]
    again = quiesce("thaw", ssh_conn_ids=conns, mounts=[a, b])
    host = again["hosts"][0]
    assert host["guardian"] == "finished"
    assert host["mounts"] == {a: "thawed-by-guardian", b: "thawed-by-guardian"}
    assert host["consistency"] == "application-consistent"


def test_thaw_without_a_guardian_of_this_run_leaves_the_mounts_alone(loops, ssh_conns) -> None:
    # This run never armed a guardian here (its freeze failed before arming, on another
    # host): a mount someone else froze stays theirs, the others are not touched.
    conns = ssh_conns(1)
    a, b = loops.make("a"), loops.make("b")
    os.system(f"fsfreeze -f {a}")  # noqa: S605
    result = quiesce("thaw", ssh_conn_ids=conns, mounts=[str(a), str(b)])
    host = result["hosts"][0]
    assert host["guardian"] == "none"
    assert host["mounts"] == {str(a): "not-armed", str(b): "not-armed"}
    assert host["consistency"] == "crash-consistent"
    assert not write_finishes(a / "after", 0.5)  # still the other freezer's
    assert write_finishes(b / "after", 5)
    os.system(f"fsfreeze -u {a}")  # noqa: S605


def test_sudo_user_freezes_and_thaws(loops, writers, ssh_conns, sudo_user) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_sudo")
    mount = loops.make("s")
    writer = writers(mount)
    frozen = quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=60)
    assert frozen["hosts"][0]["status"] == "frozen"
    writer.assert_stalled()
    thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)])
    writer.wait_progress()
    assert thawed["hosts"][0]["consistency"] == "application-consistent"


def test_a_non_root_user_without_sudo_is_a_clear_error(loops, ssh_conns, sudo_user) -> None:
    conns = ssh_conns(1, user=sudo_user, prefix="quiesce_nosudo")
    mount = loops.make("n")
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts=[str(mount)],
            max_freeze_seconds=60,
            use_sudo=False,
        )
    message = str(info.value)
    assert (
        f"quiesce_nosudo_0: preflight failed (exit 2): profile 'fsfreeze' freezes filesystems, "
        f"which needs root, and this runs as {sudo_user} without sudo" in message
    )
    assert "where filesystems cannot be frozen, use profile 'app'" in message


def test_partial_freeze_failure_thaws_the_hosts_that_froze(loops, writers, ssh_conns) -> None:
    conns = ssh_conns(3)
    mounts = {cid: [str(loops.make(f"p{i}"))] for i, cid in enumerate(conns)}
    feed = [writers(Path(m[0])) for m in mounts.values()]
    (Path(mounts[conns[2]][0]) / "refuse-freeze").touch()
    # The third host's pre-freeze step fails; the other two freeze in parallel meanwhile.
    refuse = 'for m in $SKYTAP_QUIESCE_MOUNTS; do [ ! -e "$m/refuse-freeze" ] || exit 7; done'
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts=mounts,
            max_freeze_seconds=60,
            profile="custom",
            pre_freeze_command=refuse,
        )
    message = str(info.value)
    assert (
        "quiesce_host_2: pre-freeze failed (exit 1): custom pre-freeze failed (exit 7)" in message
    )
    assert "thawed the 3 host(s) again" in message
    hosts = {h["host"]: h for h in info.value.result["hosts"]}
    for cid in conns[:2]:
        assert hosts[cid]["frozen_at"] is not None  # they did freeze ...
        assert hosts[cid]["status"] == "thawed"  # ... and were thawed again
        assert guardian_file(info.value.result, "fired", conns.index(cid)) == "rollback"
    for writer in feed:
        writer.wait_progress()


def test_a_mount_frozen_meanwhile_by_someone_else_is_left_to_them(loops, ssh_conns) -> None:
    conns = ssh_conns(1)
    a, x = str(loops.make("a")), str(loops.make("x"))
    # Another freezer takes x between preflight and our freeze: ours gets "busy".
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts=[a, x],
            max_freeze_seconds=60,
            profile="custom",
            pre_freeze_command=f"fsfreeze -f {x}",
        )
    assert "freeze failed (exit 1): fsfreeze -f " in str(info.value)
    assert "Device or resource busy" in str(info.value)
    assert info.value.result["hosts"][0]["mounts"] == {a: "thawed", x: "busy"}
    assert write_finishes(Path(a) / "after", 5)
    assert not write_finishes(Path(x) / "after", 0.5)  # still the other freezer's


def test_preflight_refuses_an_already_frozen_mount_and_freezes_nothing(
    loops, writers, ssh_conns
) -> None:
    conns = ssh_conns(2)
    good, taken = loops.make("good"), loops.make("taken")
    writer = writers(good)
    os.system(f"fsfreeze -f {taken}")  # noqa: S605
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts={conns[0]: [str(good)], conns[1]: [str(taken)]},
            max_freeze_seconds=60,
        )
    assert f"quiesce_host_1: preflight failed (exit 1): {taken} is already frozen" in str(
        info.value
    )
    assert "nothing was frozen" in str(info.value)
    writer.wait_progress()  # the good host never froze


def test_continue_crash_consistent_goes_on_without_the_failed_host(loops, ssh_conns) -> None:
    conns = ssh_conns(2)
    good = str(loops.make("good"))
    missing = str(loops.root / "not-a-mount")
    Path(missing).mkdir()
    mounts = {conns[0]: [good], conns[1]: [missing]}
    frozen = quiesce(
        "freeze",
        ssh_conn_ids=conns,
        mounts=mounts,
        max_freeze_seconds=60,
        failure_policy="continue_crash_consistent",
    )
    assert frozen["consistency"] == "crash-consistent"
    assert frozen["frozen_hosts"] == 1
    bad = frozen["hosts"][1]
    assert bad["status"] == "not-frozen" and "is not a mount point" in bad["error"]
    thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=mounts)
    levels = [h["consistency"] for h in thawed["hosts"]]
    assert levels == ["application-consistent", "crash-consistent"]
    assert thawed["consistency"] == "crash-consistent"


def freeze_one(loops, writers, ssh_conns, name: str, seconds: int = 60):
    """One host, one mount with a writer, frozen: (conn ids, mount, writer, freeze result)."""
    conns = ssh_conns(1)
    mount = loops.make(name)
    writer = writers(mount)
    frozen = quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=seconds)
    return conns, mount, writer, frozen


def test_guardian_deadline_thaws_and_the_thaw_says_inconsistent(loops, writers, ssh_conns) -> None:
    conns, mount, writer, frozen = freeze_one(loops, writers, ssh_conns, "d", seconds=2)
    writer.assert_stalled(0.3)
    writer.wait_progress(timeout=2 + 5)  # the guardian's deadline, then it thaws by itself
    assert guardian_file(frozen, "fired") == "deadline"
    with pytest.raises(QuiesceError) as info:
        quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)])
    # Final: every host is thawed and a retry would read the same records, so Airflow fails
    # the task without retrying it (in the soak, two retries only delayed the failed run).
    assert isinstance(info.value, AirflowFailException)
    assert "the guardian thawed by itself (deadline)" in str(info.value)
    assert "not application-consistent" in str(info.value)
    host = info.value.result["hosts"][0]
    assert host["guardian_fired"] and host["consistency"] == "inconsistent"
    relaxed = quiesce(
        "thaw",
        ssh_conn_ids=conns,
        mounts=[str(mount)],
        failure_policy="continue_crash_consistent",
    )
    assert relaxed["consistency"] == "inconsistent"


def test_guardian_thaws_on_a_signal(loops, writers, ssh_conns) -> None:
    _, _, writer, frozen = freeze_one(loops, writers, ssh_conns, "sig")
    os.kill(frozen["hosts"][0]["pid"], signal.SIGTERM)
    writer.wait_progress()
    assert guardian_file(frozen, "fired") == "signal"


def test_retry_of_the_freeze_releases_the_earlier_try_first(loops, writers, ssh_conns) -> None:
    conns = ssh_conns(1)
    mount = loops.make("r")
    first = quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=60)
    second = quiesce("freeze", ssh_conn_ids=conns, mounts=[str(mount)], max_freeze_seconds=60)
    gid = first["hosts"][0]["guardian_id"]
    assert second["hosts"][0]["guardian_id"] == gid
    assert (STATE / f"{gid}.prev" / "fired").read_text().strip() == "retry"
    assert second["hosts"][0]["status"] == "frozen"
    quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)])
    assert write_finishes(mount / "after", 5)


def test_on_kill_of_the_freeze_task_thaws(loops, ssh_conns) -> None:
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    conns = ssh_conns(2)
    mounts = {cid: [str(loops.make(f"k{i}"))] for i, cid in enumerate(conns)}
    with DAG("quiesce_test", schedule=None):
        op = QuiesceOperator(
            task_id="freeze",
            action="freeze",
            ssh_conn_ids=conns,
            mounts=mounts,
            max_freeze_seconds=60,
        )
    op.execute({"run_id": unique_run_id("on-kill")})  # type: ignore[arg-type]
    op.on_kill()
    for paths in mounts.values():
        assert write_finishes(Path(paths[0]) / "after", 5)


def test_injection_in_mount_names_runs_nothing(loops, ssh_conns, workdir) -> None:
    conns = ssh_conns(1)
    marker = workdir / "pwned"
    attempts = [
        f"/$(touch {marker})",
        f"/`touch {marker}`",
        f"/x; touch {marker}",
        f"/x' ; touch {marker}; '",
        f'/x" && touch {marker} && "',
        f"/x | touch {marker}",
    ]
    for attempt in attempts:
        with pytest.raises(QuiesceError, match="does not exist"):
            quiesce("freeze", ssh_conn_ids=conns, mounts=[attempt], max_freeze_seconds=5)
        quiesce("thaw", ssh_conn_ids=conns, mounts=[attempt])
    assert not marker.exists()
    # A real mount whose name needs quoting works end to end.
    odd = loops.root / "it's a $mount"
    odd.mkdir()
    os.system(f"mount --bind {loops.make('plain')} {_sh(odd)}")  # noqa: S605
    loops.mounts.append(odd)
    result = quiesce("freeze", ssh_conn_ids=conns, mounts=[str(odd)], max_freeze_seconds=60)
    assert result["hosts"][0]["mounts"] == {str(odd): "frozen"}
    quiesce("thaw", ssh_conn_ids=conns, mounts=[str(odd)])


def test_injection_in_profile_options_runs_nothing(loops, ssh_conns, workdir) -> None:
    conns = ssh_conns(1)
    marker = workdir / "pwned-opt"
    with pytest.raises(QuiesceError, match="pre-freeze failed"):
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts=[str(loops.make("o"))],
            max_freeze_seconds=5,
            profile="postgres",
            profile_options={
                "os_user": "root",
                "database": f"x; touch {marker}",
                "host": f"$(touch {marker})",
            },
            step_timeout=10,
        )
    assert not marker.exists()


def test_environment_id_resolves_the_vms_through_skytap(
    loops, writers, sshd: Sshd, sim, monkeypatch
) -> None:
    set_connection(
        monkeypatch, "skytap_q", "skytap", host=sim.url, login=sim.username, password=sim.token
    )
    sshd.connect(monkeypatch, "ssh_vms")  # user and key; host and port come from Skytap
    closed = _closed_port()
    sim.admin.reset(seed=_seed(sim, {"web-1": sshd.port, "db-1": sshd.port, "old-1": closed}))
    mounts = {"web-1": [str(loops.make("web"))], "db-1": [str(loops.make("db"))]}
    feed = [writers(Path(m[0])) for m in mounts.values()]
    common = {
        "environment_id": "1001",
        "vm_names": ["web-1", "db-1"],
        "ssh_conn_id": "ssh_vms",
        "skytap_conn_id": "skytap_q",
        "mounts": mounts,
    }
    frozen = quiesce("freeze", max_freeze_seconds=60, **common)
    assert [h["host"] for h in frozen["hosts"]] == [
        f"web-1 (VM 2001 at 127.0.0.1:{sshd.port})",
        f"db-1 (VM 2002 at 127.0.0.1:{sshd.port})",
    ]
    assert [h["target"] for h in frozen["hosts"]] == ["env1001-vm2001", "env1001-vm2002"]
    assert_all_stalled(feed)
    quiesce("thaw", **common)
    for writer in feed:
        writer.wait_progress()

    # Without vm_names every VM is a target; one that SSH cannot reach is named in the error.
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            max_freeze_seconds=60,
            ssh_connect_attempts=1,
            **{**common, "vm_names": None, "mounts": {**mounts, "old-1": ["/data"]}},
        )
    assert f"old-1 (VM 2003 at 127.0.0.1:{closed}): preflight (ssh connect) failed" in str(
        info.value
    )
    assert "nothing was frozen" in str(info.value)


def _seed(sim, vms: dict[str, int]) -> dict:
    return {
        "users": [{"username": sim.username, "token": sim.token}],
        "environments": [
            {
                "id": "1001",
                "name": "erp-prod",
                "runstate": "running",
                "vms": [
                    {
                        "id": str(2001 + i),
                        "name": name,
                        "interfaces": [
                            {
                                "ip": f"10.0.0.{11 + i}",
                                "services": [
                                    {
                                        "internal_port": 22,
                                        "external_ip": "127.0.0.1",
                                        "external_port": port,
                                    }
                                ],
                            }
                        ],
                    }
                    for i, (name, port) in enumerate(vms.items())
                ],
            }
        ],
    }


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sh(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def test_freeze_window_is_timed_on_the_vm(loops, ssh_conns) -> None:
    conns = ssh_conns(1)
    mount = str(loops.make("t"))
    quiesce("freeze", ssh_conn_ids=conns, mounts=[mount], max_freeze_seconds=60)
    time.sleep(1)
    thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=[mount])
    assert thawed["hosts"][0]["seconds_frozen"] >= 1
    assert thawed["freeze_window"]["seconds"] == thawed["hosts"][0]["seconds_frozen"]


def test_thaw_takes_over_when_guardian_and_backstop_are_both_killed(
    loops, writers, ssh_conns
) -> None:
    conns, mount, writer, frozen = freeze_one(loops, writers, ssh_conns, "both")
    for pid in sorted(guardian_pids(), key=lambda p: p != frozen["hosts"][0]["pid"]):
        os.kill(pid, signal.SIGKILL)  # backstop first: it would thaw for a dead guardian
    writer.assert_stalled(1.5)  # nobody on the VM holds or thaws it any more
    thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)])
    writer.wait_progress()
    host = thawed["hosts"][0]
    assert (host["guardian"], host["fired_by"], host["guardian_fired"]) == ("dead", "thaw", False)
    assert host["mounts"] == {str(mount): "thawed"}
    assert host["consistency"] == "application-consistent"
