"""Issue 6, item 4: what waiting for a copy costs in API requests, and in worker slots.

Part 1, requests per completed wait. A copy of 1 min, 10 min or 3 h is started in the
simulator (an environment saved as a template) and waited for in each way the provider waits:

- ``trigger``: :class:`CloneCompleteTrigger` as ``copy_to_dr`` defers to it in the nightly DAG
  (``dr_poll_seconds`` 60: first poll 60 s, growing to 600 s);
- ``sensor``: the poking :class:`CloneCompleteSensor` exactly as ``frozen_copy()`` builds it
  (``poke_interval`` 2, ``max_poll_interval`` 5, ``mode="poke"``);
- ``hook``: ``SkytapHook.wait_until_ready`` with its defaults (5 s growing to 60 s), and as
  ``LiveCloneOperator`` calls it when it waits without deferring (10 s growing to 30 s).

Each wait's requests are the ``GET`` of that template in the simulator's request log.

Hours pass in seconds: the simulator runs with ``time_scale`` S, and the client's waits are
scaled by the same S through the hook's plan runner. Every wait is a plan that yields
``Sleep`` steps; the bench's hooks run the very same plans with each ``Sleep`` multiplied by S
and a plan clock that reads real seconds divided by S (so timeouts, log lines and retry
deadlines see simulated time). The sensor's own ``time.sleep``/``time.monotonic`` in Airflow's
poke loop are scaled the same way. What scaling cannot shrink is each request's own latency:
at S = 0.01 a 5 ms loopback request stands for 0.5 s, about what a request to Skytap takes.
To check the method, the 1 min copies are also waited for in real time (S = 1, unscaled
hooks, a second simulator, at the same time), and both counts are reported side by side.

Part 2, worker slots while deferred: ``tests/system/dags/skytap_clone_test.py`` (clone, wait,
three region copies of one template, prune; every wait deferrable) under the real scheduler
(``AirflowStack``: LocalExecutor, triggerer). While the run goes, the REST API's task
instances are sampled with the LocalExecutor's worker processes (a worker's process title
names the task instance it runs, ``<idle>`` otherwise). Reported: the most task instances
running, and the most workers busy, in samples where every unfinished task was deferred.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from bench.common import Stopwatch, machine, table, write_section

NAME = "api_cost"
TITLE = "4. API cost of waiting; worker slots while deferred"
COMMAND = "make bench BENCH=api_cost"
DURATIONS = {"1 min": 60.0, "10 min": 600.0, "3 h": 10800.0}
# Each duration on its own simulator and scale, so every copy takes 6 to 108 s of real time.
SCALES = {"1 min": 0.1, "10 min": 0.05, "3 h": 0.01}
CONN_REAL = "skytap_bench_real"
_build = threading.Lock()  # Airflow's DAG context is process-wide: build one DAG at a time
USER = "demo"


def _tasks() -> Any:
    """tests/tasks.py (run operators and deferrals in-process), imported by name:
    mypy checks bench/ but not tests/, whose ``type: ignore`` comments are for pytest's run."""
    return importlib.import_module("tests.tasks")


# --------------------------------------------------------------------------- scaled runners


def scaled_plan(plan: Any, scale: float) -> Any:
    """The same plan with every ``Sleep`` multiplied by ``scale``."""
    from airflow_provider_skytap.hooks.api import Sleep

    try:
        step = next(plan)
        while True:
            if isinstance(step, Sleep):
                step = Sleep(step.seconds * scale)
            got = yield step
            step = plan.send(got)
    except StopIteration as done:
        return done.value


def scaled_hooks(scale: float) -> tuple[type, type]:
    """SkytapHook and SkytapAsyncHook subclasses that run plans at ``scale``."""
    from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook

    def clock() -> float:
        return time.monotonic() / scale

    class ScaledHook(SkytapHook):
        def _make_api(self, settings: Any) -> Any:
            api = super()._make_api(settings)
            api.clock = clock
            return api

        def run(self, plan: Any) -> Any:
            return super().run(scaled_plan(plan, scale))

    class ScaledAsyncHook(SkytapAsyncHook):
        def _make_api(self, settings: Any) -> Any:
            api = super()._make_api(settings)
            api.clock = clock
            return api

        async def run(self, plan: Any) -> Any:
            return await super().run(scaled_plan(plan, scale))

    return ScaledHook, ScaledAsyncHook


_thread = threading.local()


def _scale() -> float:
    return float(getattr(_thread, "scale", 1.0))


@contextmanager
def scaled_sensor_time() -> Iterator[None]:
    """Airflow's poke loop (``airflow.sdk.bases.sensor``) sleeping and timing at the scale of
    the thread it runs in (``_thread.scale``; 1 when unset)."""
    import airflow.sdk.bases.sensor as sensor_module

    fake = SimpleNamespace(
        sleep=lambda s: time.sleep(s * _scale()),
        monotonic=lambda: time.monotonic() / _scale(),
        time=time.time,
    )
    with mock.patch.object(sensor_module, "time", fake):
        yield


# --------------------------------------------------------------------------- the waits


def seed(count: int) -> dict[str, Any]:
    """The default seed's users plus ``count`` running one-VM environments (no disk images)."""
    from skytap_simulator.seed import default_seed

    base = default_seed()
    envs = [
        {
            "id": str(7001 + i),
            "name": f"cost-{i}",
            "region": "US-West",
            "runstate": "running",
            "vms": [{"name": "vm"}],
        }
        for i in range(count)
    ]
    return {"users": base["users"], "environments": envs}


def set_conn(conn_id: str, sim: Any) -> None:
    user = next(u for u in seed(0)["users"] if u["username"] == USER)
    doc = {
        "conn_type": "skytap",
        "host": sim.url,
        "login": USER,
        "password": user["token"],
        "extra": {"timeout": 30},
    }
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(doc)


def frozen_copy_sensor() -> Any:
    """The wait task exactly as ``frozen_copy()`` configures it."""
    from airflow.sdk import DAG

    from airflow_provider_skytap.frozen_copy import frozen_copy, quiesce_params

    with _build, DAG("bench_api_cost", schedule=None, params=quiesce_params()):
        chain = frozen_copy(target="template")
    return chain.wait


class Case:
    """One copy of one duration waited for one way."""

    def __init__(self, waiter: str, label: str, seconds: float, env_id: str, real: bool):
        self.waiter, self.label, self.seconds, self.env_id, self.real = (
            waiter,
            label,
            seconds,
            env_id,
            real,
        )
        self.template_id = ""
        self.wall = 0.0
        self.error: str | None = None
        self.requests = 0
        self.statuses: dict[str, int] = {}


def run_case(case: Case, sim: Any, conn_id: str, scale: float, config_lock: threading.Lock) -> None:
    """Start the copy, then wait for it the case's way."""
    from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook
    from airflow_provider_skytap.triggers.clone import CloneCompleteTrigger

    tasks = _tasks()
    context, first_event = tasks.context, tasks.first_event

    hook_cls, async_cls = scaled_hooks(scale) if not case.real else (SkytapHook, None)
    sensor = frozen_copy_sensor()
    try:
        # Everything is built before the copy starts, so the wait begins right after it.
        starter, waiter = hook_cls(conn_id), hook_cls(conn_id)
        _ = starter.settings, waiter.settings  # the connection, read now
        sensor.skytap_conn_id = conn_id
        sensor.__dict__["hook"] = waiter
        ctx = context()
        with config_lock:
            sim.admin.config(copy_seconds=case.seconds)
            made = starter.save_as_template(case.env_id, name=f"{case.waiter}-{case.label}")
        case.template_id = str(made["id"])
        began = time.monotonic()
        if case.waiter == "trigger":
            trigger = CloneCompleteTrigger(
                kind="template",
                resource_id=case.template_id,
                skytap_conn_id=conn_id,
                end_time=time.time() + 24 * 3600,
                poll_interval=60.0,  # dr_poll_seconds, the DAG's default
                max_poll_interval=600.0,  # dr_poll_seconds * 10
                log_every=600.0,
            )
            patch = mock.patch(
                "airflow_provider_skytap.triggers.clone.SkytapAsyncHook",
                async_cls or SkytapAsyncHook,
            )
            with patch:
                event = asyncio.run(first_event(trigger))
            if event["status"] != "success":
                raise RuntimeError(event["message"])
        elif case.waiter == "sensor":
            sensor.resource_id = case.template_id
            _thread.scale = scale
            sensor.execute(ctx)
        else:
            first, cap = (5.0, 60.0) if case.waiter == "hook" else (10.0, 30.0)
            waiter.wait_until_ready(
                "template",
                case.template_id,
                timeout=4 * 3600,
                poll_interval=first,
                max_poll_interval=cap,
            )
        case.wall = time.monotonic() - began
        starter.close()
        waiter.close()
    except Exception as exc:  # reported in the section
        case.error = f"{type(exc).__name__}: {exc}"


# (first pause, longest pause, extra GETs after ready) of each waiter
SERIES = {"trigger": (60.0, 600.0, 0), "sensor": (2.0, 5.0, 1), "hook": (5.0, 60.0, 0)}
SERIES["liveclone"] = (10.0, 30.0, 0)


def model(waiter: str, seconds: float) -> int:
    """GETs the waiter's pause series needs for a copy of ``seconds`` if requests took no time
    (the sensor's one more is the summary it reads once ready)."""
    from airflow_provider_skytap.hooks.api import poll_pauses

    first, longest, extra = SERIES[waiter]
    polls, at = 1, 0.0
    for pause in poll_pauses(first, longest):
        if at >= seconds:
            break
        at += pause
        polls += 1
    return polls + extra


WAITERS = {
    "trigger": "CloneCompleteTrigger as copy_to_dr defers (60 s -> 600 s)",
    "sensor": "CloneCompleteSensor as frozen_copy() pokes (poke_interval 2, max 5)",
    "hook": "SkytapHook.wait_until_ready defaults (5 s -> 60 s)",
    "liveclone": "wait_until_ready as LiveCloneOperator waits undeferred (10 s -> 30 s)",
}


def count_requests(cases: list[Case], log: list[dict[str, Any]]) -> None:
    for case in cases:
        path = f"/v2/templates/{case.template_id}"
        mine = [r for r in log if r["method"] == "GET" and r["path"].removesuffix(".json") == path]
        case.requests = len(mine)
        for r in mine:
            key = str(r["status"])
            case.statuses[key] = case.statuses.get(key, 0) + 1


def measure_requests(scales: dict[str, float], real_check: bool) -> dict[str, Any]:
    """Every waiter x every duration, scaled (and the 1 min ones in real time), all at once."""
    from skytap_simulator.control import SimulatorProcess

    groups: list[tuple[str, float, list[Case]]] = [
        (f"skytap_bench_{i}", scales[label], [Case(w, label, secs, "", False) for w in WAITERS])
        for i, (label, secs) in enumerate(DURATIONS.items())
    ]
    if real_check:
        groups.append((CONN_REAL, 1.0, [Case(w, "1 min", 60.0, "", True) for w in WAITERS]))
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-api-cost-")))
        threads = []
        sims = []
        for conn_id, scale, cases in groups:
            sim = stack.enter_context(SimulatorProcess(data_dir=tmp / conn_id, time_scale=scale))
            sim.admin.reset(seed(len(cases)))
            set_conn(conn_id, sim)
            sims.append(sim)
            lock = threading.Lock()
            for i, case in enumerate(cases):
                case.env_id = str(7001 + i)
                threads.append(
                    threading.Thread(target=run_case, args=(case, sim, conn_id, scale, lock))
                )
        with scaled_sensor_time(), Stopwatch() as sw:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for sim, (_, _, cases) in zip(sims, groups, strict=True):
            count_requests(cases, sim.admin.requests())
    scaled = [c for _, _, cases in groups for c in cases if not c.real]
    real = [c for _, _, cases in groups for c in cases if c.real]
    return {"scaled": scaled, "real": real, "seconds": sw.seconds}


# --------------------------------------------------------------------------- slots


def worker_titles(scheduler_pid: int) -> list[str]:
    """Titles of the LocalExecutor workers under ``scheduler_pid`` (other Airflows on this
    machine are not counted): ``airflow worker -- LocalExecutor: <ti id>`` or ``<idle>``."""
    parent: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        titles[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    found = []
    for pid, title in titles.items():
        if not title.startswith("airflow worker -- LocalExecutor"):
            continue
        up, hops = parent.get(pid, 0), 0
        while up not in (0, 1, scheduler_pid) and hops < 50:
            up, hops = parent.get(up, 0), hops + 1
        if up == scheduler_pid:
            found.append(title)
    return found


def measure_slots(region_copy_seconds: float) -> dict[str, Any]:
    """The system test's DAG under the real scheduler; sample states and busy workers."""
    from skytap_simulator.control import SimulatorProcess
    from skytap_simulator.seed import default_seed
    from tests.system.airflow_stack import AirflowStack

    dags = Path(__file__).resolve().parents[1] / "tests" / "system" / "dags"
    dag_id = "skytap_clone_test"
    samples: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-slots-") as tmp,
        SimulatorProcess(data_dir=Path(tmp) / "sim", time_scale=1.0) as sim,
    ):
        sim.admin.reset()
        sim.admin.config(copy_seconds=3.0, region_copy_seconds=region_copy_seconds)
        user = default_seed()["users"][0]
        conn = {
            "conn_type": "skytap",
            "host": sim.url,
            "login": user["username"],
            "password": user["token"],
        }
        env = {
            "AIRFLOW_CONN_SKYTAP_DEFAULT": json.dumps(conn),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "AIRFLOW__CORE__PARALLELISM": "2",
            # The slots counted are the LocalExecutor's worker processes (on PostgreSQL now).
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        }
        with AirflowStack(
            Path(tmp) / "airflow",
            dags,
            env,
            dag_ids=[dag_id],
            secrets=[user["token"]],
            replicas={"airflow-worker": 0},
        ) as af:
            scheduler = af.components["scheduler"].proc
            assert scheduler is not None
            scheduler_pid = scheduler.pid
            run_id = af.trigger(dag_id, {})
            began = time.monotonic()
            state = "queued"
            while time.monotonic() - began < 300:
                tis = af.task_instances(dag_id, run_id)
                titles = worker_titles(scheduler_pid)
                busy = [t for t in titles if not t.endswith("<idle>")]
                states = [ti["state"] for ti in tis]
                samples.append(
                    {
                        "t": round(time.monotonic() - began, 2),
                        "states": states,
                        "workers": len(titles),
                        "busy": len(busy),
                        "tis": {_label(ti): ti["state"] for ti in tis},
                    }
                )
                state = af.dag_run(dag_id, run_id)["state"]
                if state in ("success", "failed"):
                    break
                time.sleep(0.25)
            wall = time.monotonic() - began
            deferred_max = af.max_deferred_at_once(dag_id, run_id)
            log = sim.admin.requests()
        leftovers = af.leftovers()
    unfinished = ("running", "queued", "scheduled", "deferred", "up_for_retry", "restarting")
    only_deferred: list[dict[str, Any]] = [
        s
        for s in samples
        if "deferred" in s["states"]
        and all(st in ("deferred", None, "success", "skipped") for st in s["states"])
        and any(st == "deferred" for st in s["states"] if st in unfinished)
    ]
    return {
        "state": state,
        "wall": wall,
        "samples": len(samples),
        "only_deferred_samples": len(only_deferred),
        "max_deferred": max((s["states"].count("deferred") for s in samples), default=0),
        "max_running_while_only_deferred": max(
            (s["states"].count("running") for s in only_deferred), default=0
        ),
        "max_busy_workers_while_only_deferred": max((s["busy"] for s in only_deferred), default=0),
        "only_deferred_samples_with_busy_worker": sum(1 for s in only_deferred if s["busy"]),
        "longest_running_copy_to_dr_s": _longest_running(samples, "copy_to_dr"),
        "longest_busy_stretch_while_only_deferred_s": _longest_busy(samples),
        "max_busy_workers": max((s["busy"] for s in samples), default=0),
        "workers": max((s["workers"] for s in samples), default=0),
        "deferred_at_once_rest": deferred_max,
        "requests": len(log),
        "leftovers": leftovers,
        "trace": samples,
    }


def _label(ti: dict[str, Any]) -> str:
    return str(ti["task_id"]) + ("" if ti["map_index"] < 0 else f"[{ti['map_index']}]")


def _longest_running(samples: list[dict[str, Any]], task_id: str) -> float:
    """Longest time one task instance of ``task_id`` was seen running without a break."""
    since: dict[str, float] = {}
    longest = 0.0
    for s in samples:
        for label, state in s["tis"].items():
            if not label.startswith(task_id):
                continue
            if state == "running":
                since.setdefault(label, s["t"])
                longest = max(longest, s["t"] - since[label])
            else:
                since.pop(label, None)
    return round(longest, 2)


def _longest_busy(samples: list[dict[str, Any]]) -> float:
    """Longest run of consecutive samples with only deferred waits pending and a worker busy
    (first to last sample of the run, seconds)."""
    longest, start = 0.0, None
    for s in samples:
        pending = [st for st in s["states"] if st not in ("success", "skipped", "failed", None)]
        if pending and all(st == "deferred" for st in pending) and s["busy"]:
            start = s["t"] if start is None else start
            longest = max(longest, s["t"] - start)
        else:
            start = None
    return round(longest, 2)


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.api_cost", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scales",
        type=json.loads,
        default=SCALES,
        help='JSON {"1 min": 0.1, "10 min": 0.05, "3 h": 0.01}: simulator and client scale',
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real-time 1 min check")
    parser.add_argument("--no-slots", action="store_true", help="skip the scheduler part")
    parser.add_argument("--region-copy-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    started = machine()
    costs = measure_requests(args.scales, not args.no_real)
    slots = None if args.no_slots else measure_slots(args.region_copy_seconds)
    body, data = render(costs, slots, args)
    write_section(NAME, TITLE, COMMAND, body, data, started=started)
    failed = [c for c in costs["scaled"] + costs["real"] if c.error]
    return 1 if failed or (slots and slots["state"] != "success") else 0


def render(costs: dict[str, Any], slots: dict[str, Any] | None, args: Any) -> tuple[str, Any]:
    by = {(c.waiter, c.label): c for c in costs["scaled"]}
    real = {c.waiter: c for c in costs["real"]}
    rows = []
    for w, what in WAITERS.items():
        row: list[Any] = [what]
        for label in DURATIONS:
            c = by[(w, label)]
            row.append(
                f"ERROR {c.error}" if c.error else f"{c.requests} ({model(w, DURATIONS[label])})"
            )
        rc = real.get(w)
        row.append("-" if rc is None else (f"ERROR {rc.error}" if rc.error else rc.requests))
        rows.append(row)
    header = ["waiter", *[f"{k} copy, scaled (model)" for k in DURATIONS], "1 min, real time"]
    data: dict[str, Any] = {
        "scales": args.scales,
        "requests_wall_s": round(costs["seconds"], 1),
        "cases": [
            {
                "waiter": c.waiter,
                "copy": c.label,
                "real_time": c.real,
                "requests": c.requests,
                "statuses": c.statuses,
                "wall_s": round(c.wall, 2),
                "error": c.error,
            }
            for c in costs["scaled"] + costs["real"]
        ],
    }
    body = [
        "### Requests per completed wait",
        "",
        "GETs of the copy in the simulator's request log, from the first look to ready. "
        "Simulator and client scaled together, one simulator per duration: "
        + ", ".join(f"{k} at {v} ({DURATIONS[k] * v:.0f} s)" for k, v in args.scales.items())
        + "; the last column waited for a 1 min copy unscaled, at the same time, as a check of "
        f"the method. All {len(costs['scaled'] + costs['real'])} waits ran at once in "
        f"{costs['seconds']:.0f} s.",
        "",
        table(header, rows),
        "",
        METHOD,
        "",
        FOUND_REQUESTS,
        "",
    ]
    if slots is not None:
        data["slots"] = {k: v for k, v in slots.items() if k != "trace"}
        data["slots_trace"] = slots["trace"]
        body += [
            "### Worker slots while deferred",
            "",
            table(
                ["figure", "value"],
                [
                    ["run", f"{slots['state']} in {slots['wall']:.0f} s"],
                    ["LocalExecutor workers (parallelism 2)", slots["workers"]],
                    ["samples (every ~0.25 s + REST time)", slots["samples"]],
                    ["samples with only deferred waits pending", slots["only_deferred_samples"]],
                    ["most task instances deferred at once", slots["max_deferred"]],
                    [
                        "most running task instances while only deferred waits were pending",
                        slots["max_running_while_only_deferred"],
                    ],
                    [
                        "most busy workers while only deferred waits were pending",
                        slots["max_busy_workers_while_only_deferred"],
                    ],
                    [
                        "of those samples, with a worker busy",
                        slots["only_deferred_samples_with_busy_worker"],
                    ],
                    [
                        "longest such stretch (first to last sample)",
                        f"{slots['longest_busy_stretch_while_only_deferred_s']} s",
                    ],
                    ["most busy workers at any sample", slots["max_busy_workers"]],
                    [
                        "longest a copy_to_dr was seen running without a break",
                        f"{slots['longest_running_copy_to_dr_s']} s",
                    ],
                    ["API requests of the whole run", slots["requests"]],
                ],
            ),
            "",
        ]
    if slots is not None:
        body += [FOUND_SLOTS, ""]
    return "\n".join(body), data


METHOD = """\
**Method.** Every wait of the provider is an I/O-free plan that yields `Sleep` steps (the
sensor's pokes are Airflow's loop, calling `time.sleep`). The bench runs the same plans with
each `Sleep` multiplied by the simulator's time scale and a plan clock of real seconds divided
by it (timeouts, retry deadlines and progress lines see simulated time); Airflow's poke loop
gets the same scaled `sleep` and `monotonic`. Scaling cannot shrink a request's own latency or
a wait's start-up, which therefore count 1/scale times longer in simulated time: at 0.01 a
5 ms request stands for 0.5 s. So the scaled figures undercount the fastest pollers a little
(the sensor's 3 h figure most); the model in brackets is the pause series with requests that
take no time. The real-time 1 min column, waited for beside the scaled runs, is the check:
it matches the model within one request."""

FOUND_REQUESTS = """\
**Goal:** no wait costs more requests than its backoff implies; a 3 h copy costs tens, not
thousands, on the waits meant for long copies. **Met** for the trigger (23 GETs for 3 h: the
region copies of the nightly DAG) and the hook's own waits (under 200 for 3 h at 5 s -> 60 s).

**Found and fixed (23a4e76):** the poking sensor as `frozen_copy()` configures it was
documented as "every 2 s backing off to 5 s", but in poke mode `max_poll_interval` was never
used: Airflow's poke loop slept a fixed `poke_interval`. Measured before the fix (commit
9bc3e5a, one simulator at scale 0.01): 32 GETs for a 1 min copy in real time, 210 for 10 min
and 3,597 for 3 h scaled (the model: 31, 301, 5,401). The sensor now pokes on the provider's
one pause series (`hooks/api.poll_pauses`: from `poke_interval`, 1.5x per poke, up to
`max_poll_interval`), the same as the hooks' waits and the trigger.

**Left as is:** at 2 s -> 5 s a 3 h wait still costs about 2,200 GETs (the model; scaled,
each poke's latency counts 100 times over and fewer were measured). That wait runs while the
VMs are frozen, where every second is downtime, and the guardian thaws them after
`max_freeze_seconds` (default 600) anyway; whether it should slow down past the freeze limit
is for the freeze-window work. With 20 such waits at once on one API user (section 5) they
alone ask 4 to 10 requests a second, above a 5 per second limit."""

FOUND_SLOTS = """\
**Method.** `tests/system/dags/skytap_clone_test.py` (clone, a deferrable wait, three region
copies of one template, prune) under `AirflowStack` with `[core] parallelism` 2. The template
is locked while each region copy reads it, so the three region copies wait for each other,
deferred. The REST API's task instances are sampled with the LocalExecutor's worker processes
under this stack's scheduler (a worker's process title names the task instance it runs,
`<idle>` otherwise); other helpers' Airflows on this machine are not counted.

**Goal:** no worker slot held while only deferred waits are pending. **Met** by the REST
figure (no task instance running in any such sample). A worker can show busy in a sample
taken just after a task deferred (its state is already `deferred` while the worker's
supervisor finishes the task process); the table gives how many such samples there were and
the longest stretch, after which the workers are idle for the rest of the wait.

**Found and fixed (49ee8c2):** before the fix one `copy_to_dr` stayed `running` for 16 s of
the 64 s run while its siblings were deferred: it had read the template while free, and its
POST met the lock another region's copy had just taken; the hook re-sent the POST with
backoff until the template was free, in a worker slot, for up to the connection's retry
deadline (10 minutes by default; with region copies of hours that is the full 10 minutes
and about 30 POSTs per region, by the retry policy's backoff). A deferrable copy now asks
the hook not to retry a busy answer (`retry_busy=False`, `SkytapBusyError`) and defers on
the source at once; a
non-deferrable copy keeps retrying (in `frozen_copy` the VMs are frozen and a quick retry is
what shortens the window)."""


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
