"""QuiesceSession over a real sshd and real ext4: it releases over the connections it froze
with, and a release from another session (another task) reconnects and is idempotent."""

from __future__ import annotations

from tests.quiesce.conftest import assert_all_stalled, unique_run_id, write_finishes


def test_a_session_releases_over_its_own_connections(loops, writers, ssh_conns) -> None:
    from airflow_provider_skytap.quiesce.session import QuiesceSession
    from airflow_provider_skytap.quiesce.spec import QuiesceSpec, QuiesceTarget

    conns = ssh_conns(3)
    mounts = {cid: [str(loops.make(f"s{i}"))] for i, cid in enumerate(conns)}
    feed = [writers(loops.mounts[i]) for i in range(3)]
    spec = QuiesceSpec.build(mounts=mounts, max_freeze_seconds=60)
    targets = [QuiesceTarget(cid, cid, cid, cid) for cid in conns]
    run_id = unique_run_id("session")
    with QuiesceSession(spec, targets, dag_id="quiesce_test", run_id=run_id) as session:
        frozen = session.freeze()
        assert frozen.frozen_hosts == 3 and frozen.consistency == "application-consistent"
        clients = [h.hook.client for h in session.hosts]
        assert all(c is not None for c in clients)
        assert_all_stalled(feed)
        thawed = session.release()
        assert [h.hook.client for h in session.hosts] == clients  # no new login
    for writer in feed:
        writer.wait_progress()
    window = thawed.window()
    assert window["clock"] == "controller"
    assert window["seconds"] >= window["longest_host_seconds"] > 0
    assert thawed.consistency == "application-consistent"
    assert {h.guardian for h in thawed.hosts} == {"told"}
    # The safety net (another task, another session) finds the same guardians, changes nothing.
    with QuiesceSession(spec, targets, dag_id="quiesce_test", run_id=run_id) as later:
        again = later.release(freeze_report=frozen.to_xcom())
    assert {h.guardian for h in again.hosts} == {"finished"}
    assert again.consistency == "application-consistent"
    assert again.window()["clock"] == "controller"  # the freeze report places the freezes


def test_a_staged_arm_freezes_nothing_before_the_go_nor_when_the_controller_goes_away(
    loops, ssh_conns
) -> None:
    # arm --staged (what a session of several hosts sends): the guardian starts and says ready,
    # and the mount stays writable until the controller's go. A controller that goes away
    # instead (its input ends) leaves nothing frozen and no guardian behind.
    from airflow.providers.ssh.hooks.ssh import SSHHook

    from airflow_provider_skytap.quiesce import commands as qc

    (cid,) = ssh_conns(1)
    mount = loops.make("staged")
    gid = qc.guardian_id("quiesce_test", unique_run_id("staged"), cid)
    client = SSHHook(ssh_conn_id=cid).get_conn()
    try:
        _in, out, _err = client.exec_command(qc.install_command(sudo=False), timeout=60)
        assert out.channel.recv_exit_status() == 0
        args = qc.arm_args(
            gid,
            [str(mount)],
            profile="fsfreeze",
            options={},
            max_seconds=60,
            step_timeout=30,
            staged=True,
        )
        _in, out, _err = client.exec_command(qc.run_command("arm", args, sudo=False), timeout=60)
        assert out.readline() == qc.READY_LINE + "\n"
        assert write_finishes(mount / "before-the-go", timeout=5)
        out.channel.shutdown_write()  # no go: the controller went away
        report = qc.parse_report(out.read())
        assert out.channel.recv_exit_status() == 1
    finally:
        client.close()
    assert report["status"] == "cancelled"
    assert "not frozen" in report["error"]
    assert report["mount"] == [f"pending {mount}"]
    assert write_finishes(mount / "after", timeout=5)


def test_a_release_prepared_ahead_waits_for_the_release_and_close_leaves_the_freeze(
    loops, writers, ssh_conns
) -> None:
    # prepare_release starts each host's thaw during the copy; it thaws nothing until
    # release(). A session closed without releasing ends those thaws untouched: the freeze holds
    # until a release (here another session's, as the safety net's).
    from airflow_provider_skytap.quiesce.session import QuiesceSession
    from airflow_provider_skytap.quiesce.spec import QuiesceSpec, QuiesceTarget

    conns = ssh_conns(2, prefix="quiesce_ahead")
    mounts = {cid: [str(loops.make(f"a{i}"))] for i, cid in enumerate(conns)}
    feed = [writers(loops.mounts[i]) for i in range(2)]
    spec = QuiesceSpec.build(mounts=mounts, max_freeze_seconds=60)
    targets = [QuiesceTarget(cid, cid, cid, cid) for cid in conns]
    first, second = unique_run_id("ahead-1"), unique_run_id("ahead-2")
    with QuiesceSession(spec, targets, dag_id="quiesce_test", run_id=first) as session:
        session.freeze()
        session.prepare_release()
        assert_all_stalled(feed)
        thawed = session.release()
    for writer in feed:
        writer.wait_progress()
    assert thawed.consistency == "application-consistent"
    assert {h.guardian for h in thawed.hosts} == {"told"}
    with QuiesceSession(spec, targets, dag_id="quiesce_test", run_id=second) as session:
        session.freeze()
        session.prepare_release()
    assert_all_stalled(feed)
    with QuiesceSession(spec, targets, dag_id="quiesce_test", run_id=second) as later:
        again = later.release()
    for writer in feed:
        writer.wait_progress()
    assert again.consistency == "application-consistent"
    assert {h.guardian for h in again.hosts} == {"told"}


def test_a_connection_lost_during_the_copy_is_released_over_a_new_login(
    loops, writers, ssh_conns
) -> None:
    # The connections held through the copy drop (a network blip, sshd restarted): the thaws
    # started ahead end with them, and release() logs in again and thaws every host.
    from airflow_provider_skytap.quiesce.session import QuiesceSession
    from airflow_provider_skytap.quiesce.spec import QuiesceSpec, QuiesceTarget

    conns = ssh_conns(2, prefix="quiesce_drop")
    mounts = {cid: [str(loops.make(f"d{i}"))] for i, cid in enumerate(conns)}
    feed = [writers(loops.mounts[i]) for i in range(2)]
    spec = QuiesceSpec.build(mounts=mounts, max_freeze_seconds=60)
    targets = [QuiesceTarget(cid, cid, cid, cid) for cid in conns]
    with QuiesceSession(
        spec, targets, dag_id="quiesce_test", run_id=unique_run_id("drop")
    ) as session:
        session.freeze()
        session.prepare_release()
        lost = [h.hook.client for h in session.hosts]
        for client in lost:
            client.close()
        assert_all_stalled(feed)
        thawed = session.release()
        assert all(h.hook.client not in lost for h in session.hosts)  # logged in again
    for writer in feed:
        writer.wait_progress()
    assert thawed.consistency == "application-consistent"
    assert {h.guardian for h in thawed.hosts} == {"told"}
