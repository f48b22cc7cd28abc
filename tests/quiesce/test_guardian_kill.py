"""A freeze task killed with SIGKILL: no thaw task ever comes; the guardians thaw by themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.quiesce.conftest import assert_all_stalled, quiesce, unique_run_id

MAX_FREEZE_SECONDS = 5
GRACE = 5  # "a few seconds": the guardian's poll, fsfreeze -u and the writer's next write

# The freeze task as its own process: it freezes, reports, then hangs as a stuck worker would.
FREEZE_TASK = textwrap.dedent(
    """
    import json, sys, time
    from airflow.sdk import DAG
    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    conns, mounts, seconds, run_id = json.loads(sys.argv[1])
    with DAG("quiesce_test", schedule=None):
        op = QuiesceOperator(task_id="freeze", action="freeze", ssh_conn_ids=conns,
                             mounts=mounts, max_freeze_seconds=seconds)
    result = op.execute({"run_id": run_id})
    print("RESULT " + json.dumps(result), flush=True)
    time.sleep(3600)
    """
)


def test_sigkill_of_the_freeze_task_leaves_nothing_frozen(loops, writers, ssh_conns) -> None:
    conns = ssh_conns(3)
    run_id = unique_run_id("sigkill")
    mounts = {cid: [str(loops.make(f"kill{i}"))] for i, cid in enumerate(conns)}
    feed = [writers(Path(m[0])) for m in mounts.values()]
    spec = json.dumps([conns, mounts, MAX_FREEZE_SECONDS, run_id])
    task = subprocess.Popen(
        [sys.executable, "-c", FREEZE_TASK, spec],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert task.stdout is not None
        line = ""
        for line in task.stdout:
            if line.startswith("RESULT "):
                break
        assert line.startswith("RESULT "), "the freeze task ended without a result"
        frozen = json.loads(line[len("RESULT ") :])
        assert frozen["frozen_hosts"] == 3
    finally:
        task.send_signal(signal.SIGKILL)
        task.wait()
    killed = time.monotonic()
    assert_all_stalled(feed, 0.2)  # still frozen after the task died

    # Every filesystem is writable again within max_freeze_seconds + a few seconds.
    waiting = dict(enumerate(feed))
    sizes = {i: w.size() for i, w in waiting.items()}
    back: dict[int, float] = {}
    while waiting:
        for i, writer in list(waiting.items()):
            if writer.size() != sizes[i]:
                back[i] = time.monotonic() - killed
                del waiting[i]
        assert time.monotonic() - killed < MAX_FREEZE_SECONDS + GRACE, "still frozen"
        time.sleep(0.01)

    thawed = quiesce(
        "thaw",
        run_id=run_id,
        ssh_conn_ids=conns,
        mounts=mounts,
        failure_policy="continue_crash_consistent",
    )
    assert [h["fired_by"] for h in thawed["hosts"]] == ["deadline"] * 3
    assert all(h["guardian_fired"] for h in thawed["hosts"])
    assert thawed["consistency"] == "inconsistent"
    held = [h["seconds_frozen"] for h in thawed["hosts"]]
    assert all(0 < s <= MAX_FREEZE_SECONDS + 1 for s in held), held
    print(
        f"\nSIGKILL test: max_freeze_seconds {MAX_FREEZE_SECONDS}; seconds from SIGKILL to "
        f"writable per host {[round(back[i], 2) for i in sorted(back)]}; seconds frozen per "
        f"host (guardian clock) {held}"
    )
