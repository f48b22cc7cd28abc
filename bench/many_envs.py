"""Issue 6, item 5: 20 backups started together under Skytap's rate limit and busy locks.

The simulator is seeded with 20 running environments and answers 429 past 5 requests per
second for the one API user (``rate_limit_per_s`` 5) and 423 while a copy's source is busy
(``source_lock``). Each backup is the nightly DAG's Skytap half, run in-process in its own
thread, all 20 threads released together by a barrier:

    LiveCloneOperator (save as template, no wait) -> CloneCompleteSensor (poke mode, 2 s
    growing to 5 s, as frozen_copy() builds it) -> CopyTemplateToRegionOperator (one DR
    region, deferrable; the deferral run as the triggerer runs it: serialized, rebuilt, run to
    its event, resumed) -> PruneBackupsOperator (keep 7)

Reported: whether all finished, duplicates (more than one live template per name and region),
failures, 429s and 423s from the simulator's request log, requests per backup, and the total
time against its lower bound: the larger of (requests answered other than 429 / 5 per s) and
the copy chain (a save, then the region copies, which Skytap runs one after another per target
region).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import Stopwatch, fmt, machine, summary, table, write_section

NAME = "many_envs"
TITLE = "5. Many environments at once: 20 backups under a rate limit"
COMMAND = "make bench BENCH=many_envs"
CONN = "skytap_bench_many"
DAG_ID = "many_envs_backup"
_build = threading.Lock()  # Airflow's DAG context is process-wide: build one DAG at a time


def seed(count: int) -> dict[str, Any]:
    from skytap_simulator.seed import default_seed

    return {
        "users": default_seed()["users"],
        "environments": [
            {
                "id": str(8001 + i),
                "name": f"app-{i + 1:02d}",
                "region": "US-West",
                "runstate": "running",
                "vms": [{"name": "vm-1"}, {"name": "vm-2"}],
            }
            for i in range(count)
        ],
    }


def _tasks() -> Any:
    """tests/tasks.py (run operators and deferrals in-process), imported by name:
    mypy checks bench/ but not tests/, whose ``type: ignore`` comments are for pytest's run."""
    return importlib.import_module("tests.tasks")


class Backup:
    """One environment's backup, run task by task the way a worker and a triggerer would."""

    def __init__(self, env_id: str, region: str, dr_poll: float) -> None:
        from airflow.sdk import DAG

        from airflow_provider_skytap.frozen_copy import frozen_copy, quiesce_params
        from airflow_provider_skytap.operators.clone import CopyTemplateToRegionOperator
        from airflow_provider_skytap.operators.retention import PruneBackupsOperator

        self.env_id = env_id
        with _build, DAG(DAG_ID, schedule=None, params=quiesce_params(environment_id=env_id)):
            chain = frozen_copy(target="template")
            self.clone = chain.copy
            self.wait = chain.wait
            self.dr = CopyTemplateToRegionOperator(
                task_id="copy_to_dr",
                template_id="0",  # set from the clone's id
                target_region=region,
                deferrable=True,
                poll_interval=dr_poll,
                max_poll_interval=dr_poll * 10,
                skytap_conn_id=CONN,
            )
            self.prune = PruneBackupsOperator(
                task_id="prune", environment_id=env_id, keep=7, skytap_conn_id=CONN
            )
        # frozen_copy's tasks read the environment from the params; render what they use.
        self.clone.environment_id = env_id
        self.clone.skytap_conn_id = CONN
        self.wait.skytap_conn_id = CONN
        self.error: str | None = None
        self.deferrals = 0
        self.seconds = 0.0
        self.steps: dict[str, float] = {}

    def run(self, start: threading.Barrier) -> None:
        tasks = _tasks()
        context, run_task = tasks.context, tasks.run_task

        ctx = context()
        start.wait()
        began = time.monotonic()
        try:
            t = time.monotonic()
            made = run_task(self.clone, ctx).result
            self.steps["clone"] = time.monotonic() - t
            t = time.monotonic()
            self.wait.resource_id = made["id"]
            run_task(self.wait, ctx)
            self.steps["wait"] = time.monotonic() - t
            t = time.monotonic()
            self.dr.template_id = made["id"]
            out = run_task(self.dr, ctx, max_deferrals=50)
            self.deferrals = len(out.deferrals)
            self.steps["copy_to_dr"] = time.monotonic() - t
            t = time.monotonic()
            run_task(self.prune, ctx)
            self.steps["prune"] = time.monotonic() - t
        except Exception as exc:  # reported
            self.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        self.seconds = time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    from skytap_simulator.control import SimulatorProcess

    parser = argparse.ArgumentParser(prog="bench.many_envs", description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second allowed")
    parser.add_argument("--copy-seconds", type=float, default=5.0, help="a live clone (save)")
    parser.add_argument("--region-copy-seconds", type=float, default=3.0)
    parser.add_argument("--region", default="EMEA", help="the one DR region")
    parser.add_argument(
        "--dr-poll", type=float, default=5.0, help="copy_to_dr's first poll (grows to 10x)"
    )
    args = parser.parse_args(argv)
    started = machine()
    user = seed(0)["users"][0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-many-envs-") as tmp,
        SimulatorProcess(data_dir=Path(tmp) / "sim", time_scale=1.0) as sim,
    ):
        sim.admin.reset(seed(args.envs))
        sim.admin.config(
            rate_limit_per_s=args.rate,
            source_lock=True,
            copy_seconds=args.copy_seconds,
            region_copy_seconds=args.region_copy_seconds,
        )
        os.environ[f"AIRFLOW_CONN_{CONN.upper()}"] = json.dumps(
            {
                "conn_type": "skytap",
                "host": sim.url,
                "login": user["username"],
                "password": user["token"],
            }
        )
        # frozen_copy's tasks use the default connection id.
        os.environ["AIRFLOW_CONN_SKYTAP_DEFAULT"] = os.environ[f"AIRFLOW_CONN_{CONN.upper()}"]
        backups = [Backup(str(8001 + i), args.region, args.dr_poll) for i in range(args.envs)]
        barrier = threading.Barrier(len(backups) + 1)
        threads = [threading.Thread(target=b.run, args=(barrier,)) for b in backups]
        for t in threads:
            t.start()
        with Stopwatch() as sw:
            barrier.wait()
            for t in threads:
                t.join()
        log = sim.admin.requests()
        state = sim.admin.state()
    statuses = Counter(str(r["status"]) for r in log)
    by_method = Counter(r["method"] for r in log)
    live = [t for t in state["templates"] if not t.get("deleted")]
    per_name = Counter((t["name"], t["region"]) for t in live)
    duplicates = {f"{n} in {r}": c for (n, r), c in per_name.items() if c > 1}
    failures = {b.env_id: b.error for b in backups if b.error}
    made_dr = sum(1 for t in live if t["region"] == args.region)
    made_src = sum(1 for t in live if t["region"] == "US-West")
    requests = len(log)
    needed = requests - statuses.get("429", 0)  # the 429s are the excess, not the work
    gets_needed = sum(1 for r in log if r["method"] == "GET" and r["status"] != 429)
    rate_bound = needed / args.rate
    copy_bound = args.copy_seconds + args.envs * args.region_copy_seconds
    bound = max(rate_bound, copy_bound)
    per_backup = requests / args.envs
    step_stats = {
        k: summary([b.steps[k] for b in backups if k in b.steps])
        for k in ("clone", "wait", "copy_to_dr", "prune")
    }
    rows: list[list[Any]] = [
        ["backups finished", f"{args.envs - len(failures)} of {args.envs}"],
        ["failures", len(failures)],
        ["templates made (US-West / " + args.region + ")", f"{made_src} / {made_dr}"],
        ["duplicates (live templates per name and region > 1)", len(duplicates)],
        ["total time", f"{sw.seconds:.1f} s"],
        ["requests made", requests],
        ["requests per backup", f"{per_backup:.1f}"],
        ["429 answers (rate limit)", statuses.get("429", 0)],
        ["423 answers (busy source)", statuses.get("423", 0)],
        ["requests answered other than 429", needed],
        [
            "lower bound from the rate limit (requests answered other than 429 / rate)",
            f"{rate_bound:.1f} s",
        ],
        [
            "lower bound from the copies (a save, then the region copies in series)",
            f"{copy_bound:.1f} s",
        ],
        ["total time / lower bound", f"{sw.seconds / bound:.2f}"],
        ["deferrals per copy_to_dr (median)", summary([b.deferrals for b in backups])["median"]],
    ]
    body = "\n".join(
        [
            f"{args.envs} environments, {args.envs} backups released together; simulator: "
            f"`rate_limit_per_s` {args.rate:g}, `source_lock` true, save {args.copy_seconds:g} "
            f"s, region copy {args.region_copy_seconds:g} s (all to {args.region}, so they run "
            f"one after another), real time. `copy_to_dr` polls from {args.dr_poll:g} s to "
            f"{args.dr_poll * 10:g} s (the DAG's ratio; its default is 60 s, sized for copies "
            "of hours).",
            "",
            table(["figure", "value"], rows),
            "",
            "Time per step of one backup (median, min to max over the backups):",
            "",
            table(["step", "time"], [[k, fmt(v)] for k, v in step_stats.items()]),
            "",
            "Requests by method: "
            + ", ".join(f"{m} {c}" for m, c in sorted(by_method.items()))
            + "; by status: "
            + ", ".join(f"{s} {c}" for s, c in sorted(statuses.items()))
            + ".",
            "",
            "**Goal:** all finish, no duplicates, total time near the lower bound. "
            + ("**Met**: " if not failures and not duplicates else "**Not met**: ")
            + f"{args.envs - len(failures)} of {args.envs} finished, {len(duplicates)} "
            f"duplicates, {sw.seconds:.0f} s against a lower bound of {bound:.0f} s "
            f"({sw.seconds / bound:.2f}x).",
            "",
            f"**What the figures say.** {statuses.get('429', 0)} of {requests} requests "
            f"({100 * statuses.get('429', 0) / max(1, requests):.0f}%) were turned away with "
            "429 and sent again after the hook's backoff (`Retry-After` as a floor, then "
            "doubling with jitter up to 30 s); a refused request costs Skytap's limiter "
            "nothing, so they cost time only: the spread of the clone step "
            f"({step_stats['clone'].get('min', 0):.0f} to {step_stats['clone'].get('max', 0):.0f}"
            " s) is that backoff, as a request turned away several times in a row waits 1, 2, "
            "4, ... up to 30 s before its next try. "
            + (
                "No 423 was answered: each backup copies its own environment and template, and "
                "every copy task reads its source and waits while it is busy before it POSTs. "
                if not statuses.get("423")
                else f"{statuses['423']} answers were 423 (busy source), each retried. "
            )
            + f"GETs were {gets_needed} of the {needed} requests answered other than 429, most "
            "of them the waits' polls: 20 `frozen_copy` waits poking every 2 to 5 s ask 4 to "
            "10 requests a second on their own, more than the limit (see section 4).",
            "",
            *(
                ["Failures:", "", *[f"- environment {k}: {v}" for k, v in failures.items()], ""]
                if failures
                else []
            ),
            *(
                ["Duplicates:", "", *[f"- {k}: {v}" for k, v in duplicates.items()], ""]
                if duplicates
                else []
            ),
        ]
    )
    data = {
        "args": vars(args),
        "seconds": round(sw.seconds, 2),
        "requests": requests,
        "requests_not_429": needed,
        "statuses": dict(statuses),
        "methods": dict(by_method),
        "duplicates": duplicates,
        "failures": failures,
        "rate_bound_s": round(rate_bound, 2),
        "copy_bound_s": round(copy_bound, 2),
        "steps": step_stats,
        "backups": [
            {"env": b.env_id, "seconds": round(b.seconds, 2), "deferrals": b.deferrals}
            for b in backups
        ],
    }
    write_section(NAME, TITLE, COMMAND, body, data, started=started)
    return 1 if failures or duplicates else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
