"""The simulator behaves like Skytap where the revised skytap-api.md says so: a copy without
``live_copy`` suspends the running VMs (and they stay suspended, counted), a region copy of a
template saved from running VMs needs the override [ASSUMED], lists leave tags out unless
asked, ``scope=company`` can be refused to a non-admin [ASSUMED], 16 regions."""

from __future__ import annotations

import pytest

from skytap_simulator.models import REGIONS
from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api, env_ready, template_ready, wait_until


@pytest.mark.suspends_vms(3)
@pytest.mark.parametrize("target", ["/configurations", "/templates"])
def test_a_copy_without_live_copy_suspends_the_running_vms_for_good(
    sim: Sim, api: Api, target: str
) -> None:
    made = api.ok("POST", target, {"configuration_id": "1001", "name": "not live"})
    during = api.ok("GET", "/v2/configurations/1001")
    assert {vm["runstate"] for vm in during["vms"]} == {"suspended"}
    if target == "/templates":
        wait_until(lambda: template_ready(api, made["id"]))
    else:
        wait_until(lambda: env_ready(api, made["id"]))
    after = api.ok("GET", "/v2/configurations/1001")
    assert after["runstate"] == "suspended"  # Skytap resumes nothing
    assert {vm["runstate"] for vm in after["vms"]} == {"suspended"}
    counted = sim.admin.suspended()
    assert sorted(s["vm_id"] for s in counted) == ["2001", "2002", "2003"]
    assert {s["environment_id"] for s in counted} == {"1001"}


def test_a_live_copy_leaves_the_vms_running_and_counts_nothing(sim: Sim, api: Api) -> None:
    made = api.ok("POST", "/templates", {"configuration_id": "1001", "live_copy": True})
    assert {vm["runstate"] for vm in api.ok("GET", "/v2/configurations/1001")["vms"]} == {"running"}
    wait_until(lambda: template_ready(api, made["id"]))
    assert sim.admin.suspended_count() == 0


@pytest.mark.suspends_vms(3)
def test_an_account_without_live_clone_suspends_even_when_asked(sim: Sim, api: Api) -> None:
    sim.admin.config(live_clone=False)
    api.ok("POST", "/templates", {"configuration_id": "1001", "live_copy": True})
    assert sim.admin.suspended_count() == 3


def test_live_copy_and_override_must_be_booleans(sim: Sim, api: Api) -> None:
    bad = api.post("/templates", {"configuration_id": "1001", "live_copy": "yes"})
    assert bad.status_code == 422 and "live_copy must be true or false" in bad.text
    bad = api.post(
        "/templates",
        {"template_id": "5001", "target_region": "EMEA", "copy_to_region_vm_status_override": 1},
    )
    assert bad.status_code == 422 and "copy_to_region_vm_status_override" in bad.text


def test_region_copy_of_a_template_saved_from_running_vms_needs_the_override(
    sim: Sim, api: Api
) -> None:
    saved = api.ok("POST", "/templates", {"configuration_id": "1001", "live_copy": True})
    wait_until(lambda: template_ready(api, saved["id"]))
    refused = api.post("/templates", {"template_id": saved["id"], "target_region": "EMEA"})
    assert refused.status_code == 422
    assert "Suspended or Powered Off" in refused.json()["errors"][0]
    assert "busy" not in refused.text.lower()  # a client must not retry it as busy
    body = {
        "template_id": saved["id"],
        "target_region": "EMEA",
        "copy_to_region_vm_status_override": True,
    }
    copy = api.ok("POST", "/templates", body)
    wait_until(lambda: template_ready(api, copy["id"]))
    # A copy of it carries the same origin: its own region copy needs the override too.
    again = api.post("/templates", {"template_id": copy["id"], "target_region": "APAC-2"})
    assert again.status_code == 422
    # A same-region copy and a template never saved from running VMs need none.
    assert api.post("/templates", {"template_id": saved["id"]}).status_code == 200
    wait_until(lambda: template_ready(api, saved["id"]))
    plain = api.post("/templates", {"template_id": "5001", "target_region": "EMEA"})
    assert plain.status_code == 200


def test_lists_leave_tags_out_unless_asked(sim: Sim, api: Api) -> None:
    api.ok("PUT", "/v2/templates/5001/tags.json", [{"value": "keep"}])
    without = api.ok("GET", "/v2/templates?scope=company")
    assert without and all("tags" not in t for t in without)
    asked = api.ok("GET", "/v2/templates?scope=company&tags=true")
    assert next(t for t in asked if t["id"] == "5001")["tags"][0]["value"] == "keep"
    # One resource read always shows its tags.
    assert api.ok("GET", "/v2/templates/5001")["tags"][0]["value"] == "keep"
    sim.admin.config(list_tags_on_request=False)
    assert "tags" in api.ok("GET", "/v2/templates?scope=company")[0]


def test_company_scope_can_be_refused_to_a_non_admin(sim: Sim, api: Api) -> None:
    assert api.get("/v2/configurations?scope=company").status_code == 200
    sim.admin.config(admin=False)
    refused = api.get("/v2/configurations?scope=company")
    assert refused.status_code == 403
    assert "administrator" in refused.json()["error"]
    assert api.get("/v2/configurations?scope=me").status_code == 200


def test_the_sixteen_regions(sim: Sim, api: Api) -> None:
    assert len(REGIONS) == len(set(REGIONS)) == 16
    for region in ("CN-HongKong-M-1", "US-Virginia-M-1", "IN-Pune-M-1"):
        body = {"template_id": "5001", "target_region": region}
        made = api.ok("POST", "/templates", body)
        assert made["region"] == region
        wait_until(lambda: template_ready(api, "5001"))
    bad = api.post("/templates", {"template_id": "5001", "target_region": "Mars-1"})
    assert bad.status_code == 422
