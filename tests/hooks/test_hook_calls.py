"""Every SkytapHook call against the simulator over real HTTP."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import (
    SkytapAPIError,
    SkytapNotFoundError,
    SkytapResourceFailedError,
    SkytapWaitTimeoutError,
)
from airflow_provider_skytap.hooks.skytap import SkytapHook
from tests.conftest import FAST, set_connection
from tests.helpers import api_requests, default_seed, live_named

ENV = "1001"  # erp-prod, 3 running VMs, US-West (the simulator's default seed)
TEMPLATE = "5001"  # base-linux, US-West


def test_get_environment_has_vms_interfaces_and_ssh_services(hook: SkytapHook) -> None:
    env = hook.get_environment(ENV)
    assert env["id"] == ENV and env["name"] == "erp-prod" and env["runstate"] == "running"
    assert env["region"] == "US-West"
    assert [vm["name"] for vm in env["vms"]] == ["app-1", "app-2", "db-1"]
    for vm in env["vms"]:
        assert vm["runstate"] == "running"
        services = [s for i in vm["interfaces"] for s in i.get("services", [])]
        assert any(s["internal_port"] == 22 and s["external_port"] for s in services)


def test_get_template(hook: SkytapHook) -> None:
    template = hook.get_template(TEMPLATE)
    assert template["name"] == "base-linux" and not template["busy"]


def test_unknown_resource_is_a_not_found_error_naming_it(hook: SkytapHook) -> None:
    with pytest.raises(SkytapNotFoundError) as caught:
        hook.get_environment("999999")
    text = str(caught.value)
    assert text.startswith("get environment 999999: HTTP 404")
    assert caught.value.request_id and f"request id {caught.value.request_id}" in text


def test_bad_input_fails_before_any_request(hook: SkytapHook, sim: Any) -> None:
    sim.admin.clear_requests()
    with pytest.raises(ValueError, match=r"environment_id must be a Skytap id .*'1001; rm'"):
        hook.copy_environment("1001; rm")
    with pytest.raises(ValueError, match="target_region must be"):
        hook.copy_template(TEMPLATE, target_region="EMEA/../x")
    assert api_requests(sim) == []


def test_copy_environment_is_busy_then_ready_with_the_chosen_vms(
    hook: SkytapHook, sim: Any
) -> None:
    copy = hook.copy_environment(ENV, name="erp copy 1", vm_ids=["2001", "2003"])
    assert copy["name"] == "erp copy 1" and copy["runstate"] == "busy"
    assert hook.get_environment(ENV)["runstate"] in ("busy", "running")  # source read, not stopped
    ready = hook.wait_until_ready("environment", copy["id"], timeout=30, poll_interval=0.1)
    assert ready["runstate"] != "busy"
    assert sorted(vm["name"] for vm in ready["vms"]) == ["app-1", "db-1"]
    assert hook.get_environment(ENV)["runstate"] == "running"  # the source runs on
    assert len(live_named(sim, "erp copy 1")) == 1


def test_save_as_template_then_copy_it_to_another_region(hook: SkytapHook) -> None:
    saved = hook.save_as_template(ENV, name="erp nightly", description="before upgrade")
    assert saved["busy"] is True
    saved = hook.wait_until_ready("template", saved["id"], timeout=30, poll_interval=0.1)
    assert saved["description"] == "before upgrade" and saved["region"] == "US-West"

    dr = hook.copy_template(saved["id"], name="erp nightly DR", target_region="EMEA")
    dr = hook.wait_until_ready("template", dr["id"], timeout=30, poll_interval=0.1)
    assert (dr["region"], dr["name"]) == ("EMEA", "erp nightly DR")


def test_a_bad_region_fails_at_once_with_skytaps_message(
    sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A region the package does not know is refused before any request...
    sim.admin.clear_requests()
    with SkytapHook("skytap_it_regions", retry_policy=FAST) as hook:
        set_connection(monkeypatch, "skytap_it_regions", sim.url, sim.username, sim.token)
        with pytest.raises(ValueError, match="extra_regions"):
            hook.copy_template(TEMPLATE, name="x", target_region="Mars-1")
    assert api_requests(sim) == []
    # ...and one the user added but Skytap does not have fails at once with Skytap's message.
    set_connection(
        monkeypatch, "skytap_it_mars", sim.url, sim.username, sim.token, extra_regions=["Mars-1"]
    )
    with (
        SkytapHook("skytap_it_mars", retry_policy=FAST) as hook,
        pytest.raises(SkytapAPIError) as caught,
    ):
        hook.copy_template(TEMPLATE, name="x", target_region="Mars-1")
    assert caught.value.status == 422
    assert "Mars-1" in str(caught.value) and str(caught.value).startswith(
        f"copy template {TEMPLATE} to Mars-1: HTTP 422"
    )
    assert len([r for r in api_requests(sim) if r["method"] == "POST"]) == 1  # not retried


def test_list_follows_pagination_and_filters(hook: SkytapHook, sim: Any) -> None:
    sim.admin.reset(seed=seed_with_templates(sim, 250))
    sim.admin.clear_requests()
    everything = hook.list_resources("template")
    assert len(everything) == 251  # base-linux and 250 more
    assert len({t["id"] for t in everything}) == 251
    pages = [r for r in api_requests(sim) if r["method"] == "GET"]
    assert len(pages) == 3  # 100 + 100 + 51

    assert [t["name"] for t in hook.list_resources("template", name="bulk-0042")] == ["bulk-0042"]
    assert len(hook.list_resources("template", name_prefix="bulk-00")) == 100
    assert {t["region"] for t in hook.list_resources("template", region="EMEA")} == {"EMEA"}
    assert hook.find("template", "no such name") is None


def seed_with_templates(sim: Any, count: int) -> dict[str, Any]:
    seed = default_seed()
    regions = ["US-West", "EMEA"]
    for n in range(count):
        seed["templates"].append(
            {"id": str(60000 + n), "name": f"bulk-{n:04d}", "region": regions[n % 2], "vms": []}
        )
    return seed


def test_rename_describe_and_tags(hook: SkytapHook) -> None:
    renamed = hook.update("environment", "1002", name="crm renamed", description="for tests")
    assert (renamed["name"], renamed["description"]) == ("crm renamed", "for tests")

    tags = hook.add_tags("environment", "1002", ["backup", "airflow-provider-skytap"])
    assert {t["value"] for t in tags} == {"backup", "airflow-provider-skytap"}
    hook.add_tags("environment", "1002", ["backup"])  # already there: no duplicate
    assert len(hook.list_tags("environment", "1002")) == 2
    assert [e["id"] for e in hook.list_resources("environment", tags=["backup"])] == ["1002"]

    backup = next(t for t in tags if t["value"] == "backup")
    hook.remove_tag("environment", "1002", backup["id"])
    assert [t["value"] for t in hook.list_tags("environment", "1002")] == [
        "airflow-provider-skytap"
    ]
    assert hook.list_resources("environment", tags=["backup"]) == []


def test_tags_on_templates(hook: SkytapHook) -> None:
    hook.add_tags("template", TEMPLATE, ["golden"])
    assert [t["id"] for t in hook.list_resources("template", tags=["golden"])] == [TEMPLATE]


def test_runstate_change_waits_until_settled(hook: SkytapHook) -> None:
    env = hook.set_runstate("1002", "suspended", timeout=30)
    assert env["runstate"] == "suspended"
    assert hook.set_runstate("1002", "running", timeout=30)["runstate"] == "running"
    with pytest.raises(ValueError, match=r"runstate must be one of .*got 'paused'"):
        hook.set_runstate("1002", "paused")


def test_delete_waits_until_gone_and_is_idempotent(hook: SkytapHook) -> None:
    copy = hook.copy_environment(ENV, name="to delete")
    hook.wait_until_ready("environment", copy["id"], timeout=30, poll_interval=0.1)
    assert hook.delete("environment", copy["id"], timeout=30) is True
    with pytest.raises(SkytapNotFoundError):
        hook.get_environment(copy["id"])
    assert hook.delete("environment", copy["id"]) is False


def test_wait_fails_fast_when_the_copy_errors(hook: SkytapHook, sim: Any) -> None:
    sim.admin.faults(fail_copies=[{"name_prefix": "doomed", "message": "Disk copy failed"}])
    copy = hook.copy_environment(ENV, name="doomed copy")
    with pytest.raises(SkytapResourceFailedError, match=r"'doomed copy'.*Disk copy failed"):
        hook.wait_until_ready("environment", copy["id"], timeout=30, poll_interval=0.1)


def test_wait_fails_fast_when_the_copy_disappears(hook: SkytapHook, sim: Any) -> None:
    sim.admin.config(copy_seconds=30)
    copy = hook.save_as_template(ENV, name="vanishing")
    # Skytap refuses to delete a busy template (423), so it vanishes the way an account
    # reset would make it: the simulator's state is wiped while the hook waits.
    wipe = threading.Timer(0.5, sim.admin.reset)
    wipe.start()
    try:
        gone = rf"wait for template {copy['id']}.*disappeared"
        with pytest.raises(SkytapNotFoundError, match=gone):
            hook.wait_until_ready("template", copy["id"], timeout=30, poll_interval=0.1)
    finally:
        wipe.join()


def test_wait_times_out_naming_the_resource(hook: SkytapHook, sim: Any) -> None:
    sim.admin.config(copy_seconds=60)
    copy = hook.save_as_template(ENV, name="slow")
    with pytest.raises(SkytapWaitTimeoutError, match=r"template .*'slow'.* still busy after"):
        hook.wait_until_ready("template", copy["id"], timeout=0.5, poll_interval=0.1)


def test_wait_logs_progress_during_long_waits(
    hook: SkytapHook, sim: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.admin.config(copy_seconds=1.5)
    copy = hook.save_as_template(ENV, name="progress")
    capsys.readouterr()
    hook.wait_until_ready("template", copy["id"], timeout=30, poll_interval=0.1, log_every=0.5)
    lines = capsys.readouterr().out.splitlines()  # Airflow's task log goes to stdout here
    still = [line for line in lines if "still busy after" in line]
    assert still
    assert f"template {copy['id']} ('progress'): still busy after" in still[0]
    assert any(f"template {copy['id']} ('progress') is ready after" in line for line in lines)


def test_quotas(hook: SkytapHook) -> None:
    quotas = hook.get_quotas()
    assert quotas and {"quota_type", "limit", "usage"} <= set(quotas[0])


def test_test_connection_reports_success_and_failure(
    sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import set_connection

    set_connection(monkeypatch, "good", sim.url, sim.username, sim.token)
    ok, message = SkytapHook("good").test_connection()
    assert ok and message == f"Connected to {sim.url} as {sim.username}"

    set_connection(monkeypatch, "bad", sim.url, sim.username, "not-the-token")
    ok, message = SkytapHook("bad").test_connection()
    assert not ok and "HTTP 401" in message and "API security token" in message

    set_connection(monkeypatch, "down", "http://127.0.0.1:9", "u", "t", retry_deadline=1)
    ok, message = SkytapHook("down").test_connection()
    assert not ok and "could not connect" in message


def test_a_copy_skytap_did_not_name_as_asked_is_reported(
    hook: SkytapHook, sim: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.admin.config(copy_names=False)
    made = hook.save_as_template(ENV, name="erp 2026-11-24")
    assert made["name"] == "erp-prod - Copy"
    out = capsys.readouterr().out
    assert "Skytap named the copy 'erp-prod - Copy', not 'erp 2026-11-24' as asked" in out


def test_ssh_endpoints_of_the_seeded_environment_are_its_published_services(
    hook: SkytapHook,
) -> None:
    endpoints = hook.get_ssh_endpoints(ENV, ["app-1", "db-1"])
    assert [(e.vm_name, e.host, e.port, e.via) for e in endpoints] == [
        ("app-1", "127.0.0.1", 2201, "published_service"),
        ("db-1", "127.0.0.1", 2203, "published_service"),
    ]
