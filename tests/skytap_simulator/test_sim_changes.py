"""PUT (name, description, runstate), DELETE and tags."""

from __future__ import annotations

import pytest

from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api, env_ready, state_item, wait_until


def test_rename_and_describe_change_the_lockversion(api: Api) -> None:
    before = api.ok("GET", "/v2/configurations/1001")["lockversion"]
    put = api.ok("PUT", "/configurations/1001", {"name": "erp-renamed", "description": "new"})
    assert put["name"] == "erp-renamed" and put["description"] == "new"
    assert put["lockversion"] != before
    tpl = api.ok("PUT", "/templates/5001", {"name": "base-2"})
    assert tpl["name"] == "base-2"
    assert api.ok("GET", "/v2/templates/5001")["name"] == "base-2"


@pytest.mark.parametrize("target", ["suspended", "stopped", "halted"])
def test_runstate_change_goes_busy_then_lands(api: Api, target: str) -> None:
    resp = api.ok("PUT", "/configurations/1001", {"runstate": target})
    assert resp["runstate"] == "busy"
    assert {vm["runstate"] for vm in resp["vms"]} == {"busy"}
    assert api.put("/configurations/1001", {"runstate": "running"}).status_code == 423
    done = wait_until(lambda: env_ready(api, "1001"))
    assert done["runstate"] == target
    assert {vm["runstate"] for vm in done["vms"]} == {target}
    api.ok("PUT", "/configurations/1001", {"runstate": "running"})
    assert wait_until(lambda: env_ready(api, "1001"))["runstate"] == "running"


def test_bad_runstate_and_bad_body_answer_422_with_errors(api: Api) -> None:
    resp = api.put("/configurations/1001", {"runstate": "dancing"})
    assert resp.status_code == 422 and "dancing" in resp.json()["errors"][0]
    assert api.put("/configurations/1001", ["not", "an", "object"]).status_code == 422
    assert api.put("/configurations/1001", {"name": ""}).status_code == 422
    assert api.put("/configurations/999", {"name": "x"}).status_code == 404


def test_delete_goes_busy_then_404_and_is_idempotent_meanwhile(sim: Sim, api: Api) -> None:
    sim.admin.config(delete_seconds=0.5)
    first = api.delete("/configurations/1002")
    assert first.status_code == 200 and first.json()["runstate"] == "busy"
    assert api.delete("/configurations/1002").status_code == 200
    assert api.put("/configurations/1002", {"name": "x"}).status_code == 423
    wait_until(lambda: api.get("/v2/configurations/1002").status_code == 404)
    gone = api.delete("/configurations/1002")
    assert gone.status_code == 404 and gone.json()["error"]
    assert state_item(sim.admin.state(), "environments", "1002")["deleted"] is True


def test_delete_template(api: Api) -> None:
    resp = api.delete("/templates/5001.json")
    assert resp.status_code == 200 and resp.json()["busy"] is True
    wait_until(lambda: api.get("/v2/templates/5001").status_code == 404)


@pytest.mark.parametrize("kind", ["configurations", "templates"])
def test_tags_add_list_remove(api: Api, kind: str) -> None:
    rid = "1001" if kind == "configurations" else "5001"
    base = f"/v2/{kind}/{rid}/tags"
    added = api.ok("PUT", base, [{"value": "backup"}, {"value": "nightly"}, {"value": "backup"}])
    assert [t["value"] for t in added] == ["backup", "nightly"]
    assert all(t["id"].isdigit() for t in added)
    again = api.ok("PUT", base, [{"value": "nightly"}, {"value": "dr"}])
    assert [t["value"] for t in again] == ["backup", "nightly", "dr"]
    assert api.ok("GET", base) == again
    assert api.ok("GET", f"/v2/{kind}/{rid}")["tags"] == again
    remaining = api.ok("DELETE", f"{base}/{added[0]['id']}.json")
    assert [t["value"] for t in remaining] == ["nightly", "dr"]
    assert api.delete(f"{base}/{added[0]['id']}").status_code == 404
    bad = api.put(base, {"value": "not a list"})
    assert bad.status_code == 422 and bad.json()["errors"]
    assert api.put(base, [{"value": ""}]).status_code == 422
    assert api.get(f"/v2/{kind}/31337/tags").status_code == 404


def test_tags_can_be_added_to_a_copy_while_it_is_busy(api: Api) -> None:
    new = api.ok("POST", "/templates", {"configuration_id": "1001", "live_copy": True})
    tagged = api.ok("PUT", f"/v2/templates/{new['id']}/tags", [{"value": "made-by-test"}])
    assert [t["value"] for t in tagged] == ["made-by-test"]
    assert api.ok("GET", f"/v2/templates/{new['id']}")["busy"] is True


def test_tag_values_are_stored_with_surrounding_whitespace_stripped(api: Api) -> None:
    """[ASSUMED] as Skytap: why the provider refuses such user tags (backups.check_tags)."""
    tagged = api.ok(
        "PUT",
        "/v2/templates/5001/tags",
        [{"value": " airflow-skytap-consistency/application-consistent\n"}],
    )
    assert [t["value"] for t in tagged] == ["airflow-skytap-consistency/application-consistent"]
