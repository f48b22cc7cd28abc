"""The seed's own method against ours: 16 hosts, one live save-as-template, side by side.

Skytap's seed controller pattern (``/work/shared/quiesce.md``): "connect to each VM, quiesce,
call the API, then resume each VM". :func:`seed_controller` is that, as a user's plain script
would write it (paramiko and requests, no Airflow): connect to each VM in turn and run
``fsfreeze -f`` on its mount, save the environment as a template (``POST /templates``), poll
the template until it is no longer busy, then connect to each VM in turn and run
``fsfreeze -u``. Run alone it is a script too::

    SKYTAP_TOKEN=... python -m bench.seed_method controller --config hosts.json

Ours: ``QuiesceOperator`` freeze -> ``LiveCloneOperator`` (``wait_for_completion``) ->
``QuiesceOperator`` thaw, executed in-process with the VMs found through Skytap
(``environment_id``), as the example DAGs find them. Both sides use the same 16 lab VMs
(``demo.lab.Lab``: real sshd, a loop-mounted ext4 at /srv/data each), the same simulator and
copy duration, and the same poll schedule (every 2 s). The pairs alternate which side runs
first; the ratio of freeze windows (ours / theirs) is taken per pair and its median reported.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.common import Stopwatch, fmt, machine, summary, table, write_section

NAME = "seed_method"
TITLE = "3. Against the seed's own method: connect, freeze, copy, thaw in turn (16 hosts)"
ENV_ID = "1001"
MOUNT = "/srv/data"
VM_CONN = "bench_seed_vm"
STATE = Path("/run/skytap-quiesce")


# ---------------------------------------------------------------- the seed's method


def _ssh(host: dict[str, Any]) -> Any:
    import paramiko

    client = paramiko.SSHClient()
    kind, b64 = host["host_key"].split()[:2]
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(b64))
    client.get_host_keys().add(f"[{host['host']}]:{host['port']}", kind, key)
    client.connect(
        host["host"],
        port=host["port"],
        username=host["user"],
        key_filename=host["key_file"],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def _run(host: dict[str, Any], command: str) -> str:
    """Connect, run ``command``, disconnect; its stdout (fails on a non-zero exit)."""
    client = _ssh(host)
    try:
        _, out, err = client.exec_command(command, timeout=60)
        text = out.read().decode()
        code = out.channel.recv_exit_status()
        if code:
            raise RuntimeError(f"{host['name']}: {command!r} exit {code}: {err.read().decode()}")
        return text
    finally:
        client.close()


def seed_controller(
    config: dict[str, Any], token: str, *, hold_after_freeze: float = 0.0
) -> dict[str, Any]:
    """Freeze each VM in turn, save the environment as a template, wait, thaw each in turn.

    :param config: ``hosts`` (name, host, port, user, key_file, host_key), ``mount``, ``api``
        (base URL), ``user``, ``environment_id``, ``poll_seconds``
    :param token: the Skytap API token
    :param hold_after_freeze: sleep this long after freezing (to stop the controller there)
    """
    import requests

    api, auth = config["api"].rstrip("/"), (config["user"], token)
    mount = config["mount"]
    frozen_at: dict[str, float] = {}
    thawed_at: dict[str, float] = {}
    # "connect to each VM, quiesce": the VM's clock after fsfreeze -f returned
    for host in config["hosts"]:
        out = _run(host, f"fsfreeze -f {mount} && date +%s.%N")
        frozen_at[host["name"]] = float(out.split()[-1])
        print(json.dumps({"frozen": host["name"]}), flush=True)
    if hold_after_freeze:
        time.sleep(hold_after_freeze)
    # "call the API": a live save-as-template, then poll until it is no longer busy
    made = requests.post(
        f"{api}/templates",
        json={"configuration_id": config["environment_id"], "live_copy": True},
        auth=auth,
        headers={"Accept": "application/json"},
        timeout=30,
    )
    made.raise_for_status()
    template = made.json()
    while template.get("busy"):
        time.sleep(config["poll_seconds"])
        got = requests.get(
            f"{api}/templates/{template['id']}",
            auth=auth,
            headers={"Accept": "application/json"},
            timeout=30,
        )
        got.raise_for_status()
        template = got.json()
    # "then resume each VM"
    for host in config["hosts"]:
        out = _run(host, f"fsfreeze -u {mount}; date +%s.%N")
        thawed_at[host["name"]] = float(out.split()[-1])
    first, last = min(frozen_at.values()), max(thawed_at.values())
    return {
        "template_id": template["id"],
        "window_s": round(last - first, 3),
        "seconds_frozen": {n: round(thawed_at[n] - frozen_at[n], 3) for n in frozen_at},
        "freeze_spread_s": round(max(frozen_at.values()) - first, 3),
    }


# ---------------------------------------------------------------- ours


class _TaskInstance:
    """What the operators ask of a task instance when run in-process: XCom pushes."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def ours(n: int, poll_seconds: float, max_freeze_seconds: int = 120) -> dict[str, Any]:
    """QuiesceOperator freeze -> LiveCloneOperator (wait) -> QuiesceOperator thaw, in-process."""
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.clone import LiveCloneOperator
    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    common: dict[str, Any] = {
        "environment_id": ENV_ID,
        "ssh_conn_id": VM_CONN,
        "mounts": [MOUNT],
    }
    with DAG("bench_seed_method", schedule=None):
        freeze = QuiesceOperator(
            task_id="freeze", action="freeze", max_freeze_seconds=max_freeze_seconds, **common
        )
        clone = LiveCloneOperator(
            task_id="clone",
            environment_id=ENV_ID,
            target="template",
            wait_for_completion=True,
            poll_interval=poll_seconds,
            max_poll_interval=poll_seconds,
        )
        thaw = QuiesceOperator(task_id="thaw", action="thaw", **common)
    run_id = f"bench__{uuid.uuid4().hex[:10]}"
    # a logical date of its own per run, so each run's copy has its own name
    logical = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=time.time_ns() % 10**9)
    context: dict[str, Any] = {"run_id": run_id, "ti": _TaskInstance(), "logical_date": logical}
    frozen = freeze.execute(context)  # type: ignore[arg-type]
    try:
        made = clone.execute(context)  # type: ignore[arg-type]
    finally:
        thawed = thaw.execute(context)  # type: ignore[arg-type]
    if frozen["frozen_hosts"] != n or thawed["consistency"] != "application-consistent":
        raise RuntimeError(f"ours went wrong: {frozen} {thawed}")
    per_host = {h["host"].split(" ")[0]: h["seconds_frozen"] for h in thawed["hosts"]}
    first = min(datetime.fromisoformat(h["frozen_at"]) for h in thawed["hosts"])
    last_frozen = max(datetime.fromisoformat(h["frozen_at"]) for h in thawed["hosts"])
    return {
        "template_id": made["id"],
        "window_s": thawed["freeze_window"]["seconds"],
        "seconds_frozen": per_host,
        "freeze_spread_s": round((last_frozen - first).total_seconds(), 3),
        "guardian_ids": [h["guardian_id"] for h in thawed["hosts"]],
    }


# ---------------------------------------------------------------- the lab and the simulator


def lab_seed(lab: Any) -> dict[str, Any]:
    """The default seed with environment ENV_ID holding the lab's VMs (SSH services at the lab's
    ports; no disk images: the copy's duration is the simulator's ``copy_seconds``)."""
    from skytap_simulator.seed import default_seed

    seed = default_seed()
    env = next(e for e in seed["environments"] if e["id"] == ENV_ID)
    model = env["vms"][0]
    vms = []
    for i, vm in enumerate(lab.vms):
        new = copy.deepcopy(model)
        new.pop("disk_image", None)
        new.update(id=str(2001 + i), name=vm.name)
        new["hardware"]["disks"][0]["id"] = str(2101 + i)
        iface = new["interfaces"][0]
        iface.update(id=str(2201 + i), ip=f"10.0.0.{11 + i}", hostname=vm.name)
        iface["services"] = [
            {
                "id": str(2301 + i),
                "internal_port": 22,
                "external_ip": "127.0.0.1",
                "external_port": vm.port,
            }
        ]
        vms.append(new)
    env["vms"] = vms
    return seed


def frozen_now(lab: Any) -> list[str]:
    """VMs whose /srv/data does not take a write within 1 s right now. A write to a frozen
    filesystem cannot be killed: a probe left waiting finishes once the VMs are thawed."""
    probes = [
        (
            vm.name,
            subprocess.Popen(["nsenter", "-t", str(vm.pid), "-m", "touch", f"{MOUNT}/.probe"]),
        )
        for vm in lab.vms
    ]
    time.sleep(1.0)
    stuck = [name for name, proc in probes if proc.poll() is None]
    _PROBES.extend(proc for _, proc in probes)
    return stuck


_PROBES: list[subprocess.Popen[bytes]] = []


def reap_probes() -> None:
    """Wait for the probes (after a thaw they finish)."""
    while _PROBES:
        proc = _PROBES.pop()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def dead_controller(lab: Any, config: dict[str, Any], token: str, wait: float) -> dict[str, Any]:
    """Kill the seed's controller (SIGKILL) once every VM is frozen; how many stay frozen."""
    env = os.environ | {"SKYTAP_TOKEN": token}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    cmd = [sys.executable, "-m", "bench.seed_method", "controller", "--config", f.name]
    proc = subprocess.Popen([*cmd, "--hold", "600"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 120
        while seen < len(config["hosts"]) and time.monotonic() < deadline:
            if proc.stdout.readline().startswith('{"frozen"'):
                seen += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(wait)
        stuck = frozen_now(lab)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        Path(f.name).unlink(missing_ok=True)
        lab.thaw_all()
        reap_probes()
    return {"killed_after_freezing": seen, "waited_s": wait, "still_frozen": len(stuck)}


def already_frozen(lab: Any, config: dict[str, Any], token: str, poll: float) -> dict[str, Any]:
    """One VM (the middle one) frozen by someone else beforehand: what each side leaves frozen."""
    from airflow_provider_skytap.operators.quiesce import QuiesceError

    victim = lab.vms[len(lab.vms) // 2]
    out: dict[str, Any] = {"pre_frozen": victim.name}
    for side in ("theirs", "ours"):
        victim.in_vm("fsfreeze", "-f", MOUNT)
        try:
            if side == "theirs":
                seed_controller(config, token)
            else:
                ours(len(lab.vms), poll)
            error = "none"
        except (RuntimeError, QuiesceError) as exc:
            error = " ".join(str(exc).split())[:240]
        try:
            stuck = frozen_now(lab)
        finally:
            lab.thaw_all()
            reap_probes()
        out[side] = {"error": error, "left_frozen": len(stuck)}
    return out


def remove_records(gids: list[str]) -> None:
    """This run's finished guardian records (others' are left alone)."""
    import shutil

    for gid in gids:
        if (STATE / gid / "result").exists():
            shutil.rmtree(STATE / gid, ignore_errors=True)


# ---------------------------------------------------------------- the comparison


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["controller"]:
        return controller_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bench.seed_method", description=__doc__)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=5, help="side-by-side pairs")
    parser.add_argument("--copy-seconds", type=float, default=4.0, help="simulated copy time")
    parser.add_argument("--poll", type=float, default=2.0, help="both sides' poll interval")
    parser.add_argument(
        "--kill-wait", type=float, default=10.0, help="after killing the seed's controller"
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write the section")
    args = parser.parse_args(argv)
    started = machine()

    from demo.lab import Lab
    from skytap_simulator.control import SimulatorProcess

    names = tuple(f"seed-{i:02d}" for i in range(args.hosts))
    pairs: list[dict[str, Any]] = []
    with (
        Stopwatch() as whole,
        tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp,
        Lab(vm_names=names, size_mb=8, writer=False, plain_shell=True) as lab,
        SimulatorProcess(data_dir=Path(tmp) / "sim", time_scale=1.0) as sim,
    ):
        seed = lab_seed(lab)
        user = seed["users"][0]
        sim.admin.reset(seed)
        sim.admin.config(copy_seconds=args.copy_seconds)
        skytap = {"conn_type": "skytap", "host": sim.url, "login": user["username"]}
        skytap["password"] = user["token"]
        os.environ["AIRFLOW_CONN_SKYTAP_DEFAULT"] = json.dumps(skytap)
        os.environ[f"AIRFLOW_CONN_{VM_CONN.upper()}"] = json.dumps(lab.ssh_connection())
        config = {
            "hosts": [
                {
                    "name": vm.name,
                    "host": "127.0.0.1",
                    "port": vm.port,
                    "user": lab.user,
                    "key_file": str(lab.client_key),
                    "host_key": lab.host_key,
                }
                for vm in lab.vms
            ],
            "mount": MOUNT,
            "api": sim.url,
            "user": user["username"],
            "environment_id": ENV_ID,
            "poll_seconds": args.poll,
        }
        token = user["token"]
        # warm-up, both sides (installs the guardian script, imports, first connections)
        remove_records(ours(args.hosts, args.poll)["guardian_ids"])
        seed_controller(config, token)
        for i in range(args.pairs):
            order = ["ours", "theirs"] if i % 2 == 0 else ["theirs", "ours"]
            pair: dict[str, Any] = {"pair": i, "order": order}
            for side in order:
                try:
                    with Stopwatch() as sw:
                        if side == "ours":
                            pair[side] = ours(args.hosts, args.poll)
                            remove_records(pair[side].pop("guardian_ids"))
                        else:
                            pair[side] = seed_controller(config, token)
                finally:
                    lab.thaw_all()  # whatever happened, nothing stays frozen
                pair[side]["wall_s"] = round(sw.seconds, 3)
            pair["ratio"] = round(pair["ours"]["window_s"] / pair["theirs"]["window_s"], 3)
            pairs.append(pair)
            print(
                f"pair {i}: ours window {pair['ours']['window_s']} s, theirs "
                f"{pair['theirs']['window_s']} s, ratio {pair['ratio']}",
                file=sys.stderr,
                flush=True,
            )
        dead = dead_controller(lab, config, token, args.kill_wait)
        busy = already_frozen(lab, config, token, args.poll)
        left = frozen_now(lab)
        lab.thaw_all()
        reap_probes()
        if left:
            raise RuntimeError(f"VMs still frozen at the end: {left}")

    ratios = [p["ratio"] for p in pairs]
    ratio = summary(ratios)
    sides = {
        side: {
            "window_s": summary([p[side]["window_s"] for p in pairs]),
            "wall_s": summary([p[side]["wall_s"] for p in pairs]),
            "freeze_spread_s": summary([p[side]["freeze_spread_s"] for p in pairs]),
        }
        for side in ("ours", "theirs")
    }
    hosts = [vm for vm in names]
    per_host = {
        side: {h: statistics.median(p[side]["seconds_frozen"][h] for p in pairs) for h in hosts}
        for side in ("ours", "theirs")
    }
    host_rows = [[h, f"{per_host['ours'][h]:.2f}", f"{per_host['theirs'][h]:.2f}"] for h in hosts]
    side_rows = [
        [
            label,
            fmt(sides[side]["window_s"]),
            fmt(sides[side]["freeze_spread_s"]),
            fmt(sides[side]["wall_s"]),
        ]
        for side, label in (("ours", "ours"), ("theirs", "the seed's method"))
    ]
    side_head = ["method", "freeze window", "first to last freeze", "wall time, start to end"]
    body = f"""
{args.hosts} lab VMs (`demo.lab.Lab`: real sshd, 8 MB ext4 at `{MOUNT}`, no writer, the VMs'
`~/.bashrc` masked), one simulator (copy {args.copy_seconds:g} s, time scale 1, no faults),
environment {ENV_ID} holding the {args.hosts} VMs. **Theirs**: `bench/seed_method.py`'s
`seed_controller`, a plain paramiko + requests script: for each VM in turn connect, `fsfreeze -f`,
disconnect; `POST /templates` (live save-as-template); poll the template every {args.poll:g} s
until not busy; for each VM in turn connect, `fsfreeze -u`, disconnect. **Ours**: `QuiesceOperator`
freeze -> `LiveCloneOperator(target="template", wait_for_completion=True)` -> `QuiesceOperator`
thaw, executed in-process, the VMs found through Skytap (`environment_id`), polling every
{args.poll:g} s too (`poll_interval` = `max_poll_interval`). Freeze window: first host frozen to
last host thawed, VM-side clocks on both sides (ours: the guardians' reports; theirs: `date`
right after each `fsfreeze`). {args.pairs} pairs, alternating which side runs first.

**Freeze window at {args.hosts} hosts, ours / theirs (median of the per-pair ratios):
{fmt(ratio, "x")}.**

{table(side_head, side_rows)}

Seconds each host was frozen (median over pairs), in the order the seed's method freezes them
(it thaws in the same order, so each of its hosts stays frozen for about the whole freeze phase,
the copy and the thaw phase; ours freezes them all within {fmt(sides["ours"]["freeze_spread_s"])}):

{table(["host", "ours", "the seed's method"], host_rows)}

What the seed's method lacks, measured: its controller killed (SIGKILL) once it had frozen
{dead["killed_after_freezing"]} VMs left **{dead["still_frozen"]} of {args.hosts} still frozen
{dead["waited_s"]:g} s later** (and for as long as nobody thaws them; the harness thawed them).
Ours arms a guardian on each VM first, which thaws at `max_freeze_seconds`, on a signal, or when
its backstop sees it die (`tests/quiesce/test_guardian_kill.py`). No preflight: with
{busy["pre_frozen"]}'s mount frozen beforehand by someone else, the seed's method stopped at it
(`{busy["theirs"]["error"]}`) leaving **{busy["theirs"]["left_frozen"]} of {args.hosts} VMs
frozen** (those it had frozen before it, and that one); ours failed in preflight
(`{busy["ours"]["error"]}`) with {busy["ours"]["left_frozen"]} frozen (only that one, not ours to
thaw).

Whole run: {whole.seconds:.0f} s.
"""
    data = {
        "hosts": args.hosts,
        "pairs_n": args.pairs,
        "copy_seconds": args.copy_seconds,
        "poll_seconds": args.poll,
        "ratio_ours_over_theirs": ratio,
        "sides": sides,
        "seconds_frozen_median": per_host,
        "dead_controller": dead,
        "already_frozen": busy,
        "pairs": pairs,
    }
    print(body)
    if not args.no_write:
        command = "make bench BENCH=seed_method"
        if argv:
            command = "python -m bench.seed_method " + " ".join(argv)
        write_section(NAME, TITLE, command, body, data, started=started)
    return 0


def controller_main(argv: list[str]) -> int:
    """``controller --config FILE [--hold S]``: the seed's method alone (token: SKYTAP_TOKEN)."""
    parser = argparse.ArgumentParser(prog="bench.seed_method controller")
    parser.add_argument("--config", required=True)
    parser.add_argument("--hold", type=float, default=0.0, help="sleep after freezing")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    result = seed_controller(config, os.environ["SKYTAP_TOKEN"], hold_after_freeze=args.hold)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main(sys.argv[1:]))
