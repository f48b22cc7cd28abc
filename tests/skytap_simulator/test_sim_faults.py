"""Injected faults (errors, drops, latency, delays, ambiguity, rules), rate limit, request log."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import httpx
import pytest
import requests

from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api, wait_until

ENV = "/v2/configurations/1001"


def names(sim: Sim, collection: str) -> list[str]:
    return [r["name"] for r in sim.admin.state()[collection] if not r["deleted"]]


def has_template(sim: Sim, name: str) -> bool:
    """True once a live template is called ``name``."""
    return name in names(sim, "templates")


def test_error_rates_answer_each_status_with_its_body(sim: Sim, api: Api) -> None:
    sim.admin.faults(error_rates={"423": 1.0})
    busy = api.get(ENV)
    assert busy.status_code == 423 and "busy" in busy.json()["error"]
    sim.admin.faults(error_rates={"429": 1.0}, retry_after_s=3)
    limited = api.get(ENV)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json() == {"error": "Too many requests"}
    sim.admin.faults(error_rates={"503": 1.0})
    unavailable = api.get(ENV)
    assert unavailable.status_code == 503
    assert unavailable.json() == {"error": "Service Unavailable"}
    assert unavailable.headers["X-Request-ID"]
    sim.admin.faults(error_rates={"500": 1.0})
    assert api.get(ENV).status_code == 500


def test_faults_never_touch_admin_routes_and_clear(sim: Sim, api: Api) -> None:
    sim.admin.faults(error_rates={"503": 0.5}, drop_rate=0.5)
    for _ in range(5):
        assert sim.admin.health()
    sim.admin.clear_faults()
    assert sim.admin.get_faults()["error_rates"] == {}
    assert api.get(ENV).status_code == 200


def test_seeded_faults_repeat_the_same_sequence(sim: Sim, api: Api) -> None:
    def run() -> list[int]:
        sim.admin.faults(error_rates={"503": 0.5}, seed=7)
        return [api.get(ENV).status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second and {200, 503} == set(first)


def test_drop_is_a_protocol_error_for_requests_and_httpx(sim: Sim) -> None:
    sim.admin.faults(rules=[{"path": ENV, "action": "drop", "count": 2}])
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        requests.get(sim.url + ENV, auth=sim.auth, timeout=5)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(sim.url + ENV, auth=sim.auth, timeout=5)
    assert requests.get(sim.url + ENV, auth=sim.auth, timeout=5).status_code == 200
    log = sim.admin.requests()
    assert [(e["status"], e["fault"]) for e in log] == [(None, "drop"), (None, "drop"), (200, None)]


def test_random_drops_with_async_httpx(sim: Sim) -> None:
    sim.admin.faults(drop_rate=1.0)

    async def fetch() -> None:
        async with httpx.AsyncClient(auth=sim.auth, timeout=5) as client:
            await client.get(sim.url + ENV)

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(fetch())


def test_rule_after_true_creates_the_resource_then_fails(sim: Sim, api: Api) -> None:
    sim.admin.faults(rules=[{"method": "POST", "path": "/templates", "status": 503, "after": True}])
    resp = api.post("/templates", {"configuration_id": "1001", "live_copy": True, "name": "ghost"})
    assert resp.status_code == 503
    assert "ghost" in names(sim, "templates")
    assert sim.admin.get_faults()["rules"] == []  # count 1 used up
    assert (
        api.post("/templates", {"configuration_id": "1002", "live_copy": True}).status_code == 200
    )


def test_rule_drop_after_creates_and_drop_before_does_not(sim: Sim, api: Api) -> None:
    sim.admin.faults(
        rules=[
            {"method": "POST", "path": "/configurations", "action": "drop", "after": True},
            {"method": "POST", "path": "/configurations", "action": "drop"},
        ]
    )
    for name in ("made", "never"):
        with pytest.raises(requests.exceptions.RequestException):
            api.post(
                "/configurations", {"configuration_id": "1001", "live_copy": True, "name": name}
            )
        if name == "made":
            wait_until(lambda: api.get(ENV).json()["runstate"] != "busy")
    envs = names(sim, "environments")
    assert "made" in envs and "never" not in envs


def test_rule_path_wildcard_method_and_count(sim: Sim, api: Api) -> None:
    sim.admin.faults(rules=[{"method": "GET", "path": "/v2/templates*", "status": 429, "count": 2}])
    assert api.get(ENV).status_code == 200
    assert api.get("/v2/templates/5001.json").status_code == 429
    assert api.get("/v2/templates").status_code == 429
    assert api.get("/v2/templates").status_code == 200


def test_ambiguous_fraction_one_and_zero(sim: Sim, api: Api) -> None:
    sim.admin.faults(error_rates={"503": 1.0}, ambiguous_fraction=1.0)
    assert api.post("/templates", {"template_id": "5001", "name": "after"}).status_code == 503
    sim.admin.faults(error_rates={"503": 1.0}, ambiguous_fraction=0.0)
    assert (
        api.post(
            "/templates", {"configuration_id": "1002", "live_copy": True, "name": "before"}
        ).status_code
        == 503
    )
    tpl_names = names(sim, "templates")
    assert "after" in tpl_names and "before" not in tpl_names


def test_latency_is_added(sim: Sim, api: Api) -> None:
    sim.admin.faults(latency_ms=300)
    started = time.monotonic()
    assert api.get(ENV).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert sim.admin.requests()[-1]["fault"] == "latency:300ms"


def test_delay_rule_times_the_client_out_but_the_write_still_happens(sim: Sim, api: Api) -> None:
    sim.admin.faults(
        rules=[
            {"method": "POST", "path": "/templates", "action": "delay", "seconds": 0.8},
            {
                "method": "POST",
                "path": "/templates",
                "action": "delay",
                "seconds": 0.8,
                "after": True,
            },
        ]
    )
    for name in ("slow-before", "slow-after"):
        with pytest.raises(requests.exceptions.Timeout):
            api.post("/templates", {"template_id": "5001", "name": name}, timeout=0.3)
        pending = sim.admin.requests()[-1]  # logged on arrival, answered later
        assert pending["status"] is None and pending["fault"].startswith("delay:0.8s")
        wait_until(partial(has_template, sim, name), timeout=3)
        wait_until(lambda: api.get("/v2/templates/5001").json()["busy"] is False)


def test_rate_limit_per_user_with_retry_after(sim: Sim, api: Api) -> None:
    sim.admin.config(rate_limit_per_s=2)
    statuses = [api.get(ENV) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    limited = statuses[-1]
    assert limited.json() == {"error": "Too many requests"}
    assert int(limited.headers["Retry-After"]) >= 1
    other = Api(sim.url, ("other", "sim-other-token-2b81e4"))
    assert other.get(ENV).status_code == 200
    time.sleep(0.6)
    assert api.get(ENV).status_code == 200
    assert sim.admin.requests()[2]["fault"] == "rate_limit"


def test_request_log_and_clear(sim: Sim, api: Api) -> None:
    api.get(ENV)
    Api(sim.url, None).get("/v2/templates")
    log = sim.admin.requests()
    assert [(e["method"], e["path"], e["status"], e["user"]) for e in log] == [
        ("GET", ENV, 200, "demo"),
        ("GET", "/v2/templates", 401, None),
    ]
    assert set(log[0]) == {"t", "method", "path", "status", "request_id", "user", "fault"}
    sim.admin.clear_requests()
    assert sim.admin.requests() == []


def test_invalid_fault_and_config_settings_are_refused(sim: Sim) -> None:
    bad_faults = (
        {"error_rates": {"200": 0.5}},
        {"drop_rate": 2},
        {"colour": "blue"},
        {"error_rates": {"503": 0.7}, "drop_rate": 0.7},
    )
    for bad in bad_faults:
        with pytest.raises(RuntimeError, match="422"):
            sim.admin.faults(**bad)
    with pytest.raises(RuntimeError, match="422"):
        sim.admin.config(time_scale=0)
    with pytest.raises(RuntimeError, match="422"):
        sim.admin.config(nonsense=1)
