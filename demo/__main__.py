"""`make demo`: the nightly backup DAG, end to end, on this machine; then a check of the copies.

1. Starts three VMs (``demo.lab``: each an OpenSSH sshd in its own mount namespace, with an
   ext4 disk at /srv/data and a writer fsyncing checksummed records to it).
2. Starts the Skytap simulator seeded with environment 1001 (3 VMs) whose disks are those
   images and whose SSH services are those sshds; a share of API requests fails on purpose.
3. Runs ``skytap_live_clone_backup`` with ``airflow dags test`` on a temporary AIRFLOW_HOME.
4. Checks every disk image of every copy it made (``e2fsck -n`` and every record), then
   makes one control clone without freezing and checks that too.
5. Prints the freeze windows, the copies and their durations, and the verdict.
6. Runs the restore drill (``skytap_restore_drill``) on the backup's EMEA copy: restored in
   isolation, booted as new VMs on the restored environment's own disks (``lab.Hypervisor``),
   checked over SSH (``e2fsck -n``, every record), tagged verified, deleted. Prints the
   recovery time.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from demo import airflow_cli, lab
from skytap_simulator.control import SimulatorProcess

SEED = Path(__file__).resolve().parents[1] / "skytap_simulator" / "default_seed.json"
USER, TOKEN, ENV = "demo", "sim-demo-token-7f3a9c", "1001"
DAG_ID = "skytap_live_clone_backup"
DRILL_ID = "skytap_restore_drill"
DR_REGIONS = ["EMEA", "APAC-2"]
COPY_SECONDS, REGION_COPY_SECONDS = 4, 6


def say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    rootless = os.environ.get("DEMO_ROOTLESS") == "1"
    reason = None if rootless else lab.unavailable()
    if reason:
        say(f"Real frozen disks are not possible here: {reason}.")
        rootless = True
    if rootless:
        reason = lab.unavailable(rootless=True)
        if reason:
            say(f"The demo's VMs cannot run on this machine either: {reason}. Nothing was run.")
            return 2
    rate = float(os.environ.get("DEMO_FAULT_RATE", "0.1"))
    with tempfile.TemporaryDirectory(prefix="skytap-demo-") as tmp, lab.Lab(rootless) as vms:
        work = Path(tmp)
        if rootless:
            say(f"Lab without root: {len(vms.vms)} VMs, each a plain directory holding a raw disk")
            say(f"file and an sshd run as {vms.user}; a writer appends checksummed records to")
            say("the disk (fsync each). Skipped: mount namespaces, loop-mounted ext4, fsfreeze")
            say("and e2fsck (they need root). The DAG pauses each writer instead (profile app:")
            say("kill -STOP before the clone, kill -CONT after it).")
        else:
            say(f"Lab: {len(vms.vms)} VMs, each an sshd in its own mount namespace with an ext4")
            say(f"disk at {lab.MOUNT} and a writer appending checksummed records (fsync each):")
        for vm in vms.vms:
            say(f"   {vm.name}: ssh 127.0.0.1:{vm.port}, disk {vm.image.name}")
        seed_file = work / "seed.json"
        seed_file.write_text(json.dumps(vms.seed(json.loads(SEED.read_text()), ENV)))
        with SimulatorProcess(seed=seed_file, data_dir=work / "skytap-disks") as sim:
            sim.admin.config(
                copy_seconds=COPY_SECONDS, region_copy_seconds=REGION_COPY_SECONDS, delete_seconds=1
            )
            share = rate / 3
            sim.admin.faults(
                seed=2026,
                error_rates={"423": share, "429": share, "503": share},
                ambiguous_fraction=0.5,
                retry_after_s=1,
            )
            say(f"Skytap simulator on {sim.url}: environment {ENV} with those 3 VMs; a copy")
            say(f"reads the disks for {COPY_SECONDS} s, a region copy {REGION_COPY_SECONDS} s;")
            say(f"{rate:.0%} of API requests fail on purpose (423, 429, 503).")
            say()
            env = airflow_cli.airflow_env(
                work / "airflow",
                {
                    "skytap_default": {
                        "conn_type": "skytap",
                        "host": sim.url,
                        "login": USER,
                        "password": TOKEN,
                    },
                    "skytap_vm_ssh": vms.ssh_connection(),
                },
            )
            # The demo's config, with what these VMs need (rootless: their directories, the
            # writers paused) and the drill's check of their records.
            env[airflow_cli.CONFIG_ENV] = str(
                airflow_cli.write_config(
                    work / "skytap_backups.yaml",
                    vms.backup_config(),
                    {"allow_publish_ssh": True, "app_check": vms.app_check()},
                )
            )
            airflow_cli.migrate(env)
            ok = run_backup(env)
            state = sim.admin.state()
            requests = sim.admin.requests()
            sim.admin.clear_faults()
            control = control_clone(sim)
            report(env, state, requests, control, ok)
            drilled = run_drill(env, vms, sim) if ok else False
            left = vms.frozen()
            say(f"VMs frozen or paused at the end: {', '.join(left) if left else 'none'}")
            # Every copy asks Skytap for a live clone: one without it suspends the VMs.
            suspended = sim.admin.suspended()
            listed = ", ".join(f"{s['environment_id']}/{s['vm_id']}" for s in suspended)
            say(f"VMs suspended by a copy (no live clone): {len(suspended)} {listed}".rstrip())
    return 0 if ok and drilled and not suspended else 1


def run_drill(env: dict[str, str], vms: lab.Lab, sim: SimulatorProcess) -> bool:
    """The restore drill on the backup just made: its EMEA copy restored in isolation, booted
    as new VMs on the restored environment's own disks, checked over SSH, then deleted."""
    say()
    if vms.rootless:
        say("Restore drill: skipped (its VMs mount the restored disks: that needs root).")
        return True
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    # The config (written above) publishes SSH on the restored VMs and checks their records.
    conf = {"boot_timeout": 60}
    say(f"$ airflow dags test {DRILL_ID} {date} --conf '{json.dumps(conf)}'")
    started = time.monotonic()
    with lab.Hypervisor(vms, sim.admin) as hypervisor:
        done = airflow_cli.dags_test(env, DRILL_ID, date, conf)
    ok = airflow_cli.succeeded(done)
    fd, name = tempfile.mkstemp(prefix=f"skytap-demo-{DRILL_ID}-", suffix=".log")
    with os.fdopen(fd, "w") as out:
        out.write(done.stdout + done.stderr)
    say(
        f"   run {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s "
        f"(Airflow's output: {name})"
    )
    outcome = airflow_cli.results(airflow_cli.run_record(env, DRILL_ID)).get(("report", -1)) or {}
    left = sim.admin.restored_left()
    healthy = [vm for vm, verdict in (outcome.get("vms") or {}).items() if verdict == "healthy"]
    records = sum(
        int(text.split()[1])
        for text in (outcome.get("app_output") or {}).values()
        if str(text).startswith("verified ")
    )
    say(f"   backup: template {outcome.get('template_id')} in {outcome.get('region')}, recovery")
    say(f"   point {outcome.get('recovery_point')}; tagged {outcome.get('tag')}")
    for vm, verdict in (outcome.get("vms") or {}).items():
        say(f"   {vm}: {verdict}, {(outcome.get('app_output') or {}).get(vm)}")
    gone = outcome.get("drill_environment_deleted") and not left
    if ok and outcome.get("verified") and gone:
        say(
            f"RESTORE DRILL: restored in {outcome['recovery_seconds']:.1f} s, every VM healthy "
            f"({len(healthy)}/{len(outcome['vms'])}), {records} records verified, drill "
            f"environment {outcome.get('drill_environment')} deleted."
        )
    else:
        say(
            f"RESTORE DRILL FAILED: verified {outcome.get('verified')}, problems "
            f"{outcome.get('problems')}, environments left {left}, hypervisor {hypervisor.errors}"
        )
    return bool(ok and outcome.get("verified") and gone)


def run_backup(env: dict[str, str]) -> bool:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    conf = {"dr_regions": DR_REGIONS, "dr_poll_seconds": 1, "max_freeze_seconds": 120}
    say(f"$ airflow dags test {DAG_ID} {date} --conf '{json.dumps(conf)}'")
    started = time.monotonic()
    done = airflow_cli.dags_test(env, DAG_ID, date, conf)
    # Kept after the demo (the rest of its files go): Airflow's whole output of the run.
    fd, name = tempfile.mkstemp(prefix=f"skytap-demo-{DAG_ID}-", suffix=".log")
    log = Path(name)
    with os.fdopen(fd, "w") as out:
        out.write(done.stdout + done.stderr)
    ok = airflow_cli.succeeded(done)
    say(
        f"   run {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s "
        f"(Airflow's output: {log})"
    )
    return ok


def control_clone(sim: SimulatorProcess) -> list[tuple[str, lab.ImageCheck]]:
    """The same save-as-template, without freezing; answers the checks of its disks."""
    # The report says what this did; the hook's progress lines would only interleave with it
    # (read when Airflow is first imported in this process, which is here).
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from airflow_provider_skytap.hooks.skytap import SkytapHook

    os.environ["AIRFLOW_CONN_SKYTAP_CONTROL"] = json.dumps(
        {"conn_type": "skytap", "host": sim.url, "login": USER, "password": TOKEN}
    )
    hook = SkytapHook("skytap_control")
    made = hook.save_as_template(ENV, name="control clone, not frozen")
    hook.wait_until_ready("template", made["id"], poll_interval=0.5, max_poll_interval=1)
    template = next(t for t in sim.admin.state()["templates"] if t["id"] == made["id"])
    return [(vm["name"], lab.check_image(vm["disk_image"])) for vm in template["vms"]]


def report(
    env: dict[str, str],
    state: dict[str, Any],
    requests: list[dict[str, Any]],
    control: list[tuple[str, lab.ImageCheck]],
    ok: bool,
) -> None:
    record = airflow_cli.run_record(env, DAG_ID)
    results = airflow_cli.results(record)
    say()
    say("Tasks:")
    for ti in sorted(record["task_instances"], key=lambda t: (t["start"] or "", t["map_index"])):
        mapped = f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""
        duration = f"{ti['duration']:.1f} s" if ti["duration"] is not None else "-"
        task_id, tries = ti["task_id"] + mapped, ti["try_number"]
        say(f"   {task_id:<16} {ti['state']:<16} {duration:>8}  try {tries}")
    failed = [r for r in requests if r.get("fault")]
    say(f"API: {len(requests)} requests, {len(failed)} failed on purpose and retried")

    thaw = results.get(("backup.thaw", -1)) or {}
    window = thaw.get("freeze_window") or {}
    say()
    say("Freeze windows (the thaw task's report):")
    for host in thaw.get("hosts", []):
        say(f"   {host['host']}: frozen {host['seconds_frozen']} s, {host['consistency']}")
    say(f"   all VMs, first freeze to last thaw: {window.get('seconds')} s")

    clone = results.get(("backup.copy", -1)) or {}
    say()
    # Imported here, after the control clone: importing the operators sets up Airflow's
    # logging, which would print the control clone's hook lines into this report.
    from airflow_provider_skytap.backups import consistency

    say("Copies (durations as Skytap counted them; the verdict the thaw tagged each with):")
    copies = [t for t in state["templates"] if clone and t["name"] == clone.get("name")]
    jobs = {j.get("target_id"): j for j in state.get("jobs", [])}
    checks: list[tuple[str, lab.ImageCheck]] = []
    for template in copies:
        job = jobs.get(template["id"]) or {}
        took = (
            f"{job['ready_at'] - job['start_at']:.1f} s"
            if job.get("ready_at") and job.get("start_at")
            else "-"
        )
        verdict = consistency(template) or "not tagged"
        say(
            f"   template {template['id']} in {template['region']:<9} {took:>7}  {verdict:<22}  "
            f"{template['name']}"
        )
        for vm in template["vms"]:
            checks.append((f"{template['region']} {vm['name']}", lab.check_image(vm["disk_image"])))
    say()
    say("Every disk of every copy (ext4: e2fsck -n, the journal; each record's CRC and sequence;")
    say("the commit point against the log):")
    for label, check in checks:
        say(f"   {label:<16} {check.verdict()}")
    consistent = bool(checks) and all(c.consistent for _, c in checks)
    say()
    say("Control: the same clone without freezing or pausing (the writers kept writing):")
    for vm, check in control:
        say(f"   {vm:<16} {check.verdict()}")
    say()
    verdict = thaw.get("consistency", "unknown")
    if ok and consistent and verdict == "application-consistent":
        say(f"VERDICT: consistent backup ({verdict}); {len(copies)} copies, every disk clean.")
    else:
        say(
            f"VERDICT: NOT a consistent backup (run ok: {ok}, thaw: {verdict}, disks clean: "
            f"{consistent})."
        )


if __name__ == "__main__":
    sys.exit(main())
