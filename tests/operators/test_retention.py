"""PruneBackupsOperator against the simulator: exactly the expected set goes, nothing else."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_skytap.backups import (
    backup_name,
    consistency_tag,
    legacy_source_tag,
    source_tag,
    time_tag,
)
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.operators.retention import PruneBackupsOperator
from tests.conftest import set_connection
from tests.helpers import api_requests, default_seed
from tests.tasks import run_task

ENV = "1001"
DAG_ID = "erp_backup"
NIGHT = datetime(2026, 11, 1, tzinfo=timezone.utc)


def prune(conn: str, **kwargs: Any) -> PruneBackupsOperator:
    kwargs.setdefault("environment_id", ENV)
    with DAG(DAG_ID, schedule=None):
        return PruneBackupsOperator(task_id="prune", skytap_conn_id=conn, **kwargs)


def backup(hook: SkytapHook, day: int, *, region: str | None = None, tag: str | None = None) -> str:
    """A template as the clone operators leave it: named, with source and time tags."""
    name = f"{DAG_ID}-environment-{ENV}-{day:02d}"
    template = hook.save_as_template(ENV, name=name)
    hook.wait_until_ready("template", template["id"], timeout=30, poll_interval=0.05)
    rid = str(template["id"])
    if region:
        dr = hook.copy_template(rid, name=name, target_region=region)
        hook.wait_until_ready("template", dr["id"], timeout=30, poll_interval=0.05)
        hook.delete("template", rid, timeout=30)
        rid = str(dr["id"])
    when = NIGHT + timedelta(days=day)
    hook.add_tags("template", rid, [tag or source_tag(DAG_ID, "environment", ENV), time_tag(when)])
    return rid


def alive(sim: Any) -> set[str]:
    return {t["id"] for t in sim.admin.state()["templates"] if not t.get("deleted")}


@pytest.fixture
def fleet(hook: SkytapHook, sim: Any) -> dict[str, Any]:
    """Four US-West backups (made out of date order), two in EMEA, and lookalikes."""
    sim.admin.config(copy_seconds=0.05, region_copy_seconds=0.05, delete_seconds=0.05)
    us = {day: backup(hook, day) for day in (3, 1, 4, 2)}  # a backfill made day 1 and 2 late
    emea = {day: backup(hook, day, region="EMEA") for day in (1, 2)}
    other_dag = backup(hook, 0, tag=source_tag("other_dag", "environment", ENV))
    other_env = backup(hook, 0, tag=source_tag(DAG_ID, "environment", "1002"))
    untagged = str(hook.save_as_template(ENV, name=f"{DAG_ID}-environment-{ENV}-manual")["id"])
    hook.wait_until_ready("template", untagged, timeout=30, poll_interval=0.05)
    sim.admin.clear_requests()
    return {"us": us, "emea": emea, "spared": {other_dag, other_env, untagged, "5001"}}


def test_keeps_the_newest_per_region_and_deletes_exactly_the_rest(
    skytap_conn: str, sim: Any, fleet: dict[str, Any]
) -> None:
    before = alive(sim)
    report = run_task(prune(skytap_conn, keep=2)).result
    expected_gone = {fleet["us"][1], fleet["us"][2]}
    assert {d["id"] for d in report["deleted"]} == expected_gone
    assert alive(sim) == before - expected_gone
    kept = {fleet["us"][3], fleet["us"][4], *fleet["emea"].values()}  # per region: EMEA has 2
    assert {k["id"] for k in report["kept"]} == kept
    assert fleet["spared"] <= alive(sim)
    deletes = [r["path"] for r in api_requests(sim) if r["method"] == "DELETE"]
    assert sorted(deletes) == sorted(f"/templates/{i}" for i in expected_gone)
    assert report["busy"] == [] and report["dry_run"] is False


def test_confirmed_only_counts_what_the_thaw_vouched_for_and_drops_the_rest_once_superseded(
    skytap_conn: str, hook: SkytapHook, sim: Any, fleet: dict[str, Any]
) -> None:
    us, emea = fleet["us"], fleet["emea"]
    verdicts = {
        us[4]: "inconsistent",  # the newest: a guardian thawed before its copy was complete
        us[3]: "application-consistent",
        us[2]: "crash-consistent",  # us[1]: no tag, its run failed before the thaw task
        emea[1]: "application-consistent",  # emea[2]: no tag, its region copy failed
    }
    for rid, verdict in verdicts.items():
        hook.add_tags("template", rid, [consistency_tag(verdict)])
    before = alive(sim)
    report = run_task(prune(skytap_conn, keep=1, confirmed_only=True)).result
    # US-West: the newest confirmed (day 3) counts; the torn day 4 is newer than it, so it stays
    # until a good backup supersedes it. EMEA: day 2 is unconfirmed and newer than day 1.
    assert {(k["id"], k["consistency"]) for k in report["kept"]} == {
        (us[4], "inconsistent"),
        (us[3], "application-consistent"),
        (emea[2], None),
        (emea[1], "application-consistent"),
    }
    assert {d["id"] for d in report["deleted"]} == {us[1], us[2]}
    assert alive(sim) == before - {us[1], us[2]}
    # Without it, the torn day 4 would have been the one backup kept in US-West.
    dry = run_task(prune(skytap_conn, keep=1, dry_run=True)).result
    assert [k["id"] for k in dry["kept"] if k["region"] == "US-West"] == [us[4]]


def test_dry_run_lists_the_same_set_and_deletes_nothing(
    skytap_conn: str, sim: Any, fleet: dict[str, Any]
) -> None:
    before = alive(sim)
    report = run_task(prune(skytap_conn, keep=1, dry_run="True")).result
    assert {d["id"] for d in report["deleted"]} == {
        fleet["us"][1],
        fleet["us"][2],
        fleet["us"][3],
        fleet["emea"][1],
    }
    assert report["dry_run"] is True
    assert alive(sim) == before
    assert not [r for r in api_requests(sim) if r["method"] != "GET"]


def test_a_busy_backup_is_never_deleted(
    skytap_conn: str, hook: SkytapHook, sim: Any, fleet: dict[str, Any]
) -> None:
    oldest = fleet["us"][1]
    sim.admin.config(region_copy_seconds=30)
    hook.copy_template(oldest, name="reading the oldest", target_region="APAC-2")
    report = run_task(prune(skytap_conn, keep=2, regions=["US-West"])).result
    assert [b["id"] for b in report["busy"]] == [oldest]
    assert {d["id"] for d in report["deleted"]} == {fleet["us"][2]}
    assert oldest in alive(sim)


def test_region_filter_and_kinds(skytap_conn: str, sim: Any, fleet: dict[str, Any]) -> None:
    report = run_task(prune(skytap_conn, keep=1, regions=["EMEA"], kinds=["template"])).result
    assert {d["id"] for d in report["deleted"]} == {fleet["emea"][1]}
    assert fleet["us"][1] in alive(sim)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep": 0}, "keep must be a positive whole number, got 0"),
        ({"keep": "two"}, "keep must be a positive whole number, got 'two'"),
        ({"template_id": "5001"}, "give exactly one of environment_id and template_id"),
        ({"kinds": "template"}, "kinds must be a list such as"),
        ({"regions": ["EU West"]}, "target_region must be a Skytap region name"),
        ({"dry_run": "maybe"}, "dry_run must be true or false, got 'maybe'"),
        ({"confirmed_only": "often"}, "confirmed_only must be true or false, got 'often'"),
    ],
)
def test_bad_input_is_refused_before_any_call(
    skytap_conn: str, sim: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_task(prune(skytap_conn, **kwargs))
    assert api_requests(sim) == []


def dag_backup(hook: SkytapHook, dag_id: str, day: int, tag: str) -> str:
    """A template as ``dag_id``'s clone leaves it: its default name, the given source tag."""
    when = NIGHT + timedelta(days=day)
    name = backup_name(dag_id, "environment", ENV, when.strftime("%Y%m%dT%H%M%SZ"))
    rid = str(hook.save_as_template(ENV, name=name)["id"])
    hook.wait_until_ready("template", rid, timeout=30, poll_interval=0.05)
    hook.add_tags("template", rid, [tag, time_tag(when)])
    return rid


def test_dags_whose_ids_differ_only_in_case_do_not_prune_each_others_backups(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    sim.admin.config(copy_seconds=0.05, delete_seconds=0.05)
    upper = [
        dag_backup(hook, "ERP_Backup", d, source_tag("ERP_Backup", "environment", ENV))
        for d in (1, 2)
    ]
    lower = [
        dag_backup(hook, "erp_backup", d, source_tag("erp_backup", "environment", ENV))
        for d in (3, 4)
    ]  # newer than ERP_Backup's: a shared tag would evict both of those
    report = run_task(prune(skytap_conn, keep=1, backup_dag_id="ERP_Backup")).result
    assert [d["id"] for d in report["deleted"]] == [upper[0]]
    assert [k["id"] for k in report["kept"]] == [upper[1]]
    assert set(lower) <= alive(sim)


def test_a_backup_made_under_the_old_tag_is_still_pruned_by_its_own_dag(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    sim.admin.config(copy_seconds=0.05, delete_seconds=0.05)
    old = dag_backup(hook, "ERP_Backup", 1, legacy_source_tag("ERP_Backup", "environment", ENV))
    new = dag_backup(hook, "ERP_Backup", 2, source_tag("ERP_Backup", "environment", ENV))
    other = dag_backup(hook, "erp_backup", 0, legacy_source_tag("erp_backup", "environment", ENV))
    report = run_task(prune(skytap_conn, keep=1, backup_dag_id="ERP_Backup")).result
    assert [d["id"] for d in report["deleted"]] == [old]
    assert [k["id"] for k in report["kept"]] == [new]
    assert other in alive(sim)  # the old tag is shared; the name says whose it is


def test_a_backup_with_our_tags_made_by_another_user_is_never_counted_or_deleted(
    hook: SkytapHook, skytap_conn: str, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags can be put on by anyone who may tag: a template carrying this DAG's source and
    time tags (even a newer recovery point, even a verdict) but made by another Skytap user
    is not this DAG's backup. It neither pushes ours out of ``keep`` nor is deleted."""
    sim.admin.config(copy_seconds=0.05, region_copy_seconds=0.05, delete_seconds=0.05)
    ours = [backup(hook, day) for day in (1, 2)]
    other = default_seed()["users"][1]
    set_connection(monkeypatch, "skytap_other", sim.url, other["username"], other["token"])
    with SkytapHook("skytap_other") as theirs:
        forged = backup(theirs, 9)
        theirs.add_tags("template", forged, [consistency_tag("application-consistent")])
    result = run_task(prune(skytap_conn, keep=1, confirmed_only=False)).result
    assert [b["id"] for b in result["kept"]] == [ours[1]]
    assert [b["id"] for b in result["deleted"]] == [ours[0]]
    assert forged in alive(sim)


def test_the_newest_backup_a_drill_verified_is_kept_beyond_keep(
    skytap_conn: str, hook: SkytapHook, sim: Any, fleet: dict[str, Any]
) -> None:
    from airflow_provider_skytap.verification import verified_tag

    oldest = fleet["us"][1]
    hook.add_tags("template", oldest, [verified_tag(NIGHT + timedelta(days=8), 42.0)])
    report = run_task(prune(skytap_conn, keep=2, regions=["US-West"])).result
    assert {d["id"] for d in report["deleted"]} == {fleet["us"][2]}
    assert oldest in {k["id"] for k in report["kept"]}
    assert oldest in alive(sim)
