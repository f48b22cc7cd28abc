"""`make demo`: the hook's main calls against the embedded Skytap simulator, explained.

Starts the simulator on a free loopback port, points the ``skytap_default`` connection at
it, and runs what a nightly backup asks of Skytap: read the environment, live-copy it, save
it as a template, copy the template to a DR region, tag and find it, then clean up. A share
of requests is failed on purpose (``DEMO_FAULT_RATE``, default 0.2) to show the retries.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from skytap_simulator.control import SimulatorProcess

# The simulator's default seed: user demo, environment 1001 "erp-prod" (3 VMs, US-West).
USER, TOKEN, ENV = "demo", "sim-demo-token-7f3a9c", "1001"
DR_REGION = "EMEA"


def say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    rate = float(os.environ.get("DEMO_FAULT_RATE", "0.2"))
    logging.basicConfig(level=logging.WARNING, format="    | %(message)s")
    with (
        tempfile.TemporaryDirectory(prefix="skytap-demo-") as data_dir,
        SimulatorProcess(data_dir=Path(data_dir)) as sim,
    ):
        os.environ["AIRFLOW_CONN_SKYTAP_DEFAULT"] = json.dumps(
            {"conn_type": "skytap", "host": sim.url, "login": USER, "password": TOKEN}
        )
        sim.admin.config(copy_seconds=3, region_copy_seconds=6, delete_seconds=1)
        share = rate / 3
        sim.admin.faults(
            seed=2026,
            error_rates={"423": share, "429": share, "503": share},
            ambiguous_fraction=0.5,
            retry_after_s=1,
            # The case no Skytap client handles: the template is made, the answer is lost.
            rules=[{"method": "POST", "path": "/templates", "action": "drop", "after": True}],
        )
        say(f"Skytap simulator on {sim.url}; {rate:.0%} of API requests fail on purpose")
        say("(423 busy, 429 with Retry-After, 503), and the answer to the first template")
        say("POST is lost after the template was made.")
        say()
        run_backup()
        report(sim.admin.requests(), sim.admin.state())
    return 0


def run_backup() -> None:
    from airflow_provider_skytap.hooks.skytap import SkytapHook

    hook = SkytapHook()  # skytap_default
    logging.getLogger(hook.log.name).setLevel(logging.INFO)
    stamp = time.strftime("%Y-%m-%d")
    env = hook.get_environment(ENV)
    say(f"1. environment {env['id']} {env['name']!r}: {env['runstate']}, region {env['region']}")
    for vm in env["vms"]:
        ssh = [
            f"{s['external_ip']}:{s['external_port']}"
            for i in vm["interfaces"]
            for s in i.get("services", [])
            if s.get("internal_port") == 22
        ]
        say(f"   VM {vm['id']} {vm['name']}: {vm['runstate']}, ssh via {', '.join(ssh) or '-'}")

    started = time.monotonic()
    copy = hook.copy_environment(ENV, name=f"{env['name']} copy {stamp}")
    say(f"2. live copy: environment {copy['id']} {copy['name']!r} is {copy['runstate']}")
    copy = hook.wait_until_ready("environment", copy["id"], timeout=300, poll_interval=0.5)
    say(f"   ready in {time.monotonic() - started:.1f} s: runstate {copy['runstate']}")
    say(f"   the source environment is {hook.get_environment(ENV)['runstate']}")

    started = time.monotonic()
    template = hook.save_as_template(ENV, name=f"{env['name']} {stamp}", description="nightly")
    template = hook.wait_until_ready("template", template["id"], timeout=300, poll_interval=0.5)
    say(
        f"3. saved as template {template['id']} {template['name']!r} "
        f"in {time.monotonic() - started:.1f} s"
    )

    started = time.monotonic()
    dr = hook.copy_template(
        template["id"], name=f"{template['name']} {DR_REGION}", target_region=DR_REGION
    )
    dr = hook.wait_until_ready("template", dr["id"], timeout=600, poll_interval=0.5)
    say(
        f"4. copied to {dr['region']}: template {dr['id']} {dr['name']!r} "
        f"in {time.monotonic() - started:.1f} s"
    )

    hook.add_tags("template", dr["id"], ["nightly-backup", f"source-{ENV}"])
    found = hook.list_resources(
        "template", tags=["nightly-backup", f"source-{ENV}"], region=DR_REGION
    )
    say(f"5. tagged; the DR templates of environment {ENV}: {[t['id'] for t in found]}")

    hook.delete("environment", copy["id"], timeout=120)
    say(f"6. deleted the copy {copy['id']} (waited until Skytap answered 404)")


def report(requests: list[dict[str, Any]], state: dict[str, Any]) -> None:
    api = [r for r in requests if not r["path"].startswith("/_sim")]
    injected = Counter(str(r["fault"]) for r in api if r.get("fault"))
    by_status = Counter(str(r["status"] or "dropped") for r in api)
    names = Counter(item["name"] for kind in ("environments", "templates") for item in state[kind])
    doubles = {name: n for name, n in names.items() if n > 1}
    say()
    say(f"API requests: {len(api)}; answered: {dict(sorted(by_status.items()))}")
    say(f"failed on purpose and retried: {sum(injected.values())} {dict(injected)}")
    say(f"resources made twice: {len(doubles)} {doubles or ''}".rstrip())
    if doubles:
        raise SystemExit("a retry made a second copy: this is a bug")


if __name__ == "__main__":
    sys.exit(main())
