"""Lists: pagination headers across 250 templates, query filters, scope, sorting."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api, seed_with, wait_until

REGION_CYCLE = ("US-West", "EMEA", "APAC-2")


@pytest.fixture
def many(sim: Sim, api: Api) -> Api:
    """The default seed plus 250 templates tpl-000..tpl-249 in three regions."""
    templates: list[dict[str, Any]] = [
        {"name": f"tpl-{i:03d}", "region": REGION_CYCLE[i % 3], "vms": [{"name": "vm"}]}
        for i in range(250)
    ]
    sim.admin.reset(seed_with(templates=templates))
    return api


def test_pages_follow_link_headers_to_the_end(many: Api) -> None:
    resp = many.get("/v2/templates?scope=company")
    assert resp.headers["Content-Range"] == "items 0-99/251"
    seen = [t["id"] for t in resp.json()]
    ranges = [resp.headers["Content-Range"]]
    while "next" in resp.links:
        nxt = resp.links["next"]["url"]
        assert nxt.startswith("http")
        resp = many.session.get(nxt, timeout=10)
        seen += [t["id"] for t in resp.json()]
        ranges.append(resp.headers["Content-Range"])
    assert ranges == ["items 0-99/251", "items 100-199/251", "items 200-250/251"]
    assert "Link" not in resp.headers
    assert len(seen) == len(set(seen)) == 251
    assert seen == sorted(seen, key=int)


def test_count_and_offset(many: Api) -> None:
    resp = many.get("/v2/templates?scope=company&count=10&offset=245")
    assert resp.headers["Content-Range"] == "items 245-250/251"
    assert len(resp.json()) == 6 and "Link" not in resp.headers
    capped = many.get("/v2/templates?scope=company&count=500")
    assert len(capped.json()) == 100 and capped.headers["Content-Range"] == "items 0-99/251"
    assert "offset=100" in capped.links["next"]["url"]
    past = many.get("/v2/templates?scope=company&offset=900")
    assert past.json() == [] and past.headers["Content-Range"] == "items */251"
    for bad in ("count=0", "count=x", "offset=-1"):
        resp = many.get(f"/v2/templates?scope=company&{bad}")
        assert resp.status_code == 422 and resp.json()["errors"], bad


def test_name_prefix_exact_and_region_filters(many: Api) -> None:
    prefixed = many.get("/v2/templates?scope=company&query=name:tpl-1*").json()
    assert len(prefixed) == 100
    assert all(t["name"].startswith("tpl-1") for t in prefixed)
    exact = many.get("/v2/templates?scope=company&query=name:tpl-01").json()
    assert exact == []
    exact = many.get("/v2/templates?scope=company&query=name:tpl-010").json()
    assert [t["name"] for t in exact] == ["tpl-010"]
    both = many.get(
        "/v2/templates", params={"scope": "company", "query": "name:tpl-1*,region:EMEA"}
    )
    names = [t["name"] for t in both.json()]
    assert names and all(int(n[4:]) % 3 == 1 and n.startswith("tpl-1") for n in names)
    assert both.headers["Content-Range"] == f"items 0-{len(names) - 1}/{len(names)}"


def test_empty_result_and_bad_query(api: Api) -> None:
    resp = api.get("/v2/configurations?scope=company&query=name:nothing*")
    assert resp.status_code == 200 and resp.json() == []
    assert resp.headers["Content-Range"] == "items */0" and "Link" not in resp.headers
    bad = api.get("/v2/configurations?scope=company&query=colour:blue")
    assert bad.status_code == 422 and "colour:blue" in bad.json()["errors"][0]


def test_configuration_lists_hold_full_objects_and_tags_when_asked(api: Api) -> None:
    api.ok("PUT", "/v2/configurations/1002/tags", [{"value": "nightly"}])
    envs = api.get("/v2/configurations?scope=company&count=100&offset=0&tags=true").json()
    assert [e["id"] for e in envs] == ["1001", "1002"]
    assert envs[0]["vms"][0]["interfaces"][0]["services"][0]["external_port"] == 2201
    assert [t["value"] for t in envs[1]["tags"]] == ["nightly"]
    v1 = api.get("/configurations?scope=company&query=region:EMEA").json()
    assert [e["name"] for e in v1] == ["crm-staging"]


def test_scope_company_shows_everyone_else_only_own(sim: Sim, api: Api) -> None:
    other = Api(sim.url, ("other", "sim-other-token-2b81e4"))
    assert other.get("/v2/configurations").json() == []
    assert len(other.get("/v2/configurations?scope=company").json()) == 2
    assert len(api.get("/v2/configurations").json()) == 2


def test_deleted_resources_are_never_listed(api: Api) -> None:
    api.ok("DELETE", "/configurations/1002")
    wait_until(lambda: api.get("/v2/configurations/1002").status_code == 404)
    listed = api.get("/v2/configurations?scope=company").json()
    assert [e["id"] for e in listed] == ["1001"]
