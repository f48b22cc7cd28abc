"""Issues 6 and 13: the freeze window's overhead over the copy, for 1, 16 and 64 VMs.

The lab (``demo.lab.Lab``): each VM is a real OpenSSH sshd in its own mount namespace, with its
own loop-mounted 8 MB ext4 at ``/srv/data`` (real ``fsfreeze``) and its own
``/run/skytap-quiesce`` (``private_state``), so every VM is a distinct host, mount, owner record
and guardian as the provider sees it; no writer and no ``~/.bashrc`` (``writer=False``,
``plain_shell=True``): 64 VMs' fsyncs and this machine's ``pyenv init`` would load its 2 cores.

Two measurements, on the same lab VMs:

- **the session's floor** (``--session-reps``): ``QuiesceSession`` alone in this process:
  ``freeze()``, a fake copy of ``--copy-seconds``, ``release()`` over the held connections.
  Per step (preflight, arm, release), the controller's CPU (this process) and the VM side's
  (each VM's sshd and what it ran and reaped; the detached guardian is not in it);
- **the DAG** ``skytap_live_clone_backup`` under ``airflow dags test`` (``--dags-test-runs``)
  and the real scheduler (``--scheduler-runs``), against the simulator seeded with the lab's VMs,
  with no DR region and a fixed copy time: the window from the thaw report (the guardians' own
  timestamps), the copy from the simulator's job, overhead = window - copy, split into *before*
  (first freeze to the copy's start) and *after* (the copy ready to the last thaw).

``--before REV_OR_DIR`` measures the same cases on that tree too, side by side (a subprocess,
at the same time), and ``--after REV_OR_DIR`` measures that tree instead of the working tree
(both in subprocesses). A tree is a commit (``git archive``) or a directory (copied; never
written to); this tree's ``bench/freeze_window.py``, ``bench/common.py`` and ``demo/lab.py``
(the harness) are copied into each.

Run: ``PYTHONPATH=$PWD .venv/bin/python -m bench.freeze_window [--before REV] [--after REV]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
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
# Issue 13's targets for the overhead under dags test, by host count.
HOST_GOALS = {1: 0.6, 16: 1.0, 64: 2.0}
RUNNERS = {"dags_test": "airflow dags test", "scheduler": "scheduler (LocalExecutor)"}
# The chain's steps: today's task ids (freeze, clone, wait_for_clone, thaw) and a TaskGroup's
# (backup.freeze, backup.copy, backup.wait, backup.thaw): the id's last part names the step.
TASKS = ("freeze", "clone", "copy", "wait_for_clone", "wait", "thaw")


def _step(task_id: str) -> str:
    return task_id.rsplit(".", 1)[-1]


def chain_results(res: dict[tuple[str, int], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The thaw task's report and the copy (a mapping with its ``id``) from a run's XComs
    (``(task_id, map_index) -> value``), for either chain."""
    steps = {_step(task): value for (task, index), value in res.items() if index == -1}
    thaw = steps["thaw"]
    copy_ = steps.get("clone") or steps.get("copy") or thaw.get("copy")
    if not isinstance(copy_, dict) or "id" not in copy_:
        raise KeyError(f"no copy id in the chain's results: {sorted(steps)}")
    return thaw, copy_


def env_id(hosts: int) -> str:
    return str(7000 + hosts)


def bench_config(path: Path, hosts_list: list[int], per_dag: bool) -> Path:
    """A backup config naming one environment per host count: each with the DAG id
    ``DAG_ID`` (``airflow dags test`` parses one config per run) or, ``per_dag``, a DAG of
    its own (``dag_for``), for the scheduler. No DR regions; the form sets nothing else."""
    import yaml

    doc = {
        "environments": {
            f"hosts{hosts}": {
                "environment_id": env_id(hosts),
                "dag_id": dag_for(hosts) if per_dag else DAG_ID,
                "dr_regions": [],
                "max_freeze_seconds": 120,
            }
            for hosts in hosts_list
        }
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def dag_for(hosts: int) -> str:
    return f"{DAG_ID}_{hosts}"


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
    # The lab's VMs share this machine's clock, so their own timestamps compare here (the
    # provider never subtracts two VMs' clocks; a bench on one machine may).
    hosts = thaw.get("hosts", [])
    frozen = [t for t in (_epoch(h.get("frozen_at")) for h in hosts) if t is not None]
    thawed = [t for t in (_epoch(h.get("thawed_at")) for h in hosts) if t is not None]
    first = min(frozen) if frozen else None
    last = max(thawed) if thawed else None
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
        if _step(ti["task_id"]) in TASKS:
            start, end = _epoch(ti.get("start")), _epoch(ti.get("end"))
            tasks[_step(ti["task_id"])] = {
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


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (each ``airflow dags test``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lab_cpu(lab: Any) -> float:
    """CPU seconds the lab's sshds and what they ran and reaped (every command on the VMs)."""
    hz = os.sysconf("SC_CLK_TCK")
    ticks = 0
    for vm in lab.vms:
        try:
            fields = Path(f"/proc/{vm.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / hz


def _script_at(rev: str) -> str:
    """The VM-side script as the operator of commit ``rev`` sends it (guardian + profiles)."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:airflow_provider_skytap/quiesce/{path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    parts = [show("guardian.sh")]
    parts += [
        show(f"profiles/{name}.sh") for name in ("fsfreeze", "postgres", "mysql", "custom", "app")
    ]
    return "#!/bin/sh\n" + "\n".join(parts) + '\nmain "$@"\n'


def step_cpu(rev: str, reps: int) -> dict[str, Any]:
    """VM-side CPU of each step on one host, this tree's script against ``rev``'s, alternating:
    preflight, arm and release (the commands as root, no SSH), and the guardian and its watchdog
    (reaped as orphans: this process is their subreaper), on one loop-mounted ext4."""
    import ctypes

    from airflow_provider_skytap.quiesce import commands as qc

    ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the detached guardians come back
    base = Path(tempfile.mkdtemp(prefix="skytap-bench-steps-", dir="/run"))
    work = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    img, mnt = work / "disk.img", work / "mnt"
    mnt.mkdir()
    with img.open("wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, timeout=60)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True, timeout=60)
    scripts = {"after": qc.guardian_script().text, "before": _script_at(rev)}
    (base / "lib").mkdir()
    for which, text in scripts.items():
        (base / "lib" / f"{which}.sh").write_text(text)
    out: dict[str, dict[str, list[float]]] = {w: {} for w in scripts}

    def timed(which: str, step: str, *argv: str) -> None:
        before = _children_cpu()
        subprocess.run(
            ["sh", str(base / "lib" / f"{which}.sh"), *argv], capture_output=True, timeout=120
        )
        out[which].setdefault(step, []).append(1000 * (_children_cpu() - before))

    def reap(which: str) -> None:
        before, deadline = _children_cpu(), time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
        out[which].setdefault("guardian", []).append(1000 * (_children_cpu() - before))

    try:
        for rep in range(reps):
            for which in scripts:
                gid = f"steps-{which}-{rep}"
                timed(
                    which,
                    "preflight",
                    "preflight",
                    "--id",
                    gid,
                    "--profile",
                    "fsfreeze",
                    "--",
                    str(mnt),
                )
                arm = ["--id", gid, "--profile", "fsfreeze", "--max-seconds", "60"]
                timed(which, "arm", "arm", *arm, "--step-timeout", "30", "--", str(mnt))
                time.sleep(0.5)
                thaw = ["--id", gid, "--profile", "fsfreeze", "--reason", "thaw"]
                timed(
                    which,
                    "release",
                    "thaw",
                    *thaw,
                    "--probe-timeout",
                    "5",
                    "--wait",
                    "30",
                    "--",
                    str(mnt),
                )
                reap(which)
    finally:
        subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True, timeout=60)
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    return {
        which: {step: round(sorted(v)[len(v) // 2], 1) for step, v in steps.items()}
        for which, steps in out.items()
    } | {"reps": reps, "rev": rev, "load_1min": round(os.getloadavg()[0], 2)}


# ---------------------------------------------------------------- the session's floor


def _ns_cpu(listeners: list[int]) -> float:
    """CPU seconds of everything the given sshds (the lab VMs' listeners) run, alive or reaped:
    each process under one of them (its sessions, their shells and commands) counted with its
    reaped children. A detached guardian (reparented away) is not in it."""
    hz = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(proc.name)
        parent[pid] = int(fields[1])
        ticks[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    roots = set(listeners)
    total = 0
    for pid, value in ticks.items():
        # Count a process when its parent is not counted (the subtree's top): its cutime holds
        # what it reaped, and the processes below it are alive and counted... by themselves.
        p, seen = pid, 0
        while p not in roots and p > 1 and seen < 64:
            p, seen = parent.get(p, 0), seen + 1
        if p in roots:
            total += value
    return total / hz


def session_floor(args: argparse.Namespace, vms: Any, hosts_list: list[int]) -> dict[str, Any]:
    """QuiesceSession on its own: freeze, a fake copy of ``--copy-seconds``, release over the
    held connections; ``{hosts: [run figures]}``. Per step (preflight, arm, release): the
    controller's CPU (this process, every thread) and the VM side's (the sshds' trees)."""
    import uuid

    try:
        from airflow_provider_skytap.quiesce.session import QuiesceSession
        from airflow_provider_skytap.quiesce.spec import QuiesceSpec, QuiesceTarget
    except ImportError as err:  # a tree from before the session API
        return {"error": f"no QuiesceSession in this tree: {err!r}"}

    from demo import lab

    # The logs (Airflow's, at INFO) go to a file, as a task's do, not to a terminal: this
    # process's stdout is that file meanwhile.
    logfile = Path(tempfile.mkdtemp(prefix="bench-floor-")) / "session.log"
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    with logfile.open("wb") as f:
        os.dup2(f.fileno(), 1)
    os.environ["AIRFLOW_CONN_BENCH_VM_SSH"] = json.dumps(vms.ssh_connection())
    spec = QuiesceSpec.build(mounts=[lab.MOUNT], max_freeze_seconds=120)
    out: dict[str, Any] = {}
    marks: list[tuple[float, float]] = []

    def mark(listeners: list[int]) -> None:
        marks.append((time.process_time(), _ns_cpu(listeners)))

    class Session(QuiesceSession):
        listeners: list[int] = []

        def _each(self, hosts: Any, work: Any) -> Any:
            done = super()._each(hosts, work)
            if len(marks) == 1:  # after preflight, before arm: outside the window
                mark(self.listeners)
            return done

    try:
        for rep in range(args.session_reps):
            order = hosts_list if rep % 2 == 0 else hosts_list[::-1]
            for hosts in order:
                chosen = vms.vms[:hosts]
                listeners = [vm.pid for vm in chosen]
                targets = [
                    QuiesceTarget(vm.name, vm.name, vm.name, "bench_vm_ssh", "127.0.0.1", vm.port)
                    for vm in chosen
                ]
                marks.clear()
                run_id = f"floor-{hosts}-{rep}-{uuid.uuid4().hex[:6]}"
                Session.listeners = listeners
                t0 = time.monotonic()
                with Session(spec, targets, dag_id="bench_floor", run_id=run_id) as session:
                    mark(listeners)
                    session.freeze()
                    copy_start = time.time()
                    mark(listeners)  # inside the fake copy: not in the overhead
                    copy_end = copy_start + args.copy_seconds
                    ahead = hasattr(session, "prepare_release")
                    if ahead:  # the thaws started during the copy (trees that have it)
                        session.prepare_release()
                    time.sleep(max(0.0, copy_end - time.time()))
                    released = time.time()
                    thawed = session.release().to_xcom()
                    done = time.time()
                    mark(listeners)
                wall = time.monotonic() - t0
                hs = thawed.get("hosts", [])
                frozen = [t for t in (_epoch(h.get("frozen_at")) for h in hs) if t is not None]
                ends = [t for t in (_epoch(h.get("thawed_at")) for h in hs) if t is not None]
                if len(frozen) != hosts or len(ends) != hosts:
                    raise RuntimeError(f"{hosts} hosts: a host without a window: {thawed}")
                (c0, v0), (c1, v1), (c2, v2), (c3, v3) = marks
                fig = {
                    "hosts": hosts,
                    "round": rep,
                    "overhead": round(max(ends) - min(frozen) - args.copy_seconds, 3),
                    "before_copy": round(copy_start - min(frozen), 3),
                    "after_copy": round(max(ends) - copy_end, 3),
                    "freeze_spread": round(max(frozen) - min(frozen), 3),
                    "release_call": round(done - released, 3),
                    "consistency": thawed.get("consistency"),
                    "wall": round(wall, 2),
                    "prepare_release": ahead,
                    "ctl_ms_per_host": {
                        "preflight": round(1000 * (c1 - c0) / hosts, 1),
                        "arm": round(1000 * (c2 - c1) / hosts, 1),
                        "release": round(1000 * (c3 - c2) / hosts, 1),
                    },
                    "vm_ms_per_host": {
                        "preflight": round(1000 * (v1 - v0) / hosts, 1),
                        "arm": round(1000 * (v2 - v1) / hosts, 1),
                        "release": round(1000 * (v3 - v2) / hosts, 1),
                    },
                    "load_1min": round(os.getloadavg()[0], 2),
                }
                print(f"session, {hosts} hosts, round {rep}: {fig}", file=sys.stderr)
                out.setdefault(str(hosts), []).append(fig)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
        shutil.rmtree(logfile.parent, ignore_errors=True)
    return out


def run_cases(args: argparse.Namespace) -> dict[str, Any]:
    """Every case on this tree; answers ``{runner: {hosts: [run figures]}}``."""
    from demo import airflow_cli, lab
    from skytap_simulator.control import SimulatorProcess

    hosts_list = [int(h) for h in args.hosts.split(",")]
    out: dict[str, Any] = {"dags_test": {}, "scheduler": {}, "session": {}, "errors": []}
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-window-") as tmp,
        lab.Lab(
            vm_names=tuple(vm_names(max(hosts_list))),
            size_mb=8,
            writer=False,
            plain_shell=True,
            private_state=True,
        ) as vms,
    ):
        out["lab_start_s"] = round(time.monotonic() - t0, 1)
        if args.session_reps:
            out["session"] = session_floor(args, vms, hosts_list)
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
                        # The environment comes from the config (the form cannot pick it).
                        config = bench_config(work / f"backups-{hosts}.yaml", [hosts], False)
                        env[airflow_cli.CONFIG_ENV] = str(config)
                        conf = {"dr_regions": [], "max_freeze_seconds": 120}
                        t0, cpu0, vm0 = time.monotonic(), _children_cpu(), _lab_cpu(vms)
                        done = airflow_cli.dags_test(env, DAG_ID, date, conf)
                        wall = time.monotonic() - t0
                        time.sleep(0.5)  # the sshds reap the closed connections' processes
                        cpu = {
                            "controller_cpu_s": round(_children_cpu() - cpu0, 3),
                            "vm_cpu_ms_per_host": round(1000 * (_lab_cpu(vms) - vm0) / hosts, 1),
                            "load_1min": round(os.getloadavg()[0], 2),
                        }
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
                            fig = measure(*chain_results(res), sim.admin.state(), tis)
                        except (KeyError, StopIteration, AssertionError) as err:
                            out["errors"].append(f"dags test {hosts} hosts {date}: {err!r}")
                            print((done.stdout + done.stderr)[-3000:], file=sys.stderr)
                            continue
                        fig |= {"ok": ok, "wall": round(wall, 1), "round": rnd} | cpu
                        print(f"dags test, {hosts} hosts, round {rnd}: {fig}", file=sys.stderr)
                        out["dags_test"].setdefault(str(hosts), []).append(fig)
            if args.scheduler_runs:
                out["scheduler"] = _scheduler(args, work, conns, sim, hosts_list)
        # No writer to watch (64 VMs' fsyncs would load the machine): fsfreeze -u succeeds
        # only on a frozen filesystem, so it finds (and thaws) one left frozen.
        left = [vm.name for vm in vms.vms if vm.in_vm("fsfreeze", "-u", lab.MOUNT).returncode == 0]
        if left:
            out["errors"].append(f"left frozen: {left}")
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
    # One backup DAG per host count's environment (dag_for), from one config.
    env[airflow_cli.CONFIG_ENV] = str(bench_config(work / "backups.yaml", hosts_list, True))
    with AirflowStack(
        work / "stack",
        airflow_cli.DAGS,
        env,
        dag_ids=[dag_for(h) for h in hosts_list],
        secrets=[TOKEN],
        replicas={"airflow-worker": 0},
    ) as stack:
        for rnd in range(args.scheduler_runs):
            for hosts in hosts_list:
                conf = {"dr_regions": [], "max_freeze_seconds": 120}
                t0 = time.monotonic()
                run_id = stack.trigger(dag_for(hosts), conf)
                state = stack.wait_for_run(dag_for(hosts), run_id, timeout=300, poll=1.0)
                wall = time.monotonic() - t0
                tis = [
                    {"task_id": t["task_id"], "start": t["start_date"], "end": t["end_date"]}
                    for t in stack.task_instances(dag_for(hosts), run_id)
                ]
                try:
                    res = {}
                    for ti in tis:  # each chain step's result, whichever chain this tree has
                        if _step(ti["task_id"]) in ("thaw", "clone", "copy"):
                            res[(ti["task_id"], -1)] = stack.xcom(
                                dag_for(hosts), run_id, ti["task_id"]
                            )
                    fig = measure(*chain_results(res), sim.admin.state(), tis)
                except Exception as err:  # a failed run: say so, go on
                    print(f"scheduler {hosts} hosts {run_id}: {err!r}", file=sys.stderr)
                    continue
                fig |= {"ok": state == "success", "wall": round(wall, 1), "round": rnd}
                print(f"scheduler, {hosts} hosts, round {rnd}: {fig}", file=sys.stderr)
                out.setdefault(str(hosts), []).append(fig)
    return out


def start_tree(
    tree: Path, args: argparse.Namespace, raw: Path, which: str = "before"
) -> subprocess.Popen[bytes]:
    """The same cases on another checkout (``tree``), in a subprocess importing from it."""
    bench = tree / "bench"
    bench.mkdir(exist_ok=True)
    for name in ("__init__.py", "common.py", "freeze_window.py"):
        shutil.copy(ROOT / "bench" / name, bench / name)
    # The lab is the harness, not what is measured: the same VMs for both trees (a tree whose
    # lab has them already keeps its own).
    lab = tree / "demo" / "lab.py"
    if "private_state" not in lab.read_text():
        shutil.copy(ROOT / "demo" / "lab.py", lab)
    cmd = [sys.executable, "-m", "bench.freeze_window", "--raw-out", str(raw)]
    cmd += ["--hosts", args.hosts, "--copy-seconds", str(args.copy_seconds)]
    cmd += ["--dags-test-runs", str(args.dags_test_runs)]
    cmd += ["--scheduler-runs", str(args.scheduler_runs)]
    cmd += ["--session-reps", str(args.session_reps)]
    if args.keep_logs:
        cmd += ["--keep-logs", str(Path(args.keep_logs) / which)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree)
    return subprocess.Popen(cmd, cwd=tree, env=env)


def prepare_tree(spec: str, into: Path) -> Path:
    """A copy of the tree ``spec`` names: a directory (its files as they are, uncommitted
    changes included; never written to), or a commit of this repository (``git archive``)."""
    if Path(spec).is_dir():
        skip = shutil.ignore_patterns(
            ".git",
            ".venv",
            "__pycache__",
            "*.egg-info",
            ".mypy_cache",
            ".ruff_cache",
            "node_modules",
            ".pytest_cache",
        )
        shutil.copytree(spec, into, ignore=skip, symlinks=True)
        return into
    return export(spec, into)


def export(rev: str, into: Path) -> Path:
    """``git archive`` of ``rev`` unpacked into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", rev], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    return into


FINDINGS = """
**What a lab VM is**: a real OpenSSH sshd (its own process and port) in its own mount namespace
(`unshare -m`), with its own 8 MB ext4 image loop-mounted at `/srv/data` (real `fsfreeze`)
and its own tmpfs at `/run/skytap-quiesce` (`demo.lab.Lab(private_state=True)`): each VM is a
distinct SSH host, mount, filesystem owner record and guardian, as the provider sees them. No
writer and no `~/.bashrc` (`writer=False`, `plain_shell=True`). 64 VMs started in 1.6 s at
a load of 10, 12.4 s in this run; with `--before` each tree has its own lab (128 sshds for 64
VMs side by side). The sshds' CPU is read from `/proc` in clock ticks (10 ms): the 1-VM
VM-side figures are that coarse, the 16- and 64-VM ones are sums divided by the hosts.

**What is measured** (issue 13): overhead = the freeze window minus the copy. The window is
the first `frozen_at` to the last `thawed_at`, each VM's own clock: the lab's VMs share this
machine's clock, so a bench may compare them (the provider never subtracts two VMs' clocks).
*The session's floor*: `QuiesceSession` alone (the controller is this process), `freeze()`,
a fake copy of known length, then `release()` over the held connections (with
`prepare_release()` during the copy where the tree has it): what a chain that holds the
session from freeze to release can reach, before its own wait for the copy (the chain finds
the copy complete half a poll interval late on average: 0.25 to 0.5 s with `frozen_copy`'s
0.5 s poll backing off to 1 s). *The DAG*: `airflow dags test` of `skytap_live_clone_backup`
against the simulator (copy time fixed), the figures from the thaw task's report and the
simulator's job. *Controller CPU*: the session's process (every thread) per host and step;
for the DAG, the whole `airflow dags test` process tree (Airflow's task starts dominate it).
*VM-side CPU*: every VM's sshd and what it ran and reaped, per host (logins, shells, the
guardian's commands; the detached guardian and its backstop are not in it: see the steps
table, measured without SSH). Preflight includes the SSH login; the session's release
includes `prepare_release()`.

**The machine**: 2 cores, shared with four other helpers' work and, in the lab, with all the
VMs: every VM's side runs on the same 2 cores, so at 64 VMs the VM side's CPU (the VM-side
columns, plus the detached guardian's in the steps table, for 128 VMs when two trees run
side by side) dominates the window here, where on real VMs each VM has its own CPU. Compare
the ratio, not the seconds.

**What changed in `quiesce/`** (issue 13, section 3): arm and thaw wait on the guardian's
flock instead of polling every 50 ms; `guardian_alive` without forks (it ran in loops); the
runner hands the uid over; a command's output is one log event, not one per report line;
the **staged arm** (every host's guardian and backstop running before the first freeze, then
all go at once; nothing frozen if the controller goes away before the go); and
**`prepare_release()`**, each host's thaw started during the copy so that the release is one
line per host. The DAG here still runs today's chain (the copy task's early thaw logs in
anew); the new chain holding one session from freeze to release is measured by running this
command again after it is merged.
"""


def cell(runs: list[dict[str, Any]], key: str) -> dict[str, float | int]:
    return summary([r[key] for r in runs])


def _median(runs: list[dict[str, Any]], key: str, per_host: bool = False) -> float | None:
    values = [
        float(r[key]) / (int(r["hosts"]) if per_host else 1)
        for r in runs
        if r.get(key) is not None and r.get("hosts")
    ]
    found = summary(values)
    return None if not found.get("n") else float(found["median"])


def _ratio(after: float | None, before: float | None) -> str:
    return "n/a" if after is None or not before else f"{after / before:.2f}"


def section(
    args: argparse.Namespace, after: dict[str, Any], before: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    rows = []
    verdicts = []
    for runner in ("dags_test", "scheduler"):
        for hosts, runs in sorted(after.get(runner, {}).items(), key=lambda x: int(x[0])):
            over = cell(runs, "overhead")
            goal = (
                HOST_GOALS.get(int(hosts), GOALS[runner])
                if runner == "dags_test"
                else GOALS[runner]
            )
            met = bool(over.get("n")) and float(over["median"]) <= goal
            verdicts.append((runner, hosts, met))
            prior = (before or {}).get(runner, {}).get(hosts, [])
            row = [RUNNERS[runner], hosts, fmt(over)]
            if before is not None:
                row += [
                    fmt(cell(prior, "overhead")) if prior else "n/a",
                    _ratio(_median(runs, "overhead"), _median(prior, "overhead")),
                ]
            ctl = _median(runs, "controller_cpu_s", per_host=True)
            vm = _median(runs, "vm_cpu_ms_per_host")
            row += [
                fmt(cell(runs, "copy")),
                f"{cell(runs, 'before_copy').get('median', 'n/a')} / "
                f"{cell(runs, 'after_copy').get('median', 'n/a')}",
                "n/a" if ctl is None else f"{ctl:.2f}",
                "n/a" if vm is None else f"{vm:.0f}",
                "n/a"
                if _median(runs, "load_1min") is None
                else f"{_median(runs, 'load_1min'):.0f}",
                f"<= {goal:g} s: {'met' if met else 'NOT met'}",
            ]
            if before is not None:
                bctl = _median(prior, "controller_cpu_s", per_host=True)
                bvm = _median(prior, "vm_cpu_ms_per_host")
                row[-4] += f" (before {'n/a' if bctl is None else f'{bctl:.2f}'})"
                row[-3] += f" (before {'n/a' if bvm is None else f'{bvm:.0f}'})"
            rows.append(row)
    header = ["runner", "hosts", "overhead (median, min to max, n)"]
    if before is not None:
        header += [f"overhead before ({args.before})", "ratio after / before"]
    header += [
        "copy (Skytap's count)",
        "median before / after the copy",
        "controller CPU s per host (whole dags test)",
        "VM-side CPU ms per host",
        "load (1 min)",
        "target",
    ]
    body = session_table(args, after, before)
    if rows:
        body += "\n\n" + table(header, rows)
        body += "\n\n" + tasks_table(after)
    if before is not None and rows:
        body += "\n\nBefore:\n\n" + tasks_table(before)
    steps = getattr(args, "steps_result", None)
    if steps:
        body += "\n\n" + steps_table(steps)
    body += "\n\n" + FINDINGS.strip()
    data = {"args": vars(args), "after": after, "before": before, "verdicts": verdicts}
    return body, data


def _steps(runs: list[dict[str, Any]], key: str) -> str:
    """Median ms per host of preflight / arm / release over ``runs``."""
    parts = []
    for step in ("preflight", "arm", "release"):
        found = summary([r[key][step] for r in runs if r.get(key)])
        parts.append(f"{found['median']:.1f}" if found.get("n") else "n/a")
    return " / ".join(parts)


def session_table(
    args: argparse.Namespace, after: dict[str, Any], before: dict[str, Any] | None
) -> str:
    """The session's floor: QuiesceSession alone, freeze, fake copy, release."""
    label = {"after": args.after or "this tree", "before": args.before}
    rows = []
    for which, figs in (("after", after), ("before", before)):
        session = (figs or {}).get("session") or {}
        if "error" in session:
            rows.append([label[which], "-", session["error"]] + ["-"] * 7)
            continue
        for hosts, runs in sorted(session.items(), key=lambda x: int(x[0])):
            over = cell(runs, "overhead")
            goal = HOST_GOALS.get(int(hosts))
            ratio = ""
            if which == "after" and before:
                prior = (before.get("session") or {}).get(hosts) or []
                if isinstance(prior, list) and prior:
                    ratio = _ratio(_median(runs, "overhead"), _median(prior, "overhead"))
            rows.append(
                [
                    label[which],
                    hosts,
                    fmt(over),
                    ratio or "-",
                    f"{cell(runs, 'before_copy').get('median')} / "
                    f"{cell(runs, 'after_copy').get('median')}",
                    cell(runs, "freeze_spread").get("median"),
                    cell(runs, "release_call").get("median"),
                    _steps(runs, "ctl_ms_per_host"),
                    _steps(runs, "vm_ms_per_host"),
                    f"{_median(runs, 'load_1min') or 0:.0f}",
                    "-"
                    if goal is None or not over.get("n")
                    else f"<= {goal:g} s: "
                    + ("met" if float(over["median"]) <= goal else "NOT met"),
                ]
            )
    if not rows:
        return ""
    header = [
        "tree",
        "hosts",
        "overhead: window - copy (median, min to max, n)",
        "ratio to before",
        "median s before / after the copy",
        "freeze spread s",
        "release() s",
        "controller CPU ms per host: preflight / arm / release",
        "VM-side CPU ms per host: preflight / arm / release",
        "load (1 min)",
        "target",
    ]
    return (
        f"**The session's floor** (`QuiesceSession` alone, no Airflow: `freeze()`, a fake copy "
        f"of {args.copy_seconds:g} s, `release()` over the connections it holds; "
        f"{args.session_reps} repetitions per host count, alternating the order):\n\n"
        + table(header, rows)
    )


def steps_table(steps: dict[str, Any]) -> str:
    """The ``--steps`` figures: VM-side CPU per step on one host, median ms."""
    names = ("preflight", "arm", "release", "guardian")
    rows = [
        [which] + [f"{steps[which].get(n, 'n/a')}" for n in names]
        for which in ("after", "before")
        if which in steps
    ]
    return (
        f"VM-side CPU per host of each step (median ms of {steps.get('reps')} alternating "
        f"repetitions, the commands as root on a loop-mounted ext4, no SSH; `guardian`: the "
        f"detached guardian and its watchdog over a 0.5 s hold, reaped as orphans; load "
        f"{steps.get('load_1min')}; command `PYTHONPATH=$PWD .venv/bin/python -m "
        f"bench.freeze_window --steps {steps.get('rev')} --steps-reps {steps.get('reps')}`):\n\n"
        + table(["script", *names], rows)
    )


def tasks_table(figs: dict[str, Any]) -> str:
    """Median start and end of each task, seconds after the first freeze."""
    rows = []
    seen = {
        t
        for runner in ("dags_test", "scheduler")
        for runs in figs.get(runner, {}).values()
        for r in runs
        for t in r.get("tasks", {})
    }
    present = [t for t in TASKS if t in seen]
    for runner in ("dags_test", "scheduler"):
        for hosts, runs in sorted(figs.get(runner, {}).items(), key=lambda x: int(x[0])):
            row = [RUNNERS[runner], hosts]
            for task in present:
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
        "first freeze:\n\n" + table(["runner", "hosts", *present], rows)
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
    parser.add_argument("--hosts", default="1,16,64")
    parser.add_argument("--copy-seconds", type=float, default=3.0)
    parser.add_argument("--dags-test-runs", type=int, default=3)
    parser.add_argument("--scheduler-runs", type=int, default=2)
    parser.add_argument(
        "--session-reps",
        type=int,
        default=5,
        help="QuiesceSession alone (freeze, a fake copy, release over the held connections), "
        "this many times per host count, before the DAG runs; 0: none",
    )
    parser.add_argument(
        "--before",
        help="also measure this tree, side by side: a commit of this repository (git archive) "
        "or a directory (copied)",
    )
    parser.add_argument(
        "--after",
        help="measure this tree (a commit or a directory, copied) as the after side instead "
        "of the working tree",
    )
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
    parser.add_argument(
        "--steps",
        metavar="REV",
        help="only the VM-side CPU of preflight, arm and release on one host, this tree's "
        "script against REV's, as root on a loop-mounted ext4; prints JSON",
    )
    parser.add_argument(
        "--steps-reps",
        type=int,
        default=10,
        help="repetitions of --steps; with --before REV (and no --after), the same comparison "
        "after the cases, in the section (0: not)",
    )
    args = parser.parse_args(argv)
    if args.steps:
        print(json.dumps(step_cpu(args.steps, args.steps_reps)))
        return 0
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
    if args.before or args.after:
        # Both trees at once, so both see the same load (the machine is shared and noisy):
        # each other tree in a subprocess, this one (unless --after names another) here.
        with tempfile.TemporaryDirectory(prefix="bench-window-trees-") as tmp:
            procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
            for which in ("before", "after"):
                spec = getattr(args, which)
                if spec:
                    raw = Path(tmp) / f"{which}.json"
                    tree = prepare_tree(spec, Path(tmp) / which)
                    procs[which] = (start_tree(tree, args, raw, which), raw)
            try:
                after = run_cases(args) if not args.after else {}
            finally:
                for proc, _raw in procs.values():
                    proc.wait(timeout=3600)
            found = {
                which: dict(json.loads(raw.read_text()))
                for which, (_proc, raw) in procs.items()
                if raw.exists()
            }
            before = found.get("before")
            if args.after:
                after = found.get("after") or {"errors": [f"no figures from {args.after}"]}
    else:
        after = run_cases(args)
    if args.steps_reps and args.before and not args.after and not Path(args.before).is_dir():
        # The guardian's own CPU per step (no SSH), this tree's script against --before's.
        args.steps_result = step_cpu(args.before, args.steps_reps)
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
