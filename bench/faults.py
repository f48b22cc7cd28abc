"""Faults of the distributed Airflow, each counted: what is left after a component or a
service dies in the middle of a backup.

The stack is ``tests.system.airflow_stack.AirflowStack`` (docker-compose.yaml's deployment on
this machine: PostgreSQL, Redis, CeleryExecutor, two workers, two triggerers, api-server,
scheduler, dag-processor) with ``restart_always`` (the compose file's ``restart: always``),
on the lab's real VMs (``demo.lab``: sshd, fsfreeze, a writer on each VM's disk) and the
Skytap simulator, with no API faults: only the infrastructure fails. Each run is
``skytap_live_clone_backup`` triggered through the REST API with its own logical date; at
its moment, one fault:

- ``worker_kill``: the Celery worker running ``freeze`` SIGKILLed with every process it
  started, while every VM is frozen and the copy runs (the copy outlasts the guardians'
  deadline, ``max_freeze_seconds``); that worker stays down until the run ends (a machine
  that died), so the other worker runs what is left;
- ``triggerer_kill``: the triggerer running the region copies' triggers SIGKILLed while they
  are deferred; it stays down until the run ends, so the other triggerer must take them over;
- ``scheduler_restart``: ``docker compose restart`` of the scheduler, VMs frozen;
- ``redis_restart``: Redis stopped (it saves its dataset) and started again, VMs frozen;
- ``postgres_restart``: ``pg_ctl restart -m fast`` (every connection cut), VMs frozen.

Counted per fault: runs completed, failed (and the task that reported it), lost (not ended
within the run timeout), duplicate copies (templates of one run's name in one region,
deleted ones included), runs after which a VM was frozen or a guardian left, components
restarted by ``restart: always``, and who carried on (the other worker, the other
triggerer). The goal: every VM thawed, no duplicate copy, no lost run, nothing frozen.

    PYTHONPATH=$PWD .venv/bin/python -m bench.faults            # 2 runs of each fault
    PYTHONPATH=$PWD .venv/bin/python -m bench.faults --repeat 1 --only triggerer_kill
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from bench.common import fmt, machine, summary, table, write_section
from demo import airflow_cli, lab
from skytap_simulator.control import SimulatorAdmin, SimulatorProcess
from skytap_simulator.seed import default_seed
from tests.system.airflow_stack import AirflowStack, AirflowStackError

DAG_ID = "skytap_live_clone_backup"
ENV = "1001"
FAULTS = ("worker_kill", "triggerer_kill", "scheduler_restart", "redis_restart", "postgres_restart")
HEARTBEAT_TIMEOUT = 20  # [scheduler] task_instance_heartbeat_timeout: a dead worker's task
RUN_TIMEOUT = 600.0
START_DATE = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


@dataclass
class Moment:
    """What a fault needs of a run: the simulator's durations and the run's conf."""

    copy_seconds: float = 3.0
    region_copy_seconds: float = 3.0
    max_freeze_seconds: int = 120


# The copy outlasts the killed run's guardian deadline (the guardians must thaw on their own);
# region copies long enough to kill a triggerer and let the other take over (its health
# threshold is 10 s in the stack's fast settings); the others fault inside a 20 s frozen copy.
MOMENTS = {
    "worker_kill": Moment(copy_seconds=40.0, max_freeze_seconds=30),
    "triggerer_kill": Moment(region_copy_seconds=40.0),
    "scheduler_restart": Moment(copy_seconds=20.0),
    "redis_restart": Moment(copy_seconds=20.0),
    "postgres_restart": Moment(copy_seconds=20.0),
}


@dataclass
class Injection:
    """One fault injected into one run, and what the stack did about it."""

    fault: str
    run_id: str
    at: str = ""  # UTC time of the fault
    target: str = ""  # the component or service
    detail: str = ""
    pids: list[int] = field(default_factory=list)
    seconds: float = 0.0  # how long a restart took
    kept_down: str | None = None  # a component left down until the run ended
    before: dict[str, Any] = field(default_factory=dict)  # (task, map) -> where it ran


class Injector:
    """Injects faults at their moment in a run; shared with bench/soak.py.

    :param af: the stack (with ``restart_always``)
    :param vms: the lab
    :param stalled_now: VM -> seconds its writer has not written (a frozen filesystem)
    """

    def __init__(self, af: AirflowStack, vms: lab.Lab, stalled_now: Any) -> None:
        self.af, self.vms, self.stalled_now = af, vms, stalled_now

    def all_frozen(self) -> dict[str, float]:
        stalled = self.stalled_now()
        return stalled if len(stalled) == len(self.vms.vms) else {}

    def try_inject(self, fault: str, run_id: str) -> Injection | None:
        """Inject ``fault`` if this is its moment in the run; None when not yet."""
        tis = self.af.task_instances(DAG_ID, run_id)
        by_id = {(t["task_id"], t["map_index"]): t for t in tis}
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        made = Injection(fault, run_id, at=now)
        if fault == "triggerer_kill":
            deferred = [
                t
                for t in tis
                if t["task_id"] == "copy_to_dr"
                and t["state"] == "deferred"
                and (t.get("triggerer_job") or {}).get("hostname") in self.af.components
            ]
            copies = [t for t in tis if t["task_id"] == "copy_to_dr" and t["map_index"] >= 0]
            if not deferred or len(deferred) < len(copies):
                return None  # every region copy deferred on a triggerer first
            hosts = collections.Counter(t["triggerer_job"]["hostname"] for t in deferred)
            target = hosts.most_common(1)[0][0]
            made.before = {
                f"copy_to_dr[{t['map_index']}]": t["triggerer_job"]["hostname"] for t in deferred
            }
            made.target, made.kept_down = target, target
            made.detail = f"{hosts[target]} of {len(deferred)} deferred region copies on it"
            made.pids = self.af.kill(target, keep_down=True)
            return made
        freeze = by_id.get(("freeze", -1)) or {}
        frozen = self.all_frozen()
        if freeze.get("state") != "running" or not frozen:
            return None  # every VM frozen, the freeze task holding them through the copy
        made.detail = f"writers stalled {frozen}"
        if fault == "worker_kill":
            worker = self.af.worker_running(freeze)
            if worker is None:
                return None
            made.before = {"freeze": worker}
            made.target, made.kept_down = worker, worker
            made.pids = self.af.kill(worker, keep_down=True)
        elif fault == "scheduler_restart":
            made.target = "scheduler"
            made.seconds = round(self.af.restart("scheduler"), 1)
        elif fault == "redis_restart":
            made.target = "redis"
            made.seconds = round(self.af.services.restart_redis(), 1)
        elif fault == "postgres_restart":
            made.target = "postgres"
            made.seconds = round(self.af.services.restart_postgres(), 1)
        else:
            raise ValueError(f"fault {fault!r}: not one of {', '.join(FAULTS)}")
        return made

    def after_run(self, made: Injection | None) -> None:
        """Start again a component kept down for the run."""
        if made is not None and made.kept_down:
            self.af.start_again(made.kept_down)
            made.kept_down = None


def stack_env(
    simproc: SimulatorProcess,
    user: Mapping[str, Any],
    vms: lab.Lab,
    *,
    timeout: float = 10,
    retry_deadline: float = 300,
) -> dict[str, str]:
    """Connections and settings of the stack the fault runs use (and the soak's).

    :param simproc: the simulator
    :param user: the seed's user the skytap_default connection logs in as
    :param vms: the lab (skytap_vm_ssh logs in on its VMs)
    :param timeout: seconds one HTTP request may take (the connection's ``timeout``)
    :param retry_deadline: seconds one hook call keeps retrying
    """
    skytap = {
        "conn_type": "skytap",
        "host": simproc.url,
        "login": user["username"],
        "password": user["token"],
        "extra": {"timeout": timeout, "retry_deadline": retry_deadline},
    }
    return {
        "AIRFLOW_CONN_SKYTAP_DEFAULT": json.dumps(skytap),
        "AIRFLOW_CONN_SKYTAP_VM_SSH": json.dumps(vms.ssh_connection()),
        "PYTHONPATH": str(airflow_cli.REPO),
        # A killed worker reports nothing: the scheduler notices its missing heartbeat.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    }


def copies_by_run(state: Mapping[str, Any]) -> collections.Counter[tuple[str, str]]:
    """(template name, region) -> templates made, deleted ones included."""
    return collections.Counter(
        (t["name"], t["region"])
        for t in state["templates"]
        if t["name"].startswith(f"{DAG_ID}-environment-{ENV}-")
    )


def where_ran(af: AirflowStack, run_id: str) -> dict[str, Any]:
    """Task -> the workers its tries ran on, and the triggerers seen running its triggers."""
    out: dict[str, Any] = {}
    for ti in af.task_instances(DAG_ID, run_id):
        label = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        out[label] = {"state": ti["state"], "try": ti["try_number"], "worker": ti["hostname"]}
    for seen in af.sightings(DAG_ID, run_id):
        if seen.triggerer:
            label = seen.task_id if seen.map_index < 0 else f"{seen.task_id}[{seen.map_index}]"
            found = out.setdefault(label, {}).setdefault("triggerers", [])
            if seen.triggerer not in found:
                found.append(seen.triggerer)
    return out


def run_one(
    fault: str,
    index: int,
    logical: datetime,
    af: AirflowStack,
    admin: SimulatorAdmin,
    vms: lab.Lab,
    injector: Injector,
    regions: list[str],
) -> dict[str, Any]:
    from bench.soak import guardians_gone, task_error

    moment = MOMENTS[fault]
    admin.config(copy_seconds=moment.copy_seconds, region_copy_seconds=moment.region_copy_seconds)
    conf = {
        "dr_regions": regions,
        "dr_poll_seconds": 1,
        "max_freeze_seconds": moment.max_freeze_seconds,
        "keep": 2,
    }
    restarts_before = len(af.restarts)
    began = time.monotonic()
    run_id = af.trigger(DAG_ID, conf, logical, unpause=index == 0)
    made: Injection | None = None
    state = "queued"
    try:
        while time.monotonic() - began < RUN_TIMEOUT:
            # wait_for_run's polling, so that every change (and triggerer) is recorded; a
            # restarting database or api-server may fail a poll
            with contextlib.suppress(AirflowStackError, OSError, httpx.HTTPError):
                state = af.poll_run(DAG_ID, run_id)
            if state in ("success", "failed"):
                break
            if made is None:
                with contextlib.suppress(AirflowStackError, OSError, httpx.HTTPError):
                    made = injector.try_inject(fault, run_id)
                    if made is not None:
                        print(f"  {fault}: {made.target} ({made.detail})", flush=True)
            time.sleep(0.5 if made is None else 1.0)
    finally:
        injector.after_run(made)
    seconds = time.monotonic() - began
    tasks = where_ran(af, run_id)
    failed = {}
    for ti in af.task_instances(DAG_ID, run_id):
        if ti["state"] == "failed":
            label = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            # A task whose worker died says nothing; the scheduler's verdict comes first.
            failed[label] = scheduler_verdict(af, run_id, ti["task_id"]) or task_error(
                af, run_id, ti, max(ti["try_number"], 1)
            )
    frozen = vms.frozen()
    left = guardians_gone(vms)
    if frozen:
        print(f"  !! frozen after run {run_id}: {frozen}; thawing to go on")
        vms.thaw_all()
    name = f"{DAG_ID}-environment-{ENV}-{logical:%Y%m%dT%H%M%SZ}"
    made_copies = {r: c for (n, r), c in copies_by_run(admin.state()).items() if n == name}
    record = {
        "fault": fault,
        "index": index,
        "run_id": run_id,
        "logical_date": logical.isoformat(),
        "state": state,
        "seconds": round(seconds, 1),
        "injection": vars(made) if made else None,
        "tasks": tasks,
        "failed_tasks": failed,
        "copies_by_region": made_copies,
        "frozen_after": frozen,
        "guardians_after": left,
        "restarts": af.restarts[restarts_before:],
    }
    with contextlib.suppress(AirflowStackError):
        thaw = af.xcom(DAG_ID, run_id, "thaw")
        record["fired_by"] = {h["host"]: h.get("fired_by") for h in thaw["hosts"]}
        record["consistency"] = thaw.get("consistency")
    print(
        f"run {index + 1} {fault}: {state} in {seconds:.0f} s; copies {made_copies}"
        + (f"; failed {failed}" if failed else "")
        + (f"; FROZEN {frozen}" if frozen else "")
        + (f"; GUARDIANS {sorted(left)}" if left else ""),
        flush=True,
    )
    return record


def scheduler_verdict(af: AirflowStack, run_id: str, task_id: str) -> str | None:
    """What the scheduler logged when it failed a task whose process left no log: the line
    of its missing heartbeat (a worker that died), if any."""
    for line in af.log("scheduler").splitlines():
        if "without a heartbeat" in line and run_id in line and f"'{task_id}'" in line:
            host = line.split("'Hostname': '", 1)[-1].split("'", 1)[0]
            return f"failed by the scheduler: no heartbeat from its worker ({host})"
    return None


def carried_on(record: Mapping[str, Any]) -> str:
    """Who took over from the killed component, from where the tasks ran."""
    made = record.get("injection") or {}
    fault, target = record["fault"], made.get("target")
    tasks = record["tasks"]
    if fault == "worker_kill":
        others = sorted(
            {t.get("worker") for t in tasks.values() if t.get("worker") not in (None, target)}
        )
        return f"later tasks on {', '.join(o for o in others if o) or 'no other worker'}"
    if fault == "triggerer_kill":
        taken = [
            label
            for label, was in (made.get("before") or {}).items()
            if was == target
            and any(t != target for t in tasks.get(label, {}).get("triggerers", []))
        ]
        held = [label for label, was in (made.get("before") or {}).items() if was == target]
        return f"{len(taken)} of {len(held)} triggers seen running on the other triggerer"
    return "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each fault (default 2)")
    parser.add_argument("--only", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--regions", nargs="+", default=["EMEA", "APAC-2"])
    parser.add_argument("--no-write", action="store_true", help="do not write the section")
    args = parser.parse_args(argv)
    from bench.soak import Watcher, remove_deleted_images

    reason = lab.unavailable()
    if reason:
        print(f"faults: needs the lab's real VMs: {reason}", file=sys.stderr)
        return 2
    started = machine()
    workdir = Path(tempfile.mkdtemp(prefix="skytap-faults-"))
    records: list[dict[str, Any]] = []
    error = None
    startup: dict[str, Any] = {}
    order = [f for _ in range(args.repeat) for f in args.only]
    step = timedelta(hours=1)
    first = START_DATE + timedelta(days=20)
    try:
        with (
            lab.Lab(size_mb=64) as vms,
            SimulatorProcess(data_dir=workdir / "sim-data") as simproc,
        ):
            admin = simproc.admin
            seed = vms.seed(default_seed(), ENV)
            user = seed["users"][0]
            admin.reset(seed)
            admin.config(delete_seconds=0.5, transition_seconds=0.5)
            env = stack_env(simproc, user, vms)
            load = [round(x, 2) for x in __import__("os").getloadavg()]
            with AirflowStack(
                workdir / "airflow",
                airflow_cli.DAGS,
                env,
                dag_ids=[DAG_ID],
                secrets=[user["token"]],
                restart_always=True,
            ) as af:
                startup = {"seconds": round(af.startup_seconds, 1), "load_before": load}
                watcher = Watcher(vms, admin)
                watcher.start()
                injector = Injector(af, vms, watcher.stalled_now)
                try:
                    for index, fault in enumerate(order):
                        logical = first + index * step
                        records.append(
                            run_one(fault, index, logical, af, admin, vms, injector, args.regions)
                        )
                        remove_deleted_images(admin, workdir / "sim-data")
                finally:
                    watcher.finish()
                final_frozen = vms.frozen()
                leftover_restarts = list(af.restarts)
            leftovers = af.leftovers()
    except Exception:
        import traceback

        error = traceback.format_exc()
        print(error, file=sys.stderr)
        final_frozen, leftovers, leftover_restarts = ["(not checked)"], [], []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "startup": startup,
        "records": records,
        "final_frozen": final_frozen,
        "leftover_components": leftovers,
        "restarts": leftover_restarts,
        "error": error,
    }
    if not args.no_write:
        write(args, result, started)
    ok = not error and all(
        r["state"] in ("success", "failed")
        and not r["frozen_after"]
        and not r["guardians_after"]
        and all(c == 1 for c in r["copies_by_region"].values())
        for r in records
    )
    return 0 if ok and not final_frozen else 1


def write(args: argparse.Namespace, result: dict[str, Any], started: dict[str, Any]) -> None:
    records = result["records"]
    rows = []
    for fault in args.only:
        mine = [r for r in records if r["fault"] == fault]
        injected = [r for r in mine if r["injection"]]
        done = [r for r in mine if r["state"] == "success"]
        failed = [r for r in mine if r["state"] == "failed"]
        reported = [r for r in failed if r["failed_tasks"]]
        lost = [r for r in mine if r["state"] not in ("success", "failed")]
        dups = sum(max(0, c - 1) for r in mine for c in r["copies_by_region"].values())
        frozen = [r for r in mine if r["frozen_after"]]
        guardians = [r for r in mine if r["guardians_after"]]
        restarted = collections.Counter(name for r in mine for _, name, _ in r["restarts"])
        rows.append(
            [
                f"`{fault}`",
                f"{len(injected)} of {len(mine)}",
                len(done),
                f"{len(failed)} ({len(reported)} with the failed task's error)",
                len(lost),
                dups,
                len(frozen),
                len(guardians),
                ", ".join(f"{k} {v}" for k, v in restarted.items()) or "none",
                "; ".join(carried_on(r) for r in injected) or "-",
            ]
        )
    goal = all(
        r["state"] in ("success", "failed")
        and not r["frozen_after"]
        and not r["guardians_after"]
        and all(c == 1 for c in r["copies_by_region"].values())
        for r in records
    ) and not (result["final_frozen"] or result["error"])
    startup = result["startup"]
    body = [
        "**Goal**: after each fault every VM thawed, no duplicate copy, no lost run (failed "
        "and reported, or completed), nothing left frozen. **"
        + ("Met" if goal and records else "NOT met")
        + f" for the {len(records)} runs made.**",
        "",
        "Setup: `AirflowStack` (docker-compose.yaml's deployment: PostgreSQL and Redis from "
        "Debian's packages on loopback, CeleryExecutor, two Celery workers with one slot each, "
        "two triggerers, api-server, scheduler, dag-processor; `restart: always`) on the lab's "
        "three VMs, no API faults; `[scheduler] task_instance_heartbeat_timeout` "
        f"{HEARTBEAT_TIMEOUT} s, `[triggerer] triggerer_health_check_threshold` 10 s. Each run "
        f"backs up environment {ENV} with DR regions {', '.join(args.regions)}, keep 2. "
        + (
            f"The stack started in {startup.get('seconds')} s (services, migration, every "
            f"component healthy, the DAG parsed; load average before "
            f"{'/'.join(str(x) for x in startup.get('load_before', []))})."
            if startup
            else ""
        ),
        "",
        "Moments: "
        + "; ".join(
            f"`{f}` copy {m.copy_seconds:g} s, region copy {m.region_copy_seconds:g} s, "
            f"max_freeze_seconds {m.max_freeze_seconds}"
            for f, m in MOMENTS.items()
            if f in args.only
        )
        + ". The worker and triggerer kills keep the killed one down until the run ends; "
        "the restarts are `docker compose restart`'s SIGTERM and start.",
        "",
        table(
            [
                "fault",
                "injected",
                "completed",
                "failed",
                "lost",
                "duplicate copies",
                "runs leaving a VM frozen",
                "runs leaving a guardian",
                "restarted by restart: always",
                "who carried on",
            ],
            rows,
        ),
        "",
        "Run time: "
        + fmt(summary([r["seconds"] for r in records]))
        + f". Filesystems frozen at the end: {len(result['final_frozen'])}; Airflow processes "
        f"left after the stack stopped: {len(result['leftover_components'])}.",
        "",
        "### Each run",
        "",
        table(
            ["fault", "run", "state", "s", "fault hit", "failed task: error", "copies"],
            [
                [
                    r["fault"],
                    r["run_id"][-15:],
                    r["state"],
                    r["seconds"],
                    (
                        f"{r['injection']['target']} at {r['injection']['at'][11:]}"
                        f" ({r['injection']['detail'][:90]})"
                        if r["injection"]
                        else "never (moment not seen)"
                    ),
                    "; ".join(f"{t}: {e[:160]}" for t, e in r["failed_tasks"].items()) or "-",
                    ", ".join(f"{k} {v}" for k, v in sorted(r["copies_by_region"].items())),
                ]
                for r in records
            ],
        ),
        "",
    ]
    if result["error"]:
        body += ["**The harness broke off:**", "", "```", result["error"][-3000:], "```", ""]
    options = []
    if args.repeat != 2:
        options.append(f"--repeat {args.repeat}")
    if list(args.only) != list(FAULTS):
        options.append("--only " + " ".join(args.only))
    command = "PYTHONPATH=$PWD .venv/bin/python -m bench.faults" + (
        " " + " ".join(options) if options else ""
    )
    write_section(
        "faults",
        "Faults of the distributed Airflow",
        command,
        "\n".join(body),
        result,
        started=started,
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
