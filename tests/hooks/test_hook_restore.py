"""The hook's restore calls against the simulator over real HTTP: an environment from a
template, isolated (read back), started with progress logs, SSH published and removed, deleted."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import (
    SkytapIsolationError,
    SkytapResourceFailedError,
    SkytapResponseError,
    SkytapWaitTimeoutError,
    check_service,
    isolation_problems,
)
from airflow_provider_skytap.hooks.skytap import SkytapHook
from tests.conftest import Sim
from tests.helpers import api_requests
from tests.skytap_simulator.helpers import seed_with


def restored(hook: SkytapHook, template_id: str = "5001", name: str = "drill-1") -> dict[str, Any]:
    env = hook.create_environment(template_id, name=name)
    return hook.wait_until_ready("environment", env["id"], timeout=30, poll_interval=0.1)


def test_restore_isolate_start_publish_and_delete(
    hook: SkytapHook, sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.admin.config(transition_seconds=1.5)
    env = restored(hook)
    assert env["name"] == "drill-1" and env["region"] == "US-West"
    isolated = hook.isolate_environment(env["id"])
    assert (isolated["outbound_traffic"], isolated["routable"]) == (False, False)
    shown = sim.admin.state()["environments"]
    assert next(e for e in shown if e["id"] == env["id"])["outbound_traffic"] is False
    capsys.readouterr()
    running = hook.start_environment(env["id"], timeout=30, log_every=0.3, poll_interval=0.1)
    assert running["runstate"] == "running"
    assert {vm["runstate"] for vm in running["vms"]} == {"running"}
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if "runstate busy after" in line]
    assert len(progress) >= 2, f"no steady progress while the environment started: {out}"
    assert "linux-1 busy" in progress[0]
    assert "is running after" in out

    vm = running["vms"][0]
    nic = vm["interfaces"][0]["id"]
    svc = hook.publish_service(env["id"], vm["id"], nic, 22)
    assert svc["external_ip"] == "127.0.0.1" and svc["external_port"] > 0
    again = hook.publish_service(env["id"], vm["id"], nic, 22)
    assert again["id"] == svc["id"], "a second publish of the same port reuses the service"
    [endpoint] = hook.get_ssh_endpoints(env["id"])
    assert (endpoint.host, endpoint.port) == (svc["external_ip"], svc["external_port"])
    assert hook.unpublish_service(env["id"], vm["id"], nic, svc["id"]) is True
    assert hook.unpublish_service(env["id"], vm["id"], nic, svc["id"]) is False

    assert hook.delete("environment", env["id"]) is True
    assert hook.delete("environment", env["id"]) is False
    assert sim.admin.restored_left() == []


def test_a_template_attached_to_a_vpn_is_not_isolated(hook: SkytapHook, sim: Sim) -> None:
    attached = {"id": "77", "connected": True, "vpn": {"id": "vpn-9", "name": "corp"}}
    template = {
        "id": "5101",
        "name": "attached",
        "networks": [{"id": "3101", "name": "net", "vpn_attachments": [attached]}],
        "vms": [{"id": "2501", "name": "vm", "interfaces": [{"id": "2601"}]}],
    }
    sim.admin.reset(seed_with(templates=[template]))
    sim.admin.config(copy_seconds=0.2, delete_seconds=0.2)
    env = restored(hook, "5101")
    with pytest.raises(SkytapIsolationError, match=r"network \d+ \('net'\) has a VPN attachment"):
        hook.isolate_environment(env["id"])
    hook.delete("environment", env["id"])


def test_a_lost_publish_answer_publishes_once(hook: SkytapHook, sim: Sim) -> None:
    env = restored(hook)
    vm = env["vms"][0]
    sim.admin.faults(
        rules=[{"method": "POST", "path": "/v2/configurations/*", "action": "drop", "after": True}]
    )
    svc = hook.publish_service(env["id"], vm["id"], vm["interfaces"][0]["id"], 22)
    posts = [r for r in api_requests(sim) if r["method"] == "POST" and "services" in r["path"]]
    assert len(posts) == 1, posts
    shown = hook.get_environment(env["id"])["vms"][0]["interfaces"][0]["services"]
    assert [s["id"] for s in shown] == [svc["id"]]
    sim.admin.clear_faults()
    hook.delete("environment", env["id"])


def test_a_start_that_never_lands_times_out_naming_the_vms(hook: SkytapHook, sim: Sim) -> None:
    sim.admin.config(hypervisor=True)  # no hypervisor answers: it stays busy
    env = restored(hook)
    with pytest.raises(SkytapWaitTimeoutError, match=r"not running after .*linux-1 busy"):
        hook.start_environment(env["id"], timeout=1, log_every=0.2, poll_interval=0.1)
    sim.admin.config(hypervisor=False)
    hook.delete("environment", env["id"])


def test_bad_values_are_refused_before_any_request(hook: SkytapHook, sim: Sim) -> None:
    sim.admin.clear_requests()
    with pytest.raises(ValueError, match="template_id"):
        hook.create_environment("12; rm", name="x")
    with pytest.raises(ValueError, match="internal_port"):
        hook.publish_service("1001", "2001", "2201", 70000)
    with pytest.raises(ValueError, match="outbound_traffic"):
        hook.isolate_environment("1001", outbound_traffic="no")  # type: ignore[arg-type]
    assert api_requests(sim) == []


def test_a_failed_restore_copy_fails_the_wait(hook: SkytapHook, sim: Sim) -> None:
    sim.admin.faults(fail_next_copy="Storage error")
    env = hook.create_environment("5001", name="drill-broken")
    with pytest.raises(SkytapResourceFailedError, match="Storage error"):
        hook.wait_until_ready("environment", env["id"], timeout=30, poll_interval=0.1)
    assert hook.delete("environment", env["id"]) is True


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"outbound_traffic": False, "routable": False, "networks": [{"tunnels": []}]}, []),
        ({"routable": False}, ["outbound_traffic is None, not False"]),
        ({"outbound_traffic": "false", "routable": False}, ["outbound_traffic is 'false'"]),
        (
            {"outbound_traffic": False, "routable": True},
            ["routable is True, not False"],
        ),
        (
            {
                "outbound_traffic": False,
                "routable": False,
                "networks": [{"id": "1", "name": "n", "tunnels": [{"id": "9"}]}],
            },
            ["network 1 ('n') has a tunnel (1): 9"],
        ),
        (
            {"outbound_traffic": False, "routable": False, "networks": [{"tunnels": "x"}]},
            ["shows tunnels = 'x', not a list"],
        ),
    ],
)
def test_isolation_is_read_from_the_environments_own_fields(
    env: dict[str, Any], expected: list[str]
) -> None:
    problems = isolation_problems(env)
    assert len(problems) == len(expected)
    for problem, part in zip(problems, expected, strict=True):
        assert part in problem


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"id": "1", "external_ip": "host.example", "external_port": 22}, "external_ip"),
        ({"id": "1", "external_ip": "10.1.1.1", "external_port": 0}, "external_port"),
        ({"id": "1", "external_ip": "10.1.1.1", "external_port": "22; x"}, "external_port"),
        ({"id": "x", "external_ip": "10.1.1.1", "external_port": 22}, "id"),
        (["not", "an", "object"], "the service"),
    ],
)
def test_a_published_service_of_the_wrong_shape_is_refused(answer: Any, field: str) -> None:
    with pytest.raises(SkytapResponseError, match=field):
        check_service(answer, "publish port 22")
