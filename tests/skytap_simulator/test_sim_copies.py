"""Copies: busy -> ready, names, region FIFO queues, source locks, live clone, failures."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Sim
from tests.skytap_simulator.helpers import (
    Api,
    env_ready,
    seed_with,
    state_item,
    template_ready,
    wait_until,
)


def test_environment_copy_is_busy_then_stopped(api: Api) -> None:
    started = time.monotonic()
    new = api.ok("POST", "/configurations", {"configuration_id": "1001", "live_copy": True})
    assert new["id"] != "1001" and new["id"].isdigit()
    assert new["name"] == "erp-prod - Copy" and new["region"] == "US-West"
    assert new["runstate"] == "busy" and all(vm["runstate"] == "busy" for vm in new["vms"])
    done = wait_until(lambda: env_ready(api, new["id"]))
    assert 0.4 <= time.monotonic() - started < 3
    assert done["runstate"] == "stopped" and done["error"] is None
    assert {vm["runstate"] for vm in done["vms"]} == {"stopped"}
    assert [vm["name"] for vm in done["vms"]] == ["app-1", "app-2", "db-1"]
    assert {vm["id"] for vm in done["vms"]}.isdisjoint({"2001", "2002", "2003"})
    assert done["vms"][0]["interfaces"][0]["network_id"] == done["networks"][0]["id"]


def test_copy_with_name_description_and_vm_subset(api: Api) -> None:
    body = {
        "configuration_id": 1001,
        "live_copy": True,
        "name": "erp copy",
        "description": "d",
        "vm_ids": ["2003"],
    }
    new = api.ok("POST", "/configurations", body)
    assert new["name"] == "erp copy" and new["description"] == "d"
    assert [vm["name"] for vm in new["vms"]] == ["db-1"] and new["vm_count"] == 1
    bad = api.post(
        "/configurations", {"configuration_id": "1002", "live_copy": True, "vm_ids": ["9"]}
    )
    assert bad.status_code == 422 and "9" in bad.json()["errors"][0]


@pytest.mark.leaves_environments(1)
def test_save_as_template_then_copy_it_and_deploy_it(api: Api) -> None:
    tpl = api.ok(
        "POST", "/templates", {"configuration_id": "1001", "live_copy": True, "name": "erp backup"}
    )
    assert tpl["busy"] is True and tpl["name"] == "erp backup" and tpl["vm_count"] == 3
    assert wait_until(lambda: template_ready(api, tpl["id"]))["error"] is None
    copy = api.ok("POST", "/templates", {"template_id": tpl["id"], "name": "erp backup 2"})
    assert copy["busy"] is True and copy["region"] == "US-West"
    wait_until(lambda: template_ready(api, copy["id"]))
    env = api.ok("POST", "/configurations", {"template_id": copy["id"], "name": "from tpl"})
    assert env["runstate"] == "busy"
    assert wait_until(lambda: env_ready(api, env["id"]))["runstate"] == "stopped"


def test_bad_copy_requests(api: Api) -> None:
    missing = api.post("/configurations", {"name": "x"})
    assert missing.status_code == 422 and missing.json()["errors"]
    assert api.post("/templates", {}).status_code == 422
    region = api.post("/templates", {"template_id": "5001", "target_region": "Mars-1"})
    assert region.status_code == 422 and "Mars-1" in region.json()["errors"][0]
    unknown = api.post("/configurations", {"configuration_id": "777", "live_copy": True})
    assert unknown.status_code == 404 and "777" in unknown.json()["error"]
    assert api.post("/templates", {"template_id": "777"}).status_code == 404
    not_json = api.request("POST", "/configurations", data="{nope", timeout=5)
    assert not_json.status_code == 422 and not_json.json()["errors"]


def test_region_copies_queue_fifo_per_target_region(sim: Sim, api: Api) -> None:
    extra = [{"name": f"src-{i}", "region": "US-West", "vms": [{"name": "v"}]} for i in range(3)]
    sim.admin.reset(seed_with(templates=extra))
    sim.admin.config(region_copy_seconds=0.6, copy_seconds=0.2)
    sources = [t["id"] for t in api.get("/v2/templates?query=name:src-*").json()]
    started = time.monotonic()
    made = [
        api.ok("POST", "/templates", {"template_id": s, "target_region": "EMEA"})["id"]
        for s in sources
    ]
    other = api.ok("POST", "/templates", {"template_id": "5001", "target_region": "APAC-2"})
    finished: dict[str, float] = {}

    def all_done() -> bool:
        for tid in [*made, other["id"]]:
            if tid not in finished and template_ready(api, tid):
                finished[tid] = time.monotonic() - started
        return len(finished) == 4

    wait_until(all_done, timeout=10, interval=0.02)
    times = [finished[t] for t in made]
    assert times == sorted(times)
    for got, want in zip(times, (0.6, 1.2, 1.8), strict=True):
        assert want - 0.05 <= got <= want + 0.5, times
    assert finished[other["id"]] < 1.1  # another region has its own queue
    jobs = sim.admin.state()["jobs"]
    emea = [j for j in jobs if j["region"] == "EMEA"]
    assert [j["region_copy"] for j in emea] == [True, True, True]
    assert emea[1]["start_at"] == emea[0]["ready_at"] and emea[2]["start_at"] == emea[1]["ready_at"]
    assert api.ok("GET", f"/v2/templates/{made[0]}")["region"] == "EMEA"


def test_environment_region_copy_and_same_region_target(sim: Sim, api: Api) -> None:
    sim.admin.config(region_copy_seconds=0.3)
    body = {"configuration_id": "1001", "target_region": "EMEA", "live_copy": True}
    new = api.ok("POST", "/configurations", body)
    assert new["region"] == "EMEA" and new["runstate"] == "busy"
    wait_until(lambda: env_ready(api, new["id"]))
    same = {"template_id": "5001", "target_region": "US-West", "live_copy": True}
    copy = api.ok("POST", "/templates", same)
    job = next(j for j in sim.admin.state()["jobs"] if j["target_id"] == copy["id"])
    assert job["region_copy"] is False


def test_source_is_locked_for_the_whole_copy(sim: Sim, api: Api) -> None:
    sim.admin.config(copy_seconds=1.0)
    tpl = api.ok(
        "POST", "/templates", {"configuration_id": "1001", "live_copy": True, "name": "lock"}
    )
    source = api.ok("GET", "/v2/configurations/1001")
    assert source["runstate"] == "busy"
    assert {vm["runstate"] for vm in source["vms"]} == {"running"}  # live clone
    attempts = [
        api.put("/configurations/1001", {"name": "renamed"}),
        api.delete("/configurations/1001"),
        api.post("/configurations", {"configuration_id": "1001", "live_copy": True}),
        api.post("/templates", {"configuration_id": "1001", "live_copy": True}),
        api.put(f"/templates/{tpl['id']}", {"name": "target is busy too"}),
        api.delete(f"/templates/{tpl['id']}"),
        api.post("/templates", {"template_id": tpl["id"]}),
    ]
    for resp in attempts:
        assert resp.status_code == 423, resp.text
        assert "busy" in resp.json()["error"]
    wait_until(lambda: template_ready(api, tpl["id"]))
    after = api.ok("GET", "/v2/configurations/1001")
    assert after["runstate"] == "running"
    assert api.put("/configurations/1001", {"name": "renamed"}).status_code == 200


def test_template_source_is_locked_while_copied(sim: Sim, api: Api) -> None:
    sim.admin.config(copy_seconds=0.6)
    api.ok("POST", "/templates", {"template_id": "5001"})
    assert api.ok("GET", "/v2/templates/5001")["busy"] is True
    assert api.post("/templates", {"template_id": "5001"}).status_code == 423
    wait_until(lambda: template_ready(api, "5001"))


def test_source_lock_can_be_turned_off(sim: Sim, api: Api) -> None:
    sim.admin.config(source_lock=False, copy_seconds=1.0)
    api.ok("POST", "/templates", {"template_id": "5001", "target_region": "EMEA"})
    second = api.post("/templates", {"template_id": "5001", "target_region": "APAC-2"})
    assert second.status_code == 200
    assert api.ok("GET", "/v2/templates/5001")["busy"] is False


def test_fail_copies_end_with_an_error(sim: Sim, api: Api) -> None:
    sim.admin.faults(fail_copies=[{"name_prefix": "bad", "message": "Disk copy failed"}])
    env = api.ok(
        "POST",
        "/configurations",
        {"configuration_id": "1001", "live_copy": True, "name": "bad env"},
    )
    tpl = api.ok("POST", "/templates", {"template_id": "5001", "name": "bad tpl"})
    good = api.ok(
        "POST", "/templates", {"configuration_id": "1002", "live_copy": True, "name": "good tpl"}
    )
    assert env["runstate"] == "busy" and env["error"] is None
    failed_env = wait_until(lambda: env_ready(api, env["id"]))
    assert failed_env["runstate"] == "stopped"
    assert failed_env["error"] == "Disk copy failed"
    assert failed_env["errors"] == ["Disk copy failed"]
    failed_tpl = wait_until(lambda: template_ready(api, tpl["id"]))
    assert failed_tpl["error"] == "Disk copy failed"
    assert wait_until(lambda: template_ready(api, good["id"]))["error"] is None


def test_fail_next_copy_is_one_shot(sim: Sim, api: Api) -> None:
    sim.admin.faults(fail_next_copy="Storage error")
    first = api.ok("POST", "/templates", {"template_id": "5001"})
    wait_until(lambda: template_ready(api, first["id"]))
    second = api.ok("POST", "/templates", {"template_id": "5001"})
    assert wait_until(lambda: template_ready(api, second["id"]))["error"] is None
    assert api.ok("GET", f"/v2/templates/{first['id']}")["error"] == "Storage error"
    assert sim.admin.get_faults()["fail_next_copy"] is None


def test_time_scale_multiplies_durations(sim: Sim, api: Api) -> None:
    sim.admin.config(copy_seconds=10.0, time_scale=0.05)
    started = time.monotonic()
    new = api.ok("POST", "/templates", {"template_id": "5001"})
    wait_until(lambda: template_ready(api, new["id"]))
    assert time.monotonic() - started < 2.0
    item = state_item(sim.admin.state(), "templates", new["id"])
    assert item["busy_reason"] is None and item["deleted"] is False


def test_copy_names_false_ignores_the_requested_name(sim: Sim, api: Api) -> None:
    sim.admin.config(copy_names=False)
    new = api.ok(
        "POST", "/templates", {"configuration_id": "1001", "live_copy": True, "name": "wanted"}
    )
    assert new["name"] == "erp-prod - Copy"
