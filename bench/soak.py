"""Reliability soak: the backup DAG run after run on the distributed Airflow, on real VMs, with
20% of Skytap API calls failing and the infrastructure faults of bench/faults.py.

Parts, all real but Skytap: ``demo.lab.Lab`` (three sshds, each in its own mount namespace with
a loop-mounted ext4 disk and a writer fsyncing records), the Skytap simulator
(``SimulatorProcess``) failing a fifth of the API requests (423, 429, 500, 503, dropped
connections, some after the write was carried out, and delays longer than the connection's
timeout), and docker-compose.yaml's Airflow on this machine
(``tests.system.airflow_stack.AirflowStack``: PostgreSQL, Redis, CeleryExecutor, two workers,
two triggerers, api-server, scheduler, dag-processor, ``restart: always``).

Each run is ``skytap_live_clone_backup`` triggered through the REST API with its own logical
date (one per day, so each backup is named after its date; a backfill cannot make 50 runs: the
DAG starts on 2026-11-01), with one DR region and ``keep=2``. Runs go one after another, so that
after each one the soak can check that no VM is frozen and no guardian is left. Runs spread
evenly over the soak each get one fault of ``--faults`` at its moment (bench/faults.py's
``Injector``): the Celery worker running ``freeze`` SIGKILLed while every VM is frozen (the
guardians must thaw by their deadline), the triggerer running the region copies' triggers
SIGKILLed (the other must take them over), the scheduler, Redis and PostgreSQL restarted while
the VMs are frozen.

Checked and reported: runs green and failed (by task and error), tasks retried and why,
injected failures by kind (the simulator's request log), duplicates in the simulator's final
state, what prune kept, every kept copy's disks, writers' longest stall (a frozen filesystem),
filesystems frozen and guardians left after each run and at the end, guardian deadline fires,
and every log the soak produced grepped for the API token and the SSH private key.

    make bench BENCH=soak                                   # 50 runs, about 30 minutes
    PYTHONPATH=$PWD .venv/bin/python -m bench.soak --runs 5  # a quick look
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import httpx

from airflow_provider_skytap.backups import consistency
from airflow_provider_skytap.operators.retention import CONFIRMED
from bench.common import fmt, machine, summary, table, write_section
from bench.faults import (
    FAULTS,
    HEARTBEAT_TIMEOUT,
    MOMENTS,
    Injection,
    Injector,
    scheduler_verdict,
    stack_env,
)
from demo import airflow_cli, lab
from skytap_simulator.control import SimulatorAdmin, SimulatorError, SimulatorProcess
from skytap_simulator.seed import default_seed
from tests.system.airflow_stack import AirflowStack, AirflowStackError

DAG_ID = "skytap_live_clone_backup"
ENV = "1001"
REGION = "US-West"  # environment 1001's region: where the clone's template is
# The guardian's deadline (seconds): the copy, three task starts and a margin. On this machine,
# shared with other benchmarks (load average 20 to 50), freeze -> clone -> wait -> thaw took
# over 45 s under the scheduler, so a tighter deadline fails runs for the machine's load.
MAX_FREEZE = 120
CONN_TIMEOUT = 10  # seconds one HTTP request may take (the connection's `timeout`)
RETRY_DEADLINE = 300  # seconds one hook call keeps retrying (the connection's `retry_deadline`;
# default 600: with 60 s, one call met 6 faults in a row in a soak and the run failed)
# One draw per request: these add up to 18%; the delay rules below (a request delayed past the
# connection's timeout, on average one in `--delay-every` requests) make up the rest. Counted in
# requests, not seconds: a delay installed every N seconds hits every retry of a lone caller
# that retries about that often (a soak saw one call time out 12 times in a row).
ERROR_RATES = {423: 0.04, 429: 0.04, 500: 0.03, 503: 0.04}
DROP_RATE = 0.03
AMBIGUOUS = 0.5  # of the 5xx and drops that hit a write, the part after it was carried out
RUN_TIMEOUT = 600.0
START_DATE = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)  # the DAG's first scheduled run
PROGRESS = Path(tempfile.gettempdir()) / "skytap-soak-runs.json"  # each run as it ends


class Tee:
    """stdout that is also written to a file (the soak's own log, grepped for secrets)."""

    def __init__(self, stream: TextIO, path: Path) -> None:
        self.stream, self.file = stream, path.open("a")

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()


class Watcher(threading.Thread):
    """Samples every VM's writer (a stall is a frozen filesystem) and merges the simulator's
    request log (it keeps the last 10,000; this keeps them all, by request id)."""

    def __init__(self, vms: lab.Lab, admin: SimulatorAdmin, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.vms, self.admin, self.period = vms, admin, period
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.requests: dict[str, dict[str, Any]] = {}
        self.stalls: list[tuple[str, float, float]] = []  # (vm, from, seconds) >= 2 s
        self.longest: dict[str, float] = {vm.name: 0.0 for vm in vms.vms}
        self._last: dict[str, tuple[int, float]] = {}
        self._next_log = 0.0

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        with self.lock:
            for vm in self.vms.vms:
                count = vm.records()
                last = self._last.get(vm.name)
                if last is None or count != last[0]:
                    if last is not None:
                        self._ended(vm.name, last[1], now)
                    self._last[vm.name] = (count, now)
                else:
                    self.longest[vm.name] = max(self.longest[vm.name], now - last[1])
        if now >= self._next_log:
            self._next_log = now + 3
            self.merge_requests()

    def _ended(self, name: str, since: float, now: float) -> None:
        if now - since >= 2:
            self.stalls.append((name, since, round(now - since, 1)))

    def merge_requests(self) -> None:
        with contextlib.suppress(SimulatorError, OSError, ValueError):
            for entry in self.admin.requests():
                self.requests[entry["request_id"]] = entry

    def stalled_now(self) -> dict[str, float]:
        """VM -> seconds its writer has not written (at least 1 s), right now."""
        now = time.monotonic()
        with self.lock:
            return {
                name: round(now - at, 1) for name, (_, at) in self._last.items() if now - at >= 1.0
            }

    def finish(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
        self.merge_requests()


def guardians(vms: lab.Lab) -> dict[str, list[str]]:
    """VM -> command lines of the quiesce guardians (and watchdogs) running in it."""
    found: dict[str, list[str]] = {}
    for vm in vms.vms:
        for pid in vm.namespace_pids():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if "skytap-quiesce" in cmd:
                    found.setdefault(vm.name, []).append(cmd.strip()[:200])
    return found


def guardians_gone(vms: lab.Lab, within: float = 10.0) -> dict[str, list[str]]:
    """Guardians still there after ``within`` seconds (a thaw's guardian exits just after)."""
    deadline = time.monotonic() + within
    while True:
        left = guardians(vms)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def error_line(log: str) -> str:
    """The line of a task log that says why the try failed (its last error line)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    pick = ""
    for ln in lines:
        if re.search(r"(Error|Exception|failed|Failed|Timeout|timed out)", ln) and not re.search(
            r"(Traceback|File \"|^\s*\^)", ln
        ):
            pick = ln
    pick = re.sub(r"^\S+T\S+\s+", "", pick)  # the timestamp
    pick = re.sub(r"\b(request id|rid=)\s*[0-9a-f-]{8,}", r"\1 …", pick)
    return pick[:300]


def task_error(af: AirflowStack, run_id: str, ti: dict[str, Any], try_number: int) -> str:
    """Why a task try failed: the exception its log file records (type: message), else the
    log's last error line, else what the REST API's log view shows."""
    folder = af.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
    if ti["map_index"] >= 0:
        folder /= f"map_index={ti['map_index']}"
    path = folder / f"attempt={try_number}.log"
    found = ""
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                entry = json.loads(line)
                for detail in entry.get("error_detail") or []:
                    found = f"{detail.get('exc_type')}: {detail.get('exc_value')}"
        if not found:
            found = error_line(path.read_text(errors="replace"))
    if not found:
        with contextlib.suppress(AirflowStackError):
            found = error_line(
                af.task_log(DAG_ID, run_id, ti["task_id"], try_number, ti["map_index"])
            )
    if not found:
        found = f"(no error in the log; state {ti['state']})"
    return found[:400]


def short_reason(line: str) -> str:
    """A failure's kind, for counting (ids, numbers and names stripped)."""
    text = re.sub(r"skytap_live_clone_backup-\S+", "NAME", line)
    text = re.sub(r"\(VM \d+ at [0-9.:]+\)", "", text)
    text = re.sub(r"at \d{4}-\d\d-\d\dT[0-9:.+]+", "at T", text)
    text = re.sub(r"request id [0-9a-f-]+", "request id …", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:220]


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.runs: list[dict[str, Any]] = []
        self.injections: list[dict[str, Any]] = []
        # run index -> fault, spread evenly over the runs
        self.schedule = {
            round((k + 1) * args.runs / (len(args.faults) + 1)): fault
            for k, fault in enumerate(args.faults)
        }
        self.delay_rules = 0
        self.next_delay_at = 0  # the request count at which the next delay rule is installed
        self.after_run: list[dict[str, Any]] = []

    # -- faults --------------------------------------------------------------------------

    def faults(self, admin: SimulatorAdmin, with_delay: bool) -> None:
        """Install the random faults, plus one delay longer than the connection's timeout for
        the next request (any method), carried out before or after the wait."""
        rules = []
        if with_delay:
            rules.append(
                {
                    "action": "delay",
                    "seconds": CONN_TIMEOUT + 2,
                    "after": self.rng.random() < 0.5,
                    "count": 1,
                }
            )
            self.delay_rules += 1
        admin.faults(
            error_rates={str(k): v for k, v in ERROR_RATES.items()},
            drop_rate=DROP_RATE,
            ambiguous_fraction=AMBIGUOUS,
            retry_after_s=1,
            rules=rules,
        )

    # -- one run -------------------------------------------------------------------------

    def conf(self, fault: str | None = None) -> dict[str, Any]:
        return {
            "dr_regions": list(self.args.regions),
            "dr_poll_seconds": 1,
            "max_freeze_seconds": MOMENTS[fault].max_freeze_seconds if fault else MAX_FREEZE,
            "keep": self.args.keep,
        }

    def run_one(
        self,
        index: int,
        logical: datetime,
        af: AirflowStack,
        admin: SimulatorAdmin,
        vms: lab.Lab,
        watcher: Watcher,
        injector: Injector,
    ) -> dict[str, Any]:
        fault = self.schedule.get(index)
        if fault:
            # Longer copies, so the fault hits while the VMs are frozen or the copies deferred.
            moment = MOMENTS[fault]
            admin.config(
                copy_seconds=max(moment.copy_seconds, self.args.copy_seconds),
                region_copy_seconds=max(moment.region_copy_seconds, self.args.region_copy_seconds),
            )
        began = time.monotonic()
        run_id = af.trigger(DAG_ID, self.conf(fault), logical, unpause=index == 0)
        print(
            f"run {index + 1}/{self.args.runs} {logical:%Y-%m-%d %H:%M} started"
            + (f" ({fault})" if fault else ""),
            flush=True,
        )
        state = "queued"
        made: Injection | None = None
        try:
            while time.monotonic() - began < RUN_TIMEOUT:
                seen = len(watcher.requests)  # merged from the request log every few seconds
                if seen >= self.next_delay_at:
                    self.faults(admin, with_delay=True)
                    self.next_delay_at = (
                        seen + 1 + int(self.rng.expovariate(1 / self.args.delay_every))
                    )
                # a restarting database or api-server may fail a poll: poll again
                with contextlib.suppress(AirflowStackError, OSError, httpx.HTTPError):
                    state = af.poll_run(DAG_ID, run_id)
                if state in ("success", "failed"):
                    break
                if fault and made is None:
                    with contextlib.suppress(AirflowStackError, OSError, httpx.HTTPError):
                        made = injector.try_inject(fault, run_id)
                        if made is not None:
                            print(f"  {fault}: {made.target} ({made.detail})", flush=True)
                time.sleep(0.3 if fault and made is None else 1.0)
        finally:
            injector.after_run(made)
        seconds = time.monotonic() - began
        if fault:
            admin.config(
                copy_seconds=self.args.copy_seconds,
                region_copy_seconds=self.args.region_copy_seconds,
            )
        record: dict[str, Any] = {
            "index": index,
            "run_id": run_id,
            "logical_date": logical.isoformat(),
            "state": state,
            "seconds": round(seconds, 1),
            "fault": fault,
            "injection": vars(made) if made else None,
        }
        if made:
            self.injections.append(record)
        self.inspect(af, record)
        if "freeze" not in record["tasks"]:  # nothing ran: not a backup, not green
            record["state"] = f"{state} without task instances"
        # No run is active now: nothing may be frozen, no guardian left.
        frozen = vms.frozen()
        left = guardians_gone(vms)
        record["frozen_after"] = frozen
        record["guardians_after"] = left
        if frozen:
            print(f"  !! frozen after run {run_id}: {frozen}; thawing to go on")
            vms.thaw_all()
        print(
            f"run {index + 1}/{self.args.runs} {logical:%Y-%m-%d}: {state} in {seconds:.0f} s"
            + (f"; failed: {record['failed_tasks']}" if record.get("failed_tasks") else "")
            + (f"; retried: {record['retried']}" if record.get("retried") else "")
            + (f"; FROZEN {frozen}" if frozen else "")
            + (f"; GUARDIANS {sorted(left)}" if left else "")
        )
        return record

    def inspect(self, af: AirflowStack, record: dict[str, Any]) -> None:
        run_id = record["run_id"]
        tis = af.task_instances(DAG_ID, run_id)
        record["tasks"] = {
            (ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"): [
                ti["state"],
                ti["try_number"],
            ]
            for ti in tis
        }
        failed: dict[str, str] = {}
        retried: dict[str, list[str]] = {}
        for ti in tis:
            label = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            last = max(ti["try_number"], 1)
            if ti["state"] == "failed":
                # A task whose worker died says nothing; the scheduler's verdict comes first.
                failed[label] = scheduler_verdict(af, run_id, ti["task_id"]) or task_error(
                    af, run_id, ti, last
                )
            for earlier in range(1, last):
                retried.setdefault(label, []).append(task_error(af, run_id, ti, earlier))
        record["failed_tasks"] = failed
        record["retried"] = retried
        with contextlib.suppress(AirflowStackError):
            thaw = af.xcom(DAG_ID, run_id, "thaw")
            record["consistency"] = thaw.get("consistency")
            record["freeze_window_s"] = (thaw.get("freeze_window") or {}).get("seconds")
            record["fired_by"] = {h["host"]: h.get("fired_by") for h in thaw["hosts"]}

    # -- the whole soak ------------------------------------------------------------------

    def dates(self) -> list[datetime]:
        """Logical dates from the DAG's start date on, a day apart, or closer when that would
        reach the future: a run dated before the start date has no task instances (each task
        starts on START_DATE) and "succeeds" at once, and Airflow 3.2 starts no task of a
        run dated in the future (the first soak's run 30 waited until set failed by hand)."""
        now = datetime.now(timezone.utc) - timedelta(minutes=5)
        step = min(timedelta(days=1), (now - START_DATE) / max(1, self.args.runs))
        step = timedelta(minutes=int(step.total_seconds() // 60))
        return [START_DATE + i * step for i in range(self.args.runs)]


def remove_deleted_images(admin: SimulatorAdmin, data_dir: Path) -> int:
    """Delete the disk image files of resources the simulator has deleted (it keeps them):
    64 MB a disk, 3 disks a copy, two copies a run would fill the disk."""
    removed = 0
    state = admin.state()
    for resource in state["templates"] + state["environments"]:
        if not resource.get("deleted"):
            continue
        for vm in resource.get("vms", []):
            image = vm.get("disk_image")
            if image and Path(image).parent == data_dir and Path(image).exists():
                Path(image).unlink()
                removed += 1
    return removed


def duplicates(state: dict[str, Any]) -> list[str]:
    """Resources sharing a kind, name and region, deleted ones excluded."""
    count: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for kind in ("templates", "environments"):
        for r in state[kind]:
            if not r.get("deleted"):
                count[(kind, r["name"], r["region"])] += 1
    return [f"{k} {n!r} in {r}: {c}" for (k, n, r), c in count.items() if c > 1]


def scan_for_secrets(paths: list[Path], needles: dict[str, list[str]]) -> dict[str, Any]:
    """Every file in ``paths`` (recursively) searched for each secret; hits by kind and file."""
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    hits: dict[str, list[str]] = {}
    scanned_bytes = 0
    for path in files:
        if path.suffix in (".img", ".db") or path.name.endswith("-journal"):
            continue  # disk images and the database are not logs
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        scanned_bytes += len(text)
        for kind, values in needles.items():
            if any(v and v in text for v in values):
                hits.setdefault(kind, []).append(str(path))
    return {
        "files": len(files),
        "bytes": scanned_bytes,
        "hits": hits,
        "kinds": sorted(needles),
    }


def key_needles(key_file: Path) -> list[str]:
    """The SSH private key's text and each of its base64 lines."""
    text = key_file.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "PRIVATE KEY" not in ln]
    return [text.strip(), *[ln for ln in lines if len(ln) >= 16]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="DAG runs (default 50)")
    parser.add_argument(
        "--faults",
        nargs="*",
        choices=FAULTS,
        default=list(FAULTS),
        help="infrastructure faults, one run each, spread over the soak (default: all)",
    )
    parser.add_argument("--copy-seconds", type=float, default=3.0)
    parser.add_argument("--region-copy-seconds", type=float, default=3.0)
    parser.add_argument("--regions", nargs="+", default=["EMEA"])
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument(
        "--delay-every",
        type=float,
        default=33.0,
        help="requests per injected timeout, on average (33: about 3%%)",
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--max-minutes", type=float, default=0, help="start no run after this (0: no limit)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the section")
    args = parser.parse_args(argv)
    reason = lab.unavailable()
    if reason:
        print(f"soak: needs the lab's real VMs: {reason}", file=sys.stderr)
        return 2
    started = machine()
    workdir = Path(tempfile.mkdtemp(prefix="skytap-soak-"))
    own_log = workdir / "soak-output.log"
    real_stdout = sys.stdout
    sys.stdout = Tee(real_stdout, own_log)
    soak = Soak(args, workdir)
    try:
        result = run_soak(soak, workdir, own_log)
    finally:
        sys.stdout.flush()
        sys.stdout = real_stdout
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write:
        try:
            write(args, soak, result, started)
        except Exception:  # keep the figures: the raw result, for a section by hand
            raw = Path(tempfile.gettempdir()) / "skytap-soak-result.json"
            raw.write_text(
                json.dumps({"runs": soak.runs, "faults": soak.injections, **result}, default=str)
            )
            print(f"writing the section failed; raw figures in {raw}", file=sys.stderr)
            raise
    return 0 if result["verdict_ok"] else 1


def run_soak(soak: Soak, workdir: Path, own_log: Path) -> dict[str, Any]:
    """The soak and the checks after it; whatever broke the harness is kept in ``error``."""
    result: dict[str, Any] = {
        "error": None,
        "leftover_components": [],
        "soak_seconds": 0.0,
        "requests": [],
        "final_frozen": ["(not checked)"],
        "final_guardians": {"(not checked)": []},
        "duplicates": [],
        "kept_by_region": {},
        "counted_by_region": {},
        "kept_by_verdict": {},
        "made_by_verdict": {},
        "templates_made": 0,
        "disks": [],
        "secrets": {
            "files": 0,
            "bytes": 0,
            "hits": {},
            "kinds": [],
            "components": [],
            "task_logs": 0,
        },
        "images_removed": 0,
        "longest_stall": {},
        "stalls": [],
        "stalls_over_2s": 0,
    }
    try:
        _run_soak(soak, workdir, own_log, result)
    except Exception:  # the figures so far still make the section, with the error
        result["error"] = traceback.format_exc()
        print(result["error"])
    result["verdict_ok"] = result["error"] is None and verdict(soak, result)
    return result


def _run_soak(soak: Soak, workdir: Path, own_log: Path, result: dict[str, Any]) -> None:
    args = soak.args
    data_dir = workdir / "sim-data"
    began = time.monotonic()
    with lab.Lab(size_mb=64) as vms, SimulatorProcess(data_dir=data_dir) as simproc:
        admin = simproc.admin
        seed = vms.seed(default_seed(), ENV)
        user = seed["users"][0]
        admin.reset(seed)
        admin.config(
            copy_seconds=args.copy_seconds,
            region_copy_seconds=args.region_copy_seconds,
            delete_seconds=0.5,
            transition_seconds=0.5,
        )
        env = stack_env(simproc, user, vms, timeout=CONN_TIMEOUT, retry_deadline=RETRY_DEADLINE)
        key_text = key_needles(vms.client_key)
        home = workdir / "airflow"
        watcher = Watcher(vms, admin)
        with AirflowStack(
            home,
            airflow_cli.DAGS,
            env,
            dag_ids=[DAG_ID],
            secrets=[user["token"]],
            restart_always=True,  # the compose file's restart: always
        ) as af:
            result["startup_seconds"] = round(af.startup_seconds, 1)
            stack_secrets = sorted(af.known_secrets - {user["token"]})
            watcher.start()
            injector = Injector(af, vms, watcher.stalled_now)
            soak.faults(admin, with_delay=False)
            images_removed = 0
            try:
                for index, logical in enumerate(soak.dates()):
                    spent = (time.monotonic() - began) / 60
                    if args.max_minutes and spent > args.max_minutes:
                        print(f"time budget of {args.max_minutes:g} min spent: no more runs")
                        result["stopped_early"] = f"after {index} runs, {spent:.1f} min"
                        break
                    soak.runs.append(
                        soak.run_one(index, logical, af, admin, vms, watcher, injector)
                    )
                    PROGRESS.write_text(json.dumps(soak.runs, indent=1))
                    images_removed += remove_deleted_images(admin, data_dir)
                    if soak.runs[-1]["state"] not in ("success", "failed"):
                        print(f"run {soak.runs[-1]['run_id']} did not end: the soak stops")
                        break
            finally:
                admin.clear_faults()
                watcher.finish()
        result["leftover_components"] = af.leftovers()
        result["restarts"] = list(af.restarts)
        soak_seconds = time.monotonic() - began
        final_frozen = vms.frozen()
        final_guardians = guardians_gone(vms, within=2)
        result["suspended_by_copy"] = admin.suspended_count()
        print(f"VMs suspended by a copy (no live clone): {result['suspended_by_copy']}")
        state = admin.state()
        dups = duplicates(state)
        prefix = f"{DAG_ID}-environment-{ENV}-"
        kept = [t for t in state["templates"] if t["name"].startswith(prefix) and not t["deleted"]]
        made = [t for t in state["templates"] if t["name"].startswith(prefix)]
        kept_by_region = collections.Counter(t["region"] for t in kept)
        # What the thaw tagged each copy with; prune (confirmed_only) counts only CONFIRMED.
        counted_by_region = collections.Counter(
            t["region"] for t in kept if consistency(t) in CONFIRMED
        )
        kept_by_verdict = collections.Counter(consistency(t) or "not tagged" for t in kept)
        made_by_verdict = collections.Counter(consistency(t) or "not tagged" for t in made)
        disks = []
        for template in kept:
            for vm in template["vms"]:
                check = lab.check_image(vm["disk_image"])
                disks.append((template["region"], template["name"], vm["name"], check.consistent))
        # Every log the soak produced: Airflow's (components, tasks, triggerer), the
        # simulator's, the VMs' sshd logs and the soak's own output.
        sys.stdout.flush()
        needles = {
            "API token": [user["token"]],
            "SSH private key": key_text,
            "Airflow stack secrets (admin password, JWT secret, Fernet key, JWTs)": stack_secrets,
        }
        log_paths = [home / "logs", simproc.log_path, own_log]
        log_paths += [p for p in vms.root.glob("*.log")]
        secrets = scan_for_secrets(log_paths, needles)
        secrets["components"] = sorted(p.name for p in (home / "logs" / "components").glob("*"))
        secrets["task_logs"] = len(list((home / "logs").glob("dag_id=*/**/*.log")))
    requests = list(watcher.requests.values())
    result.update(
        soak_seconds=round(soak_seconds, 1),
        requests=requests,
        final_frozen=final_frozen,
        final_guardians=final_guardians,
        duplicates=dups,
        kept_by_region=dict(kept_by_region),
        counted_by_region=dict(counted_by_region),
        kept_by_verdict=dict(kept_by_verdict),
        made_by_verdict=dict(made_by_verdict),
        templates_made=len(made),
        disks=disks,
        secrets=secrets,
        images_removed=images_removed,
        longest_stall={k: round(v, 1) for k, v in watcher.longest.items()},
        stalls=[s for s in watcher.stalls if s[2] > MAX_FREEZE + 8],
        stalls_over_2s=len(watcher.stalls),
    )


def fault_kind(label: str | None) -> str | None:
    if not label:
        return None
    parts = [p for p in label.split(",") if not p.startswith("latency")]
    if not parts:
        return None
    part = parts[-1]
    if part.startswith("error:"):
        kind = "HTTP " + part.split(":")[1]
    elif part.startswith("drop"):
        kind = "dropped connection"
    elif part.startswith("delay"):
        kind = "timeout (delay past the client's timeout)"
    elif part == "rate_limit":
        kind = "rate limit"
    else:
        kind = part
    return kind + (", after the write" if part.endswith(":after") else "")


def verdict(soak: Soak, result: dict[str, Any]) -> bool:
    runs = soak.runs
    ended = all(r["state"] in ("success", "failed") for r in runs)
    thawed = all(not r["frozen_after"] and not r["guardians_after"] for r in runs)
    return bool(
        runs
        and ended
        and thawed
        and not result["final_frozen"]
        and not result["final_guardians"]
        and not result["duplicates"]
        and not result.get("suspended_by_copy")
        and not result["secrets"]["hits"]
        and all(ok for *_, ok in result["disks"])
    )


def write(
    args: argparse.Namespace, soak: Soak, result: dict[str, Any], started: dict[str, Any]
) -> None:
    runs = soak.runs
    green = [r for r in runs if r["state"] == "success"]
    failed = [r for r in runs if r["state"] == "failed"]
    other = [r for r in runs if r["state"] not in ("success", "failed")]
    requests = result["requests"]
    kinds = collections.Counter(fault_kind(e.get("fault")) for e in requests)
    injected = sum(c for k, c in kinds.items() if k)
    by_method = collections.Counter(e["method"] for e in requests)
    fail_reasons: collections.Counter[str] = collections.Counter()
    for r in failed:
        for task, line in r["failed_tasks"].items():
            fail_reasons[f"{task.split('[')[0]}: {short_reason(line)}"] += 1
    retry_reasons: collections.Counter[str] = collections.Counter()
    for r in runs:
        for task, lines in r["retried"].items():
            for line in lines:
                retry_reasons[f"{task.split('[')[0]}: {short_reason(line)}"] += 1
    fired = collections.Counter(
        how for r in runs for how in (r.get("fired_by") or {}).values() if how
    )
    windows = [r["freeze_window_s"] for r in green if r.get("freeze_window_s") is not None]
    durations = [r["seconds"] for r in green]
    frozen_after = [r["run_id"] for r in runs if r["frozen_after"]]
    guardians_after = [r["run_id"] for r in runs if r["guardians_after"]]
    stalls = result.get("stalls", [])
    kept = result["kept_by_region"]
    regions = [REGION, *args.regions]
    counted = result["counted_by_region"]
    # keep counts only copies tagged consistent; a newer untagged one may be kept beside them.
    prune_ok = all(counted.get(region, 0) == args.keep for region in regions)
    secrets = result["secrets"]
    ok = result["verdict_ok"]
    planned = {i: f for i, f in soak.schedule.items() if i < args.runs}

    options = [f"--runs {args.runs}"] if args.runs != 50 else []
    options += [f"--max-minutes {args.max_minutes:g}"] if args.max_minutes else []
    command = (
        f"PYTHONPATH=$PWD .venv/bin/python -m bench.soak {' '.join(options)}"
        if options
        else "make bench BENCH=soak"
    )
    body = [
        f"**Goal**: {args.runs} runs of `{DAG_ID}` under the real scheduler on the lab's VMs "
        "(real sshd, fsfreeze, writers) on the distributed Airflow with 20% of API calls "
        "failing and five infrastructure faults (a worker and a triggerer SIGKILLed, the "
        "scheduler, Redis and PostgreSQL restarted); every run green or failed with every VM "
        "thawed; zero duplicates; zero VMs suspended by a copy; prune keeps `keep` copies "
        "tagged consistent per region; zero secrets in any log. **"
        + (
            ("Met" if ok else "NOT met")
            if len(runs) >= args.runs
            else f"{'Met' if ok else 'NOT met'} for the {len(runs)} runs made; the "
            f"{args.runs} runs were not reached"
        )
        + ".**",
        "",
        f"Setup: runs one after another, each triggered through the REST API with its own "
        f"logical date from the DAG's start date, 2026-11-01, on, a day apart or closer so that "
        "none is in the future (a backfill of past dates cannot make 50 runs), "
        f"conf `{json.dumps(soak.conf())}`; copy {args.copy_seconds:g} s, region copy "
        f"{args.region_copy_seconds:g} s; connection timeout {CONN_TIMEOUT} s, retry_deadline "
        f"{RETRY_DEADLINE} s; faults: {', '.join(f'{k} {v:.0%}' for k, v in ERROR_RATES.items())}"
        f", drops {DROP_RATE:.0%} (of the 5xx and drops hitting a write, {AMBIGUOUS:.0%} after "
        f"it was carried out), one request in {args.delay_every:g} on average delayed "
        f"{CONN_TIMEOUT + 2} s; `[scheduler] task_instance_heartbeat_timeout` "
        f"{HEARTBEAT_TIMEOUT} s. The soak took {result['soak_seconds'] / 60:.1f} min.",
        "",
        *(
            [
                f"**Not the {args.runs} runs asked for**: the time budget ({args.max_minutes:g} "
                f"min) ended the soak {result['stopped_early']}.",
                "",
            ]
            if result.get("stopped_early")
            else []
        ),
        "### Runs",
        "",
        table(
            ["", "count"],
            [
                ["runs", len(runs)],
                ["green", len(green)],
                ["failed", len(failed)],
                ["did not end", len(other)],
                ["run time, green runs", fmt(summary(durations))],
                ["freeze window (thaw report), green runs", fmt(summary(windows))],
            ],
        ),
        "",
    ]
    if fail_reasons:
        body += [
            "Failed runs, by task and error:",
            "",
            table(["task: error", "runs"], fail_reasons.most_common()),
            "",
        ]
    if retry_reasons:
        body += [
            "Task tries that failed and were retried (the run went on), by task and error:",
            "",
            table(["task: error", "tries"], retry_reasons.most_common()),
            "",
        ]
    fault_rows = []
    for index, fault in sorted(planned.items()):
        hit: dict[str, Any] = next((x for x in runs if x["index"] == index), {})
        made = hit.get("injection") or {}
        fault_rows.append(
            [
                f"`{fault}`",
                index + 1,
                (
                    f"{made['target']} at {made['at'][11:]} ({made['detail'][:80]})"
                    if made
                    else ("run not reached" if not hit else "moment not seen: not injected")
                ),
                hit.get("state", "-"),
                "; ".join(f"{t}: {e[:120]}" for t, e in hit.get("failed_tasks", {}).items()) or "-",
                len(hit.get("frozen_after") or []),
                len(hit.get("guardians_after") or {}),
            ]
        )
    body += [
        "### Infrastructure faults (bench/faults.py's, one run each)",
        "",
        table(
            [
                "fault",
                "run",
                "hit",
                "run ended",
                "failed task: error",
                "VMs frozen after",
                "guardians left",
            ],
            fault_rows,
        )
        if fault_rows
        else "No fault was planned.",
        "",
        f"Components started again by `restart: always` during the soak: "
        f"{', '.join(f'{n} (exit {c})' for _, n, c in result.get('restarts', [])) or 'none'}"
        f"; the stack started in {result.get('startup_seconds')} s.",
        "",
    ]
    if result.get("error"):
        body += ["**The harness broke off:**", "", "```", result["error"][-3000:], "```", ""]
    body += [
        "### Injected failures (the simulator's request log)",
        "",
        table(
            ["kind", "requests"],
            [[k, c] for k, c in kinds.most_common() if k]
            + [
                [
                    "**injected, all kinds**",
                    f"{injected} of {len(requests)} ({injected / max(1, len(requests)):.1%})",
                ]
            ],
        ),
        "",
        f"Requests: {len(requests)} ({', '.join(f'{m} {c}' for m, c in by_method.most_common())})"
        f"; delay rules installed: {soak.delay_rules}.",
        "",
        "### State after the soak",
        "",
        table(
            ["check", "result"],
            [
                [
                    "duplicate resources (kind, name, region; deleted excluded)",
                    len(result["duplicates"]),
                ],
                ["templates made by the DAG (deleted included)", result["templates_made"]],
                [
                    "VMs suspended by a copy without live clone (the simulator's count)",
                    result.get("suspended_by_copy", "not counted"),
                ],
                [
                    f"kept per region (keep={args.keep}): tagged consistent of all kept",
                    ", ".join(f"{k} {counted.get(k, 0)} of {v}" for k, v in sorted(kept.items()))
                    + (" ✓" if prune_ok else " ✗"),
                ],
                [
                    "templates made, by the verdict their thaw tagged (deleted included)",
                    ", ".join(f"{k} {v}" for k, v in sorted(result["made_by_verdict"].items())),
                ],
                [
                    "templates kept, by verdict",
                    ", ".join(f"{k} {v}" for k, v in sorted(result["kept_by_verdict"].items())),
                ],
                [
                    "kept copies' disks consistent (e2fsck, records, commit point)",
                    f"{sum(ok for *_, ok in result['disks'])} of {len(result['disks'])}",
                ],
                ["runs after which a filesystem was frozen", len(frozen_after)],
                ["runs after which a guardian was left", len(guardians_after)],
                ["filesystems frozen at the end", len(result["final_frozen"])],
                ["guardians left at the end", len(result["final_guardians"])],
                ["guardian deadline fires (thaw reports)", fired.get("deadline", 0)],
                [
                    "how holds ended (thaw reports, per VM)",
                    ", ".join(f"{k} {v}" for k, v in fired.most_common()),
                ],
                [
                    "longest writer stall per VM (s)",
                    ", ".join(f"{k} {v:.1f}" for k, v in result["longest_stall"].items()),
                ],
                ["writer stalls over max_freeze_seconds + 8 s", len(stalls)],
                [
                    "Airflow processes left after the stack stopped",
                    len(result["leftover_components"]),
                ],
            ],
        ),
        "",
        "### Secrets in logs",
        "",
        f"Grepped {secrets['files']} files ({secrets['bytes'] / 1e6:.1f} MB): "
        f"{len(secrets['components'])} component logs ({', '.join(secrets['components'])}), "
        f"{secrets['task_logs']} task logs, the simulator's output, the VMs' sshd logs and the "
        f"soak's own output, for: {'; '.join(secrets['kinds'])}. Hits: "
        + (
            "**none**."
            if not secrets["hits"]
            else "; ".join(
                f"{k}: {len(v)} files ({', '.join(v[:5])})" for k, v in secrets["hits"].items()
            )
        ),
        "",
    ]
    data = {
        "args": vars(args),
        "runs": runs,
        "infrastructure_faults": soak.injections,
        "faults": {k: c for k, c in kinds.items() if k},
        "requests_total": len(requests),
        "injected": injected,
        **{k: v for k, v in result.items() if k not in ("requests",)},
    }
    write_section("soak", "Reliability soak", command, "\n".join(body), data, started=started)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
