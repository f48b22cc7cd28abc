"""``python -m airflow_provider_skytap.probe`` against the simulator: read-only by default,
one live save (and one region copy) with ``--allow-copy``, everything it made deleted, and a
non-zero exit with what it saw when the account differs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import Sim

ENV = "1001"
CONN = "skytap_probe"


def probe(sim: Sim, *args: str, **extra: Any) -> subprocess.CompletedProcess[str]:
    """The probe as a user runs it, with the connection in an environment variable."""
    doc = {
        "conn_type": "skytap",
        "host": sim.url,
        "login": sim.username,
        "password": sim.token,
        "extra": {"retry_deadline": 10, **extra},
    }
    env = {**os.environ, f"AIRFLOW_CONN_{CONN.upper()}": json.dumps(doc)}
    command = [sys.executable, "-m", "airflow_provider_skytap.probe", "--conn-id", CONN]
    command += ["--environment-id", ENV, "--poll", "0.1", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    print(done.stdout)  # the table, in the test's output
    assert sim.token not in done.stdout + done.stderr
    return done


def rows(output: str) -> dict[str, str]:
    """behaviour -> result, from the printed table."""
    found = {}
    for line in output.splitlines():
        for status in ("confirmed", "differs", "not checked"):
            marker = f"  {status}"
            if marker in line:
                found[line.split(marker)[0].strip()] = status
                break
    return found


def live_probe_templates(sim: Sim) -> list[dict[str, Any]]:
    return [
        t
        for t in sim.admin.state()["templates"]
        if t["name"].startswith("skytap-probe-") and not t["deleted"]
    ]


def test_the_default_run_is_read_only_and_confirms_every_read(sim: Sim) -> None:
    done = probe(sim)
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert table["lists with tags=true carry each resource's tags"] == "confirmed"
    assert table["the environment's region is one the provider knows"] == "confirmed"
    assert table["lists page by count/offset with a Content-Range total"] == "confirmed"
    assert table[LIVE] == "not checked"
    assert "needs --allow-copy" in done.stdout
    assert "cleanup: the probe made nothing" in done.stdout
    writes = [r for r in sim.admin.requests() if r["method"] != "GET"]
    assert writes == []


def test_allow_copy_with_a_dr_region_confirms_and_deletes_what_it_made(sim: Sim) -> None:
    done = probe(sim, "--allow-copy", "--dr-region", "EMEA")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert set(table.values()) == {"confirmed"}, table
    assert done.stdout.count("deleted template") == 2
    assert live_probe_templates(sim) == []
    posts = [r for r in sim.admin.requests() if r["method"] == "POST"]
    assert len(posts) == 2  # one live save, one region copy


def test_a_non_admin_user_is_told_scope_company_differs(sim: Sim) -> None:
    sim.admin.config(admin=False)
    done = probe(sim)
    assert done.returncode == 1
    table = rows(done.stdout)
    assert table["the connection's list scope (company by default) is allowed"] == "differs"
    assert "not a company admin" in done.stdout
    assert probe(sim, list_scope="me").returncode == 0


def test_a_region_the_package_does_not_know_is_refused_or_added(sim: Sim) -> None:
    done = probe(sim, "--dr-region", "Mars-1", "--allow-copy")
    assert done.returncode == 2 and '{"extra_regions": ["Mars-1"]}' in done.stdout
    assert [r for r in sim.admin.requests() if r["method"] != "GET"] == []
    # Added in the connection, the probe tries it; the simulator (like Skytap for a region
    # that does not exist) refuses the copy: that step differs and everything is deleted.
    done = probe(sim, "--dr-region", "Mars-1", "--allow-copy", extra_regions=["Mars-1"])
    assert done.returncode == 1
    table = rows(done.stdout)
    assert table[OVERRIDE] == "differs" and "Mars-1" in done.stdout
    assert table[LIVE] == "confirmed"
    assert done.stdout.count("deleted template") == 1
    assert live_probe_templates(sim) == []


def test_a_region_copy_that_fails_still_deletes_both_templates(sim: Sim) -> None:
    sim.admin.faults(fail_copies=[{"name_prefix": "skytap-probe-dr-", "message": "Disk fail"}])
    done = probe(sim, "--allow-copy", "--dr-region", "EMEA")
    assert done.returncode == 1
    assert rows(done.stdout)[OVERRIDE] == "differs" and "Disk fail" in done.stdout
    assert done.stdout.count("deleted template") == 2
    assert live_probe_templates(sim) == []


@pytest.mark.suspends_vms(3)
def test_an_account_that_differs_is_reported_resumed_and_cleaned_up(sim: Sim) -> None:
    """No live clone on the account and names not applied: each differs, the exit is 1, the
    suspended environment is started again and the template deleted all the same."""
    sim.admin.config(live_clone=False, copy_names=False)
    done = probe(sim, "--allow-copy")
    assert done.returncode == 1
    table = rows(done.stdout)
    assert table[LIVE] == "differs" and "2001: suspended" in done.stdout
    assert table["a copy takes the name it is asked for"] == "differs"
    assert "differs from what the provider relies on" in done.stdout
    assert "resumed environment 1001" in done.stdout
    assert "deleted template" in done.stdout
    env = next(e for e in sim.admin.state()["environments"] if e["id"] == ENV)
    assert {vm["runstate"] for vm in env["vms"]} == {"running"}
    leftover = [
        t
        for t in sim.admin.state()["templates"]
        if t["name"].endswith("- Copy") and not t["deleted"]
    ]
    assert leftover == []


LIVE = "a save with live_copy leaves every running source VM running"
OVERRIDE = "a region copy with copy_to_region_vm_status_override is accepted"
