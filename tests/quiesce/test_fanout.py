"""Many hosts at once, and the guardian's upkeep that must not grow with them (issue 6's fan-out).

bench/fanout.py measures the times; these tests check the behaviour the figures rest on.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import uuid
from pathlib import Path

from tests.quiesce.conftest import quiesce

STATE = Path("/run/skytap-quiesce")


def test_default_arms_more_hosts_than_the_old_limit_all_at_once(loops, ssh_conns, workdir) -> None:
    # Each host's pre-freeze step waits (bounded) until every host has reached it: it passes
    # only when all of them are being armed at the same time. With the old default of 8 at
    # once, the first 8 would wait for hosts that cannot start until they finish, and fail.
    n = 12
    conns = ssh_conns(n, prefix="quiesce_fan")
    mounts = {cid: [str(loops.make(f"fan{i}", size_mb=8))] for i, cid in enumerate(conns)}
    gate = workdir / f"gate-{uuid.uuid4().hex[:8]}"
    gate.mkdir()
    d = shlex.quote(str(gate))
    barrier = (
        f"mktemp -p {d} >/dev/null; i=0; "
        f'while [ "$(ls {d} | wc -l)" -lt {n} ]; do '
        '[ "$i" -ge 600 ] && { echo "not every host was armed at once" >&2; exit 1; }; '
        "sleep 0.05; i=$((i + 1)); done"
    )
    settings = {"mounts": mounts, "profile": "custom", "pre_freeze_command": barrier}
    try:
        frozen = quiesce("freeze", ssh_conn_ids=conns, max_freeze_seconds=120, **settings)
        assert frozen["frozen_hosts"] == n
    finally:
        thawed = quiesce("thaw", ssh_conn_ids=conns, **settings)
        shutil.rmtree(gate, ignore_errors=True)
    assert thawed["consistency"] == "application-consistent"


def test_preflight_prunes_week_old_records_and_keeps_the_rest(loops, ssh_conns) -> None:
    # Finished records older than a week go (one find for all of them); recent ones, and
    # records still without a result (a guardian holding a freeze), stay.
    STATE.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    old, recent, running = (STATE / f"prunetest-{kind}-{tag}" for kind in ("old", "new", "run"))
    for record in (old, recent, running):
        record.mkdir()
    for record in (old, recent):
        (record / "result").write_text("thawed\n")
    (running / "status").write_text("frozen\n")
    week_ago = time.time() - 8 * 86400
    os.utime(old / "result", (week_ago, week_ago))
    os.utime(running / "status", (week_ago, week_ago))
    conns = ssh_conns(1)
    mount = str(loops.make("p", size_mb=8))
    try:
        quiesce("freeze", ssh_conn_ids=conns, mounts=[mount], max_freeze_seconds=60)
        quiesce("thaw", ssh_conn_ids=conns, mounts=[mount])
        assert not old.exists()
        assert recent.exists()
        assert running.exists()
        assert (STATE / "lib").is_dir()
    finally:
        for record in (old, recent, running):
            shutil.rmtree(record, ignore_errors=True)
