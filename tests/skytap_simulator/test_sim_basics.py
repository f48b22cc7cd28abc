"""Auth, request ids, resource shapes, versions, suffixes, quotas and error shapes."""

from __future__ import annotations

import base64

import requests

from skytap_simulator.control import SimulatorProcess
from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api

ENV_KEYS = {
    "id",
    "url",
    "name",
    "description",
    "runstate",
    "rate_limited",
    "region",
    "error",
    "errors",
    "vms",
    "networks",
    "vm_count",
    "storage",
    "lockversion",
    "can_copy",
    "can_save_as_template",
    "tags",
}
TEMPLATE_KEYS = {
    "id",
    "url",
    "name",
    "description",
    "busy",
    "region",
    "vm_count",
    "storage",
    "vms",
    "networks",
    "can_copy",
    "tags",
    "lockversion",
    "error",
}


def test_health_needs_no_auth(sim: Sim) -> None:
    assert requests.get(f"{sim.url}/_sim/health", timeout=5).json() == {"ok": True}


def test_missing_or_wrong_credentials_answer_401_without_echoing_the_token(sim: Sim) -> None:
    wrong = "wrong-token-123456"
    for auth in (None, (sim.username, wrong), ("nobody", sim.token)):
        resp = Api(sim.url, auth).get("/v2/configurations/1001")
        assert resp.status_code == 401
        assert set(resp.json()) == {"error"}
        assert wrong not in resp.text and sim.token not in resp.text
    bad_header = {"Authorization": "Basic !!!notbase64"}
    assert requests.get(f"{sim.url}/v2/templates", headers=bad_header, timeout=5).status_code == 401


def test_every_response_has_a_unique_request_id(api: Api, sim: Sim) -> None:
    responses = [
        api.get("/v2/configurations/1001"),
        api.get("/v2/configurations/999999"),
        Api(sim.url, None).get("/v2/templates"),
        requests.get(f"{sim.url}/_sim/health", timeout=5),
    ]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)


def test_environment_shape(api: Api) -> None:
    env = api.ok("GET", "/v2/configurations/1001")
    assert set(env) >= ENV_KEYS
    assert env["id"] == "1001" and env["name"] == "erp-prod" and env["region"] == "US-West"
    assert env["runstate"] == "running" and env["rate_limited"] is False
    assert env["error"] is None and env["errors"] == [] and env["tags"] == []
    assert env["url"].endswith("/v2/configurations/1001") and env["url"].startswith("http")
    assert env["vm_count"] == 3 and env["storage"] == 3 * 20480
    assert [vm["name"] for vm in env["vms"]] == ["app-1", "app-2", "db-1"]
    vm = env["vms"][0]
    assert set(vm) == {"id", "name", "runstate", "rate_limited", "error", "hardware", "interfaces"}
    assert vm["id"] == "2001" and vm["runstate"] == "running"
    assert vm["hardware"] == {
        "cpus": 2,
        "ram": 4096,
        "disks": [{"id": "2101", "size": 20480, "type": "SCSI"}],
    }
    iface = vm["interfaces"][0]
    assert iface["ip"] == "10.0.0.11" and iface["hostname"] == "app-1"
    assert iface["network_id"] == env["networks"][0]["id"]
    assert iface["services"] == [
        {"id": "2301", "internal_port": 22, "external_ip": "127.0.0.1", "external_port": 2201}
    ]
    assert [vm["interfaces"][0]["services"][0]["external_port"] for vm in env["vms"]] == [
        2201,
        2202,
        2203,
    ]
    assert "disk_image" not in str(env)


def test_second_environment_and_ids_are_digit_strings(api: Api) -> None:
    env = api.ok("GET", "/v2/configurations/1002")
    assert env["name"] == "crm-staging" and env["region"] == "EMEA"
    ids = [env["id"], *(vm["id"] for vm in env["vms"]), *(n["id"] for n in env["networks"])]
    assert all(isinstance(i, str) and i.isdigit() for i in ids)


def test_template_shape_and_busy_null_on_v1_false_on_v2(api: Api) -> None:
    v2 = api.ok("GET", "/v2/templates/5001")
    assert set(v2) >= TEMPLATE_KEYS
    assert v2["name"] == "base-linux" and v2["region"] == "US-West" and v2["busy"] is False
    v1 = api.ok("GET", "/templates/5001")
    assert v1["busy"] is None and v1["url"].endswith("/templates/5001")
    by_accept = api.get("/templates/5001", headers={"Accept": "application/vnd.skytap.api.v2+json"})
    assert by_accept.json()["busy"] is False


def test_json_suffix_and_v1_paths(api: Api) -> None:
    for path in (
        "/v2/configurations/1001.json",
        "/configurations/1001.json",
        "/configurations/1001",
        "/v2/templates/5001.json",
    ):
        assert api.get(path).status_code == 200, path
    assert api.get("/v2/configurations.json").headers["Content-Range"] == "items 0-1/2"
    tags = api.put("/v2/configurations/1001/tags.json", [{"value": "x"}])
    assert tags.status_code == 200


def test_unknown_ids_and_routes_answer_404_with_error(api: Api) -> None:
    for path in ("/v2/configurations/424242", "/v2/templates/424242", "/v2/nothing/here"):
        resp = api.get(path)
        assert resp.status_code == 404, path
        assert isinstance(resp.json()["error"], str)


def test_quotas(api: Api) -> None:
    quotas = api.ok("GET", "/v2/company/quotas")
    by_type = {q["quota_type"]: q for q in quotas}
    assert {"concurrent_vms", "concurrent_storage_size"} <= set(by_type)
    for quota in quotas:
        assert set(quota) == {"quota_type", "units", "limit", "usage"}
    assert by_type["concurrent_vms"]["usage"] == 3
    assert by_type["concurrent_storage_size"]["usage"] == 3 * 20480 + 10240 + 10240


def test_log_never_shows_credentials(
    api: Api, sim: Sim, simulator_process: SimulatorProcess
) -> None:
    api.get("/v2/configurations/1001")
    Api(sim.url, (sim.username, "a-wrong-secret-987")).get("/v2/configurations/1001")
    log = simulator_process.read_log()
    basic = base64.b64encode(f"{sim.username}:{sim.token}".encode()).decode()
    assert "GET /v2/configurations/1001 200" in log
    for secret in (sim.token, basic, "a-wrong-secret-987", "Authorization", "authorization"):
        assert secret not in log
