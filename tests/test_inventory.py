"""The inventory: this provider's backups per source and region, against an RPO, read from
the simulator over HTTP by the hook, and the same from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_skytap import inventory
from airflow_provider_skytap.backups import consistency_tag, source_tag, time_tag
from airflow_provider_skytap.verification import verified_tag
from tests.conftest import Sim
from tests.skytap_simulator.helpers import seed_with

NOW = datetime.now(timezone.utc).replace(microsecond=0)
MINE = source_tag("nightly", "environment", "1001")


def backup_template(
    rid: str,
    region: str,
    hours_ago: float,
    verdict: str | None,
    verified: tuple[float, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A template as this provider tags a backup of environment 1001 (DAG ``nightly``);
    ``verified``: (hours ago, recovery seconds) of a restore drill's tag."""
    tags = [MINE, time_tag(NOW - timedelta(hours=hours_ago))]
    if verdict:
        tags.append(consistency_tag(verdict))
    if verified:
        tags.append(verified_tag(NOW - timedelta(hours=verified[0]), verified[1]))
    return {
        "id": rid,
        "name": f"nightly-environment-1001-{rid}",
        "region": region,
        "vms": [{"name": "app", "hardware": {"disks": [{"size": 20480}, {"size": 10240}]}}],
        "tags": [{"value": t} for t in tags],
        **extra,
    }


def seed_backups(sim: Sim) -> None:
    """Environment 1001's backups: four in US-West, one DR copy in EMEA, and a template that
    only looks like one (no source tag of ours)."""
    templates = [
        backup_template("7001", "US-West", 2, "application-consistent"),
        # a restore drill verified it 20 h ago and measured a recovery time of 212 s
        backup_template("7002", "US-West", 26, "application-consistent", verified=(20, 212.0)),
        backup_template("7003", "US-West", 1, "inconsistent"),  # newest, but torn
        backup_template("7004", "EMEA", 30, "application-consistent"),
        backup_template("7006", "US-West", 0.5, None),  # its run failed before the thaw looked
        {
            "id": "7005",
            "name": "nightly-environment-1001-fake",
            "region": "US-West",
            "tags": [{"value": time_tag(NOW)}, {"value": "application-consistent"}],
        },
    ]
    sim.admin.reset(seed_with(templates=templates))


@pytest.fixture
def backups(sim: Sim) -> Sim:
    seed_backups(sim)
    return sim


def _conn_env(sim: Sim) -> dict[str, str]:
    doc = {"conn_type": "skytap", "host": sim.url, "login": sim.username, "password": sim.token}
    return {"AIRFLOW_CONN_SKYTAP_INV": json.dumps(doc)}


def test_each_region_shows_its_backups_newest_first_and_the_newest_consistent_one(
    backups: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _conn_env(backups).items():
        monkeypatch.setenv(key, value)
    inv = inventory.collect("skytap_inv", rpo_hours=24)
    by_region = {(g.source, g.region): g for g in inv.groups}
    assert sorted(by_region) == [("environment-1001", "EMEA"), ("environment-1001", "US-West")]
    west = by_region[("environment-1001", "US-West")]
    assert [b.id for b in west.backups] == ["7006", "7003", "7001", "7002"]  # 7005 is not ours
    assert west.newest_consistent is not None and west.newest_consistent.id == "7001"
    assert [b.verdict for b in west.backups] == [
        None,
        "inconsistent",
        "application-consistent",
        "application-consistent",
    ]
    first = west.backups[2]
    assert first.size_mb == 30720
    assert first.recovery_point == NOW - timedelta(hours=2)
    assert first.dags == ("nightly",)
    assert west.meets(inv.rpo, inv.now) is True
    emea = by_region[("environment-1001", "EMEA")]
    assert emea.meets(inv.rpo, inv.now) is False  # 30 h old against 24 h
    assert inv.missed == [emea]
    text = inventory.render_text(inv)
    assert "environment-1001 in EMEA: newest application-consistent" in text
    assert "MISSES the RPO of 1 d 0 h" in text
    assert " * template 7001 " in text and "size 30.0 GiB" in text
    assert "not vouched for" in text
    page = inventory.render_html(inv)
    assert "class='group rpo-missed' data-source='environment-1001' data-region='EMEA'" in page
    # The recovery time a restore drill measured (issue 17), per backup and per region.
    drilled = west.backups[3]
    assert (drilled.id, drilled.recovery_seconds) == ("7002", 212.0)
    assert drilled.verified_at == NOW - timedelta(hours=20)
    assert west.newest_verified is drilled and emea.newest_verified is None
    assert "newest verified: nightly-environment-1001-7002 (1 d 2 h old; verified " in text
    assert "recovered in 3 min 32 s" in text
    assert "environment-1001 in EMEA: " in text and "no backup verified by a restore drill" in text


def _cli(sim: Sim, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_conn_env(sim)}
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_skytap.inventory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line_exits_3_when_a_region_misses_the_rpo(backups: Sim) -> None:
    missed = _cli(backups, "--conn-id", "skytap_inv", "--rpo-hours", "24")
    assert missed.returncode == inventory.EXIT_RPO_MISSED, missed.stderr
    assert "1 of 2 source/region pairs miss it" in missed.stdout
    met = _cli(backups, "--conn-id", "skytap_inv", "--rpo-hours", "48")
    assert met.returncode == 0, met.stderr
    assert "0 of 2 source/region pairs miss it" in met.stdout
    assert backups.token not in missed.stdout + missed.stderr + met.stdout + met.stderr


def test_the_command_line_names_a_bad_rpo_and_a_missing_connection(backups: Sim) -> None:
    bad = _cli(backups, "--conn-id", "skytap_inv", "--rpo-hours", "-1")
    assert bad.returncode == 2
    assert "rpo_hours must be a positive number, got -1.0" in bad.stderr
    missing = _cli(backups, "--conn-id", "no_such_conn")
    assert missing.returncode == 2
    assert "no_such_conn" in missing.stderr


def test_no_backups_says_so(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _conn_env(sim).items():
        monkeypatch.setenv(key, value)
    inv = inventory.collect("skytap_inv")
    assert inv.groups == []
    assert inventory.render_text(inv) == (
        "No backups made by airflow-provider-skytap were found.\n"
    )
