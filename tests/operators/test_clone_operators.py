"""LiveCloneOperator and CopyTemplateToRegionOperator against the simulator over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_skytap.backups import consistency, consistency_tag, source_tag, time_tag
from airflow_provider_skytap.exceptions import InvalidValueError, NotOursError, is_final
from airflow_provider_skytap.hooks.skytap import (
    SkytapError,
    SkytapHook,
    SkytapResourceFailedError,
    SkytapWaitTimeoutError,
)
from airflow_provider_skytap.operators.clone import (
    CopyTemplateToRegionOperator,
    LiveCloneOperator,
)
from airflow_provider_skytap.triggers.clone import CloneCompleteTrigger
from tests.conftest import set_connection
from tests.helpers import api_requests, default_seed, live_named
from tests.tasks import LOGICAL_DATE, context, run_task

ENV = "1001"  # erp-prod, US-West, running
DAG_ID = "erp_backup"
NAME = f"{DAG_ID}-environment-{ENV}-20261124T000000Z"
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.3, "timeout": 60}


def clone(conn: str, **kwargs: Any) -> LiveCloneOperator:
    with DAG(DAG_ID, schedule=None):
        return LiveCloneOperator(
            task_id="clone", environment_id=ENV, skytap_conn_id=conn, **FAST, **kwargs
        )


def region_copy(conn: str, template_id: str, region: str, **kwargs: Any) -> Any:
    with DAG(DAG_ID, schedule=None):
        return CopyTemplateToRegionOperator(
            task_id=f"dr_{region}",
            template_id=template_id,
            target_region=region,
            skytap_conn_id=conn,
            **FAST,
            **kwargs,
        )


def state_of(sim: Any, kind: str, rid: str) -> dict[str, Any]:
    return next(r for r in sim.admin.state()[f"{kind}s"] if r["id"] == rid)


def tags_of(hook: SkytapHook, kind: str, rid: str) -> set[str]:
    return {t["value"] for t in hook.get_resource(kind, rid).get("tags", [])}  # type: ignore[arg-type]


@pytest.mark.parametrize("deferrable", [False, True], ids=["waits", "defers"])
def test_live_clone_saves_a_tagged_template_and_returns_it(
    skytap_conn: str, hook: SkytapHook, sim: Any, deferrable: bool
) -> None:
    op = clone(skytap_conn, deferrable=deferrable, tags=["nightly"], description="erp nightly")
    ctx = context()
    outcome = run_task(op, ctx)
    result = outcome.result
    assert result == {
        "id": result["id"],
        "kind": "template",
        "name": NAME,
        "region": "US-West",
        "source_kind": "environment",
        "source_id": ENV,
        "created": True,
        "url": f"{sim.url}/templates/{result['id']}",
    }
    made = hook.get_template(result["id"])
    assert not made["busy"] and made["description"] == "erp nightly"
    assert tags_of(hook, "template", result["id"]) == {
        source_tag(DAG_ID, "environment", ENV),
        time_tag(LOGICAL_DATE),
        "nightly",
    }
    assert ctx["ti"].xcoms["skytap_resource"]["url"] == result["url"]  # the extra link
    assert len(outcome.deferrals) == (1 if deferrable else 0)
    if deferrable:
        trigger = outcome.deferrals[0].trigger
        assert isinstance(trigger, CloneCompleteTrigger)
        assert (trigger.kind, trigger.resource_id) == ("template", result["id"])
        assert outcome.deferrals[0].method_name == "execute_complete"
    assert len(live_named(sim, NAME)) == 1


def test_live_clone_to_an_environment_copies_only_the_chosen_vms(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    op = clone(skytap_conn, target="environment", vm_ids=["2003"], description="db only")
    result = run_task(op).result
    assert result["kind"] == "environment" and result["created"]
    env = hook.get_environment(result["id"])
    assert [vm["name"] for vm in env["vms"]] == ["db-1"]
    assert env["runstate"] != "busy" and env["description"] == "db only"
    assert result["url"].endswith(f"/configurations/{result['id']}")


def test_a_second_try_and_a_rerun_of_the_date_reuse_the_copy(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    first = run_task(clone(skytap_conn)).result
    again = run_task(clone(skytap_conn)).result
    assert again == first | {"created": False}
    other_day = run_task(clone(skytap_conn), context(LOGICAL_DATE.replace(day=23))).result
    assert other_day["created"] and other_day["id"] != first["id"]
    posts = [r for r in api_requests(sim) if r["method"] == "POST"]
    assert len(posts) == 2
    assert len(live_named(sim, NAME)) == 1


def test_a_retry_after_a_created_but_untagged_copy_refuses_it_as_unprovable(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    """The first try makes the template, then dies before it can tag it: nothing proves the
    untagged copy is this DAG's (anyone could have made one with the predictable name), so
    the retry fails at once naming it, and neither adopts nor tags it."""
    sim.admin.faults(
        rules=[{"method": "PUT", "path": "/v2/templates/*", "action": "error", "status": 400}]
    )
    with pytest.raises(SkytapError, match="HTTP 400"):
        run_task(clone(skytap_conn))
    (orphan,) = live_named(sim, NAME)
    assert orphan["tags"] == []
    sim.admin.clear_faults()
    with pytest.raises(NotOursError, match=rf"template {orphan['id']} .*does not carry") as err:
        run_task(clone(skytap_conn))
    assert is_final(err.value), "not ours is final: a retry would meet the same copy"
    assert tags_of(hook, "template", orphan["id"]) == set()
    assert len(live_named(sim, NAME)) == 1


def test_a_copy_made_by_another_dag_under_the_same_name_is_not_taken(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    squatter = hook.save_as_template(ENV, name=NAME)
    hook.add_tags("template", squatter["id"], [source_tag("other_dag", "environment", ENV)])
    with pytest.raises(NotOursError, match=r"does not carry this DAG's tag"):
        run_task(clone(skytap_conn))
    assert [t["id"] for t in live_named(sim, NAME)] == [squatter["id"]]


def test_a_copy_with_our_tags_made_by_another_skytap_user_is_not_taken(
    skytap_conn: str, hook: SkytapHook, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags can be forged by anyone who may tag: the owner Skytap shows must be the
    connection's user too."""
    other = default_seed()["users"][1]
    set_connection(monkeypatch, "skytap_other", sim.url, other["username"], other["token"])
    with SkytapHook("skytap_other") as theirs:
        planted = theirs.save_as_template(ENV, name=NAME)
        theirs.add_tags(
            "template",
            planted["id"],
            [source_tag(DAG_ID, "environment", ENV), "airflow-skytap-at/20261124t000000z"],
        )
    with pytest.raises(NotOursError, match=r"made by 'other', not by the connection's user"):
        run_task(clone(skytap_conn))
    assert [t["id"] for t in live_named(sim, NAME)] == [planted["id"]]


def test_a_manual_run_without_logical_date_names_the_copy_by_run_id(
    skytap_conn: str, sim: Any
) -> None:
    ctx = context(logical_date=None, run_id="manual__2026-11-25T09:30:00+00:00")
    result = run_task(clone(skytap_conn), ctx).result
    assert result["name"] == f"{DAG_ID}-environment-{ENV}-manual__2026-11-25T09-30-00+00-00"


@pytest.mark.parametrize("deferrable", [False, True], ids=["waits", "defers"])
def test_a_failed_copy_fails_the_task_with_skytaps_message(
    skytap_conn: str, sim: Any, deferrable: bool
) -> None:
    sim.admin.faults(fail_next_copy="Storage array offline")
    op = clone(skytap_conn, name="doomed", deferrable=deferrable)
    with pytest.raises(SkytapResourceFailedError, match="Storage array offline") as caught:
        run_task(op)
    assert "'doomed'" in str(caught.value)


@pytest.mark.parametrize("deferrable", [False, True], ids=["waits", "defers"])
def test_a_copy_still_busy_at_the_timeout_fails_naming_it(
    skytap_conn: str, sim: Any, deferrable: bool
) -> None:
    sim.admin.config(copy_seconds=30)
    op = clone(skytap_conn, name="slow", deferrable=deferrable)
    op.timeout = 1
    with pytest.raises(SkytapWaitTimeoutError, match=r"template \d+ \('slow'\) still busy"):
        run_task(op)


def test_without_waiting_the_task_returns_the_busy_copy(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    sim.admin.config(copy_seconds=5)
    result = run_task(clone(skytap_conn, wait_for_completion=False)).result
    assert result["created"] and hook.get_template(result["id"])["busy"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("environment_id", "erp", "environment_id must be a Skytap id (digits only), got 'erp'"),
        ("target", "snapshot", "target must be 'template' or 'environment', got 'snapshot'"),
        ("timeout", "soon", "timeout must be a positive number of seconds, got 'soon'"),
        ("poll_interval", 0, "poll_interval must be a positive number of seconds, got 0"),
        ("vm_ids", ["2001"], "vm_ids works with target='environment' only"),
        ("tags", "nightly", "tags must be a list of strings, got 'nightly'"),
        ("tags", ["airflow-skytap/x"], "uses the prefix this provider keeps"),
        (  # Skytap strips it on store: the copy would carry the verdict from birth
            "tags",
            [" airflow-skytap-consistency/application-consistent"],
            "tags item must not start or end with whitespace, "
            "got ' airflow-skytap-consistency/application-consistent'",
        ),
        ("name", "", "name must be a non-empty string, got ''"),
    ],
)
def test_bad_input_names_the_field_and_value_before_any_call(
    skytap_conn: str, sim: Any, field: str, value: Any, message: str
) -> None:
    op = clone(skytap_conn)
    setattr(op, field, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_task(op)
    assert api_requests(sim) == []


@pytest.mark.parametrize("deferrable", [False, True], ids=["waits", "defers"])
def test_region_copies_mapped_over_three_regions_make_one_copy_each(
    skytap_conn: str, hook: SkytapHook, sim: Any, deferrable: bool
) -> None:
    """Three regions at once: the template is locked while each copy reads it, so the
    operators wait their turn instead of failing or copying twice."""
    template = run_task(clone(skytap_conn)).result
    regions = ["EMEA", "APAC-2", "US-East-2"]
    first, *others = (
        region_copy(skytap_conn, template["id"], r, deferrable=deferrable) for r in regions
    )
    first.wait_for_completion = False  # its copy now reads (locks) the template
    started = run_task(first).result
    assert started["created"] and hook.get_template(template["id"])["busy"]
    outcomes = [run_task(op) for op in others]
    results = [run_task(first).result, *(o.result for o in outcomes)]
    assert [r["region"] for r in results] == regions
    assert [r["created"] for r in results] == [False, True, True]
    assert all(r["name"] == template["name"] for r in results)  # same name in each region
    if deferrable:  # the second one deferred on the busy template before copying
        assert [d.method_name for d in outcomes[0].deferrals][:1] == ["resume_after_source"]
    for r in results:
        assert not hook.get_template(r["id"])["busy"]
        assert tags_of(hook, "template", r["id"]) >= {
            source_tag(DAG_ID, "environment", ENV),
            time_tag(LOGICAL_DATE),
        }
    copies = [t for t in sim.admin.state()["templates"] if t["name"] == template["name"]]
    assert sorted(t["region"] for t in copies) == sorted(["US-West", *regions])
    posts = [r for r in api_requests(sim) if r["method"] == "POST"]
    assert len(posts) == 4 and all(r["status"] == 200 for r in posts)


@pytest.mark.parametrize("deferrable", [False, True], ids=["waits", "defers"])
def test_a_region_copy_carries_its_sources_consistency_only_once_complete(
    skytap_conn: str, hook: SkytapHook, sim: Any, deferrable: bool
) -> None:
    template = run_task(clone(skytap_conn)).result
    hook.add_tags("template", template["id"], [consistency_tag("application-consistent")])
    emea = run_task(region_copy(skytap_conn, template["id"], "EMEA", deferrable=deferrable))
    assert consistency(hook.get_template(emea.result["id"])) == "application-consistent"
    # A region copy that fails half way is not passed the verdict: it is no backup.
    sim.admin.faults(fail_next_copy="Region storage error")
    with pytest.raises(SkytapResourceFailedError, match="Region storage error"):
        run_task(region_copy(skytap_conn, template["id"], "APAC-2", deferrable=deferrable))
    [failed] = [
        t
        for t in sim.admin.state()["templates"]
        if t["name"] == template["name"] and t["region"] == "APAC-2"
    ]
    assert consistency(failed) is None
    # A source the thaw never vouched for passes nothing on.
    plain = run_task(region_copy(skytap_conn, "5001", "EMEA", deferrable=deferrable)).result
    assert consistency(hook.get_template(plain["id"])) is None


def test_region_copy_to_its_own_region_is_refused(skytap_conn: str, sim: Any) -> None:
    op = region_copy(skytap_conn, "5001", "US-West")
    with pytest.raises(ValueError, match="target_region 'US-West' is the region template 5001"):
        run_task(op)


def test_region_copy_of_a_template_this_dag_did_not_make_gets_its_own_name_and_tag(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    result = run_task(region_copy(skytap_conn, "5001", "EMEA")).result
    assert result["name"] == f"{DAG_ID}-template-5001-20261124T000000Z"
    assert source_tag(DAG_ID, "template", "5001") in tags_of(hook, "template", result["id"])


@pytest.mark.parametrize("seed", [11, 12])
def test_under_30_percent_faults_every_run_ends_with_one_copy_per_name(
    skytap_conn: str, hook: SkytapHook, sim: Any, seed: int
) -> None:
    """Issue 3's bar: clone and three DR copies, deferrable, through 423/429/503 storms."""
    sim.admin.faults(
        seed=seed,
        error_rates={"423": 0.1, "429": 0.1, "503": 0.1},
        ambiguous_fraction=0.5,
        retry_after_s=0,
    )
    template = run_task(clone(skytap_conn, deferrable=True)).result
    regions = ["EMEA", "APAC-2", "US-East-2"]
    for region in regions:
        run_task(region_copy(skytap_conn, template["id"], region, deferrable=True))
    again = run_task(clone(skytap_conn, deferrable=True)).result  # a re-run of the date
    assert again["id"] == template["id"]
    copies = [t for t in sim.admin.state()["templates"] if t["name"] == NAME]
    assert sorted(t["region"] for t in copies) == sorted(["US-West", *regions])
    log = api_requests(sim)
    injected = [r for r in log if r.get("fault")]
    print(f"seed {seed}: {len(log)} requests, {len(injected)} failed by injection")
    assert len(injected) >= 0.15 * len(log)


def test_on_kill_says_the_copy_goes_on_and_the_next_try_reuses_it(
    skytap_conn: str, sim: Any, capsys: Any
) -> None:
    sim.admin.config(copy_seconds=5)
    op = clone(skytap_conn, wait_for_completion=False)
    made = run_task(op).result
    op.on_kill()
    out = capsys.readouterr().out
    assert f"template {made['id']} goes on copying in Skytap" in out
    assert f"next try reuses it by its name {NAME!r}" in out
    assert run_task(clone(skytap_conn, wait_for_completion=False)).result["id"] == made["id"]


def test_when_skytap_ignores_the_name_the_copy_is_found_by_its_tags_and_renamed(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    sim.admin.config(copy_names=False, copy_seconds=2)
    first = run_task(clone(skytap_conn, wait_for_completion=False)).result
    assert hook.get_template(first["id"])["name"] != NAME  # Skytap chose its own name
    retry = run_task(clone(skytap_conn)).result  # found by tags, waited for, renamed
    assert retry["id"] == first["id"] and retry["created"] is False
    assert hook.get_template(first["id"])["name"] == NAME
    assert [t["id"] for t in sim.admin.state()["templates"] if t["id"] != "5001"] == [first["id"]]


def test_a_deferrable_region_copy_refused_as_busy_waits_on_the_triggerer_not_in_the_worker(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    """Another region's copy locked the template between this task's look and its POST:
    the task defers until the template is free instead of sending the copy again from a
    worker slot until the retry deadline (10 minutes by default)."""
    template = run_task(clone(skytap_conn)).result
    sim.admin.faults(rules=[{"method": "POST", "path": "/templates", "status": 423, "count": 1}])
    outcome = run_task(region_copy(skytap_conn, template["id"], "EMEA", deferrable=True))
    assert outcome.result["created"] is True
    assert [d.method_name for d in outcome.deferrals] == ["resume_after_source", "execute_complete"]
    posts = [r["status"] for r in api_requests(sim) if r["method"] == "POST"]
    assert posts[-2:] == [423, 200]  # refused once, sent again only after the wait
    copies = [t for t in sim.admin.state()["templates"] if t["region"] == "EMEA"]
    assert len(copies) == 1


def test_live_clone_and_its_dr_copy_keep_every_vm_running(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    """The defaults ask Skytap for a live clone and send the region override: the source runs
    on (the fixture's teardown checks no VM was suspended) and the DR copy is accepted."""
    made = run_task(clone(skytap_conn), context()).result
    dr = run_task(region_copy(skytap_conn, made["id"], "SG-Singapore-M-1"), context()).result
    assert hook.get_template(dr["id"])["region"] == "SG-Singapore-M-1"
    env = hook.get_environment(ENV)
    assert env["runstate"] == "running" and {vm["runstate"] for vm in env["vms"]} == {"running"}


@pytest.mark.suspends_vms(3)
def test_a_non_live_clone_must_be_asked_for_and_warns(
    skytap_conn: str, hook: SkytapHook, sim: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="live must be True or False, got 'no'"):
        run_task(clone(skytap_conn, live="no"), context())
    run_task(clone(skytap_conn, live=False), context())
    assert "Skytap will SUSPEND the environment's running VMs" in capsys.readouterr().out
    assert {vm["runstate"] for vm in hook.get_environment(ENV)["vms"]} == {"suspended"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"environment_id": "10 01"}, "environment_id"),
        ({"target": "snapshot"}, "target"),
        ({"vm_ids": ["1"]}, "vm_ids"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_a_bad_value_is_final_and_named_before_any_call(
    skytap_conn: str, sim: Any, kwargs: dict[str, Any], field: str
) -> None:
    sim.admin.clear_requests()
    with DAG(DAG_ID, schedule=None):
        settings = {"environment_id": ENV, **FAST, **kwargs}
        op = LiveCloneOperator(task_id="clone", skytap_conn_id=skytap_conn, **settings)
    with pytest.raises(InvalidValueError, match=field) as err:
        run_task(op)
    assert is_final(err.value), "Airflow would retry it: the same value fails the same way"
    assert api_requests(sim) == []
