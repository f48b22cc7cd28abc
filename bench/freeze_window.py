"""Issue 6, item 1: the freeze window's overhead over the copy, for 1 and 16 VMs.

The backup DAG ``skytap_live_clone_backup`` runs against the lab (``demo.lab.Lab``: real
sshds, loop-mounted ext4, real ``fsfreeze``) and the simulator seeded with those VMs, with no
DR region and a fixed copy time. For each run:

- the freeze window: the thaw task's report (first freeze to last thaw, from the guardians'
  own timestamps on the VMs);
- the copy: its job in the simulator's state (``ready_at - start_at``, as Skytap counted it);
- overhead = window - copy, split into *before* (first freeze to the copy's start) and
  *after* (the copy ready to the last thaw), and each task's start and end against the first
  freeze.

Runners: ``airflow dags test`` (``demo.airflow_cli``) and the real scheduler
(``tests.system.airflow_stack.AirflowStack``, LocalExecutor). ``--before REV`` measures the
same cases on that commit too (exported with ``git archive`` to a temporary directory and run
there in a subprocess), one after the other in the same invocation.

Run: ``PYTHONPATH=$PWD .venv/bin/python -m bench.freeze_window [--before REV]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, fmt, machine, summary, table, write_section

NAME = "freeze_window"
DAG_ID = "skytap_live_clone_backup"
USER, TOKEN = "bench", "sim-bench-token-5c1e"  # added to the seed
GOALS = {"dags_test": 2.0, "scheduler": 10.0}
RUNNERS = {"dags_test": "airflow dags test", "scheduler": "scheduler (LocalExecutor)"}
TASKS = ("freeze", "clone", "wait_for_clone", "thaw")


def env_id(hosts: int) -> str:
    return str(7000 + hosts)


def vm_names(hosts: int) -> list[str]:
    return [f"vm-{i:02d}" for i in range(1, hosts + 1)]


def make_seed(hosts_list: list[int]) -> dict[str, Any]:
    """One environment per host count (``70NN`` with NN VMs named vm-01..), nothing else."""
    from skytap_simulator.seed import default_seed

    base = default_seed()
    env0 = base["environments"][0]
    vm0 = env0["vms"][0]
    envs = []
    for hosts in hosts_list:
        vms = []
        for i, name in enumerate(vm_names(hosts), start=1):
            vm = copy.deepcopy(vm0)
            vm["id"] = str(hosts * 1000 + 100000 + i)
            vm["name"] = name
            vm["hardware"]["disks"][0]["id"] = str(hosts * 1000 + 200000 + i)
            iface = vm["interfaces"][0]
            iface["id"] = str(hosts * 1000 + 300000 + i)
            iface["hostname"] = name
            iface["ip"] = f"10.0.0.{10 + i}"
            iface["services"][0]["id"] = str(hosts * 1000 + 400000 + i)
            vms.append(vm)
        envs.append(env0 | {"id": env_id(hosts), "name": f"bench-{hosts}", "vms": vms})
    users = [*base["users"], {"username": USER, "token": TOKEN}]
    return {"users": users, "environments": envs, "templates": []}


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def measure(
    thaw: dict[str, Any],
    clone: dict[str, Any],
    state: dict[str, Any],
    tis: list[dict[str, Any]],
) -> dict[str, Any]:
    """One run's figures from the thaw report, the clone's result, the simulator's state and
    the task instances (``task_id``, ``start``, ``end``)."""
    window = thaw["freeze_window"]
    first, last = _epoch(window["first_frozen_at"]), _epoch(window["last_thawed_at"])
    job = next(j for j in state.get("jobs", []) if str(j.get("target_id")) == str(clone["id"]))
    # The copy ends when its last disk chunk is read: at ready_at, or later when the disk
    # copier's threads lag behind on a busy machine (each copied image's mtime says when).
    made = state.get("templates", []) + state.get("environments", [])
    target = next(r for r in made if str(r["id"]) == str(clone["id"]))
    images = [Path(vm["disk_image"]) for vm in target.get("vms", []) if vm.get("disk_image")]
    ends = [p.stat().st_mtime for p in images if p.exists()]
    copy_end = max([job["ready_at"], *ends])
    copy_s = copy_end - job["start_at"]
    if first is None or last is None:
        raise KeyError("the thaw report has no freeze window")
    tasks = {}
    for ti in tis:
        if ti["task_id"] in TASKS:
            start, end = _epoch(ti.get("start")), _epoch(ti.get("end"))
            tasks[ti["task_id"]] = {
                "start": None if start is None else round(start - first, 3),
                "end": None if end is None else round(end - first, 3),
            }
    return {
        "window": round(last - first, 3),
        "copy": round(copy_s, 3),
        "overhead": round(last - first - copy_s, 3),
        "before_copy": round(job["start_at"] - first, 3),
        "after_copy": round(last - copy_end, 3),
        "copy_nominal": round(job["ready_at"] - job["start_at"], 3),
        "copier_lag": round(copy_end - job["ready_at"], 3),
        "consistency": thaw.get("consistency"),
        "hosts": len(thaw.get("hosts", [])),
        "frozen_seconds": [h.get("seconds_frozen") for h in thaw.get("hosts", [])],
        "tasks": tasks,
    }


def run_cases(args: argparse.Namespace) -> dict[str, Any]:
    """Every case on this tree; answers ``{runner: {hosts: [run figures]}}``."""
    from demo import airflow_cli, lab
    from skytap_simulator.control import SimulatorProcess

    hosts_list = [int(h) for h in args.hosts.split(",")]
    out: dict[str, Any] = {"dags_test": {}, "scheduler": {}, "errors": []}
    with (
        tempfile.TemporaryDirectory(prefix="bench-window-") as tmp,
        lab.Lab(vm_names=tuple(vm_names(max(hosts_list))), size_mb=16) as vms,
    ):
        work = Path(tmp)
        seed = work / "seed.json"
        doc = make_seed(hosts_list)
        doc["environments"] = [e | {"vms": vms.seed_vms(e["vms"])} for e in doc["environments"]]
        seed.write_text(json.dumps(doc))
        with SimulatorProcess(seed=seed, data_dir=work / "disks") as sim:
            sim.admin.config(copy_seconds=args.copy_seconds, delete_seconds=0.2)
            conns = {
                "skytap_default": {
                    "conn_type": "skytap",
                    "host": sim.url,
                    "login": USER,
                    "password": TOKEN,
                },
                "skytap_vm_ssh": vms.ssh_connection(),
            }
            if args.dags_test_runs:
                env = airflow_cli.airflow_env(work / "airflow", conns)
                airflow_cli.migrate(env)
                day = datetime(2026, 12, 1)
                for rnd in range(args.dags_test_runs):
                    for hosts in hosts_list:
                        day += timedelta(days=1)
                        date = day.strftime("%Y-%m-%d")
                        conf = {
                            "environment_id": env_id(hosts),
                            "dr_regions": [],
                            "max_freeze_seconds": 120,
                        }
                        t0 = time.monotonic()
                        done = airflow_cli.dags_test(env, DAG_ID, date, conf)
                        wall = time.monotonic() - t0
                        if args.keep_logs:
                            logs = Path(args.keep_logs)
                            logs.mkdir(parents=True, exist_ok=True)
                            (logs / f"dags-test-{hosts}-{date}.log").write_text(
                                done.stdout + done.stderr
                            )
                        record = airflow_cli.run_record(env, DAG_ID)
                        tis = [t for t in record["task_instances"] if t["logical_date"] == date]
                        run_ids = {t["run_id"] for t in tis}
                        res = {
                            (x["task_id"], x["map_index"]): x["value"]
                            for x in record["xcoms"]
                            if x["key"] == "return_value" and x["run_id"] in run_ids
                        }
                        ok = airflow_cli.succeeded(done)
                        try:
                            fig = measure(
                                res[("thaw", -1)], res[("clone", -1)], sim.admin.state(), tis
                            )
                        except (KeyError, StopIteration, AssertionError) as err:
                            out["errors"].append(f"dags test {hosts} hosts {date}: {err!r}")
                            print((done.stdout + done.stderr)[-3000:], file=sys.stderr)
                            continue
                        fig |= {"ok": ok, "wall": round(wall, 1), "round": rnd}
                        print(f"dags test, {hosts} hosts, round {rnd}: {fig}", file=sys.stderr)
                        out["dags_test"].setdefault(str(hosts), []).append(fig)
            if args.scheduler_runs:
                out["scheduler"] = _scheduler(args, work, conns, sim, hosts_list)
            left = vms.frozen()
            if left:
                out["errors"].append(f"left frozen: {left}")
                vms.thaw_all()
    return out


def _scheduler(
    args: argparse.Namespace,
    work: Path,
    conns: dict[str, dict[str, Any]],
    sim: Any,
    hosts_list: list[int],
) -> dict[str, list[dict[str, Any]]]:
    from demo import airflow_cli
    from tests.system.airflow_stack import AirflowStack

    out: dict[str, list[dict[str, Any]]] = {}
    env = {f"AIRFLOW_CONN_{k.upper()}": json.dumps(v) for k, v in conns.items()}
    env["PYTHONPATH"] = str(airflow_cli.REPO)
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"  # what RUNNERS names (on PostgreSQL now)
    with AirflowStack(
        work / "stack",
        airflow_cli.DAGS,
        env,
        dag_ids=[DAG_ID],
        secrets=[TOKEN],
        replicas={"airflow-worker": 0},
    ) as stack:
        for rnd in range(args.scheduler_runs):
            for hosts in hosts_list:
                conf = {
                    "environment_id": env_id(hosts),
                    "dr_regions": [],
                    "max_freeze_seconds": 120,
                }
                t0 = time.monotonic()
                run_id = stack.trigger(DAG_ID, conf)
                state = stack.wait_for_run(DAG_ID, run_id, timeout=300, poll=1.0)
                wall = time.monotonic() - t0
                tis = [
                    {"task_id": t["task_id"], "start": t["start_date"], "end": t["end_date"]}
                    for t in stack.task_instances(DAG_ID, run_id)
                ]
                try:
                    fig = measure(
                        stack.xcom(DAG_ID, run_id, "thaw"),
                        stack.xcom(DAG_ID, run_id, "clone"),
                        sim.admin.state(),
                        tis,
                    )
                except Exception as err:  # a failed run: say so, go on
                    print(f"scheduler {hosts} hosts {run_id}: {err!r}", file=sys.stderr)
                    continue
                fig |= {"ok": state == "success", "wall": round(wall, 1), "round": rnd}
                print(f"scheduler, {hosts} hosts, round {rnd}: {fig}", file=sys.stderr)
                out.setdefault(str(hosts), []).append(fig)
    return out


def start_tree(tree: Path, args: argparse.Namespace, raw: Path) -> subprocess.Popen[bytes]:
    """The same cases on another checkout (``tree``), in a subprocess importing from it."""
    bench = tree / "bench"
    bench.mkdir(exist_ok=True)
    for name in ("__init__.py", "common.py", "freeze_window.py"):
        shutil.copy(ROOT / "bench" / name, bench / name)
    cmd = [sys.executable, "-m", "bench.freeze_window", "--raw-out", str(raw)]
    cmd += ["--hosts", args.hosts, "--copy-seconds", str(args.copy_seconds)]
    cmd += ["--dags-test-runs", str(args.dags_test_runs)]
    cmd += ["--scheduler-runs", str(args.scheduler_runs)]
    if args.keep_logs:
        cmd += ["--keep-logs", str(Path(args.keep_logs) / "before")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree)
    return subprocess.Popen(cmd, cwd=tree, env=env)


def export(rev: str, into: Path) -> Path:
    """``git archive`` of ``rev`` unpacked into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", rev], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    return into


FINDINGS = """
**Where the time went** (the task logs of the runs before the change, and a profile of
`airflow dags test`): the freeze window held the *start* of three tasks, `clone`,
`wait_for_clone` and `thaw`, plus the sensor's poll (every 2 s, backing off to 5 s) and the
thaw's SSH connections. Starting a task is Airflow's own cost: under `airflow dags test`
Airflow 3.2 builds a new in-process execution API (a FastAPI app with its versioned schemas,
`InProcessTestSupervisor._api_client` -> `in_process_api_server()`) for every task, 2.3 to
3.0 s from `[DAG TEST] running task` to `Task started` in this DAG's log on the idle machine
(1.6 to 2 s for a trivial three-task DAG); under the scheduler a task start is the
scheduler's loop, the LocalExecutor's process and the DAG file's parse. On a loaded machine
each start takes tens of seconds, and all of it was downtime. No poll interval can fix that:
only no task start inside the window can.

**What changed** (commit 0463297, `airflow_provider_skytap/frozen_copy.py`): once every VM
is frozen, the `freeze` task (`FreezeThenCopyOperator`) runs the copy task's work in its own
process: it requests the copy, waits for it (0.5 s polls backing off to 1 s, never
deferring) and runs the DAG's thaw task's thaw the moment Skytap reports the copy complete.
The `clone` task (`FrozenLiveCloneOperator`) then finds the copy by its name (as a retry
does), sees it complete and thaws again (idempotent; it is the one that thaws when the freeze
task could not copy); `wait_for_clone` checks; `thaw` (`all_done`) thaws whatever is left and
reports per VM. Anything failing after the freeze leaves the VMs frozen for the copy task,
its retries and the thaw task, as before: the thaw still happens on every path, a failed copy
still fails the run (now at `clone`, which waits for its copy), the freeze is never retried,
nothing defers while frozen.

**The machine**: other helpers' benchmarks and tests ran at the same time (load average
50 to 80 on 2 cores, see the header), so every figure here is far above what an idle machine
gives, and "before" suffers most: each task start inside its window took 10 to 40 s. Single
runs on the idle machine at the start of this session (load 5, 1 VM, `airflow dags test`):
5.98 s overhead at 9bc3e5a. Before and after ran side by side (two processes, same load).
The copy's own time is counted to the read of its last disk chunk (`copy`; the simulator's
disk copier lags behind its schedule on a busy machine, `copier_lag` in the JSON), not to the
nominal 3 s.

**What is left in the overhead**: the copy request (one POST, about 0.1 s), up to one poll
interval (0.5 to 1 s), and the thaw's new SSH connection and command per VM (0.2 to 0.5 s
idle; the freeze's SSH sessions are closed when the freeze ends: keeping them for the thaw
would save the connection, in `operators/quiesce.py`). With 16 VMs the hosts freeze and thaw
in batches of `max_parallel` (8 by default): all 16 must be frozen before the copy starts,
and the last thaw comes after 16 new SSH connections, so 16 VMs add several seconds on each
side under this load (`before / after the copy` columns). That is the VM side
(`operators/quiesce.py`): keeping the freeze's SSH sessions open for the thaw, and a larger
`max_parallel`, are where the rest is.
"""


def cell(runs: list[dict[str, Any]], key: str) -> dict[str, float | int]:
    return summary([r[key] for r in runs])


def section(
    args: argparse.Namespace, after: dict[str, Any], before: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    rows = []
    verdicts = []
    for runner in ("dags_test", "scheduler"):
        for hosts, runs in sorted(after.get(runner, {}).items(), key=lambda x: int(x[0])):
            over = cell(runs, "overhead")
            goal = GOALS[runner]
            met = bool(over.get("n")) and float(over["median"]) <= goal
            verdicts.append((runner, hosts, met))
            row = [RUNNERS[runner], hosts]
            if before is not None:
                prior = before.get(runner, {}).get(hosts, [])
                row.append(fmt(cell(prior, "overhead")) if prior else "n/a")
            row += [
                fmt(over),
                fmt(cell(runs, "copy")),
                fmt(cell(runs, "window")),
                f"{cell(runs, 'before_copy').get('median', 'n/a')} / "
                f"{cell(runs, 'after_copy').get('median', 'n/a')}",
                f"<= {goal:.0f} s: {'met' if met else 'NOT met'}",
            ]
            rows.append(row)
    header = ["runner", "hosts"]
    if before is not None:
        header.append(f"overhead before ({args.before})")
    header += [
        "overhead (median, min to max, n)",
        "copy (Skytap's count)",
        "freeze window",
        "median before / after the copy",
        "goal",
    ]
    body = table(header, rows)
    if before is not None:
        brows = []
        for runner in ("dags_test", "scheduler"):
            for hosts, runs in sorted(before.get(runner, {}).items(), key=lambda x: int(x[0])):
                brows.append(
                    [
                        RUNNERS[runner],
                        hosts,
                        fmt(cell(runs, "overhead")),
                        fmt(cell(runs, "copy")),
                        fmt(cell(runs, "window")),
                        f"{cell(runs, 'before_copy').get('median')} / "
                        f"{cell(runs, 'after_copy').get('median')}",
                    ]
                )
        body += f"\n\nBefore ({args.before}), the same cases in the same invocation:\n\n"
        body += table(
            ["runner", "hosts", "overhead", "copy", "freeze window", "before / after copy"],
            brows,
        )
    body += "\n\n" + tasks_table(after)
    if before is not None:
        body += "\n\nBefore:\n\n" + tasks_table(before)
    body += "\n\n" + FINDINGS.strip()
    data = {"args": vars(args), "after": after, "before": before, "verdicts": verdicts}
    return body, data


def tasks_table(figs: dict[str, Any]) -> str:
    """Median start and end of each task, seconds after the first freeze."""
    rows = []
    for runner in ("dags_test", "scheduler"):
        for hosts, runs in sorted(figs.get(runner, {}).items(), key=lambda x: int(x[0])):
            row = [RUNNERS[runner], hosts]
            for task in TASKS:
                starts = [r["tasks"][task]["start"] for r in runs if task in r["tasks"]]
                ends = [r["tasks"][task]["end"] for r in runs if task in r["tasks"]]
                starts = [x for x in starts if x is not None]
                ends = [x for x in ends if x is not None]
                row.append(
                    f"{summary(starts).get('median', '-')} to {summary(ends).get('median', '-')}"
                    if starts
                    else "-"
                )
            rows.append(row)
    return (
        "Each task's start and end (Airflow's task instance times), median seconds after the "
        "first freeze:\n\n" + table(["runner", "hosts", *TASKS], rows)
    )


TITLE = "Freeze window overhead"


def rewrite(merge: dict[str, str]) -> int:
    """The section again from ``bench/results/freeze_window.json``: the run's figures, machine
    and command as recorded, the text as this module now writes it; ``merge`` maps ``after``
    or ``before`` to a ``--raw-out`` file whose scheduler figures are added."""
    import bench.common

    old = json.loads((RESULTS / f"{NAME}.json").read_text())
    for which, path in merge.items():
        other = json.loads(Path(path).read_text())
        old[which] = dict(old.get(which) or {}) | {"scheduler": other["scheduler"]}
        old[which]["errors"] = old[which].get("errors", []) + other.get("errors", [])
        old.setdefault("merged", {})[which] = other.get("machine", {})
    body, data = section(argparse.Namespace(**old["args"]), old["after"], old["before"])
    if merge:
        body += (
            "\n\nThe scheduler figures were measured by other invocations while this one ran "
            "(`--dags-test-runs 0 --scheduler-runs 2 --raw-out`, the same lab set-up with its "
            "own VMs and simulator; "
            + ", ".join(f"{w} started {m.get('date')}" for w, m in old["merged"].items())
            + "; before on `git archive 9bc3e5a`, one after the other, not side by side), "
            "merged with `--rewrite --merge`."
        )
    data["merged"] = old.get("merged", {})
    bench.common.machine = lambda: old["machine_end"]  # the end as it was, not now
    write_section(NAME, TITLE, old["command"], body, data, started=old["machine"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.freeze_window", description=__doc__)
    parser.add_argument("--hosts", default="1,16")
    parser.add_argument("--copy-seconds", type=float, default=3.0)
    parser.add_argument("--dags-test-runs", type=int, default=3)
    parser.add_argument("--scheduler-runs", type=int, default=2)
    parser.add_argument("--before", help="also measure this commit (git archive), first")
    parser.add_argument("--keep-logs", help="keep each dags test's output in this folder")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="rewrite the section's text from its committed JSON (same figures, no run)",
    )
    parser.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="WHICH=PATH",
        help="with --rewrite: take the scheduler figures of after or before from a --raw-out "
        "file of another invocation (e.g. after=/tmp/sched.json)",
    )
    parser.add_argument("--raw-out", help="write the raw figures here and stop (no section)")
    args = parser.parse_args(argv)
    # SIGTERM (a timeout, a kill) unwinds the with blocks: no lab VM or Airflow left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = machine()
    if args.rewrite:
        return rewrite(dict(m.split("=", 1) for m in args.merge))
    if args.raw_out:
        figures = run_cases(args)
        Path(args.raw_out).write_text(json.dumps(figures | {"machine": started}))
        return 0
    before = None
    if args.before:
        # Both trees at once, so both see the same load (the machine is shared and noisy).
        with tempfile.TemporaryDirectory(prefix="bench-window-before-") as tmp:
            raw = Path(tmp) / "raw.json"
            proc = start_tree(export(args.before, Path(tmp) / "tree"), args, raw)
            try:
                after = run_cases(args)
            finally:
                proc.wait(timeout=3600)
            before = dict(json.loads(raw.read_text())) if raw.exists() else None
    else:
        after = run_cases(args)
    body, data = section(args, after, before)
    command = "make bench BENCH=freeze_window"
    opts = [a for a in (argv or []) if a]
    if opts:
        command = "PYTHONPATH=$PWD .venv/bin/python -m bench.freeze_window " + " ".join(opts)
    write_section(NAME, TITLE, command, body, data, started=started)
    errors = after.get("errors", []) + (before or {}).get("errors", [])
    for e in errors:
        print(e, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
