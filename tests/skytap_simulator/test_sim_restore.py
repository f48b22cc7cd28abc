"""Restores: an environment from a template, its isolation fields, starting it, published
services, deleting it, and the count of environments made from templates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from skytap_simulator.seed import default_seed
from tests.conftest import Sim
from tests.skytap_simulator.helpers import (
    Api,
    env_ready,
    seed_with,
    state_item,
    template_ready,
    wait_until,
)

SERVICES = "/v2/configurations/{env}/vms/{vm}/interfaces/{nic}/services"


def restore(api: Api, template_id: str = "5001", **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = api.ok(
        "POST", "/configurations", {"template_id": template_id, "name": "drill", **extra}
    )
    return wait_until(lambda: env_ready(api, env["id"]))


def gone(api: Api, env_id: str) -> bool:
    return api.get(f"/v2/configurations/{env_id}").status_code == 404


def nic_of(env: dict[str, Any]) -> tuple[str, str]:
    vm = env["vms"][0]
    return vm["id"], vm["interfaces"][0]["id"]


def test_an_environment_from_a_template_copies_its_vms_networks_and_disks(
    api: Api, sim: Sim, tmp_path: Path
) -> None:
    seed = default_seed()
    source = next(e for e in seed["environments"] if e["id"] == "1001")
    for vm in source["vms"]:
        image = tmp_path / f"{vm['name']}.img"
        image.write_bytes(vm["name"].encode() * 4096)
        vm["disk_image"] = str(image)
    sim.admin.reset(seed)
    sim.admin.config(copy_seconds=0.3, delete_seconds=0.2, transition_seconds=0.2)
    saved = api.ok("POST", "/templates", {"configuration_id": "1001", "live_copy": True})
    wait_until(lambda: template_ready(api, saved["id"]))
    env = restore(api, saved["id"])
    assert env["runstate"] == "stopped" and env["region"] == "US-West"
    assert [vm["name"] for vm in env["vms"]] == ["app-1", "app-2", "db-1"]
    assert {vm["runstate"] for vm in env["vms"]} == {"stopped"}
    template = api.ok("GET", f"/v2/templates/{saved['id']}")
    assert {vm["id"] for vm in env["vms"]}.isdisjoint({vm["id"] for vm in template["vms"]})
    assert [n["name"] for n in env["networks"]] == [n["name"] for n in template["networks"]]
    state = sim.admin.state()
    restored = state_item(state, "environments", env["id"])["vms"]
    backup = state_item(state, "templates", saved["id"])["vms"]
    # The restored VMs have disks of their own: copies of the template's, byte for byte.
    for mine, theirs in zip(restored, backup, strict=True):
        assert mine["disk_image"] != theirs["disk_image"]
        assert Path(mine["disk_image"]).read_bytes() == Path(theirs["disk_image"]).read_bytes()
    assert sim.admin.restored_left()[0]["template_id"] == saved["id"]
    api.ok("DELETE", f"/configurations/{env['id']}")
    wait_until(lambda: gone(api, env["id"]))
    assert sim.admin.restored_left() == []


def test_a_restore_lands_in_the_templates_region(api: Api) -> None:
    dr = api.ok(
        "POST",
        "/templates",
        {"template_id": "5001", "target_region": "EMEA", "copy_to_region_vm_status_override": True},
    )
    wait_until(lambda: template_ready(api, dr["id"]))
    env = restore(api, dr["id"])
    assert env["region"] == "EMEA"
    api.ok("DELETE", f"/configurations/{env['id']}")


def test_isolation_fields_are_shown_changed_and_checked(api: Api) -> None:
    env = restore(api)
    # [ASSUMED] a new environment may reach the internet until told otherwise.
    assert env["outbound_traffic"] is True and env["routable"] is False
    changed = api.ok(
        "PUT", f"/v2/configurations/{env['id']}", {"outbound_traffic": False, "routable": False}
    )
    assert changed["outbound_traffic"] is False
    again = api.ok("GET", f"/v2/configurations/{env['id']}")
    assert (again["outbound_traffic"], again["routable"]) == (False, False)
    for net in again["networks"]:
        assert net["vpn_attachments"] == [] and net["tunnels"] == []
    bad = api.put(f"/v2/configurations/{env['id']}", {"outbound_traffic": "no"})
    assert bad.status_code == 422 and "outbound_traffic" in bad.json()["errors"][0]
    api.ok("DELETE", f"/configurations/{env['id']}")


def test_starting_goes_busy_then_running(api: Api, sim: Sim) -> None:
    env = restore(api)
    started = api.ok("PUT", f"/configurations/{env['id']}", {"runstate": "running"})
    assert started["runstate"] == "busy"
    assert api.put(f"/configurations/{env['id']}", {"runstate": "stopped"}).status_code == 423
    running = wait_until(lambda: env_ready(api, env["id"]))
    assert running["runstate"] == "running"
    assert {vm["runstate"] for vm in running["vms"]} == {"running"}
    api.ok("DELETE", f"/configurations/{env['id']}")


def test_with_a_hypervisor_it_runs_once_the_vms_booted(api: Api, sim: Sim) -> None:
    sim.admin.config(hypervisor=True)
    env = restore(api)
    vm_id, nic = nic_of(env)
    api.ok("PUT", f"/configurations/{env['id']}", {"runstate": "running"})
    time.sleep(0.6)  # three times the transition: without the boot it does not land
    assert api.ok("GET", f"/v2/configurations/{env['id']}")["runstate"] == "busy"
    sim.admin.booted(env["id"], {vm_id: 2222})
    running = wait_until(lambda: env_ready(api, env["id"]))
    assert running["runstate"] == "running"
    path = SERVICES.format(env=env["id"], vm=vm_id, nic=nic)
    assert api.ok("POST", path, {"internal_port": 22})["external_port"] == 2222
    api.ok("DELETE", f"/configurations/{env['id']}")


def test_publish_and_unpublish_a_service(api: Api) -> None:
    env = restore(api)
    vm_id, nic = nic_of(env)
    path = SERVICES.format(env=env["id"], vm=vm_id, nic=nic)
    svc = api.ok("POST", path, {"internal_port": 22})
    assert svc["internal_port"] == 22 and svc["external_ip"] and svc["external_port"] > 0
    shown = api.ok("GET", f"/v2/configurations/{env['id']}")["vms"][0]["interfaces"][0]
    assert shown["services"] == [svc]
    assert api.ok("GET", path) == [svc]
    twice = api.post(path, {"internal_port": 22})
    assert twice.status_code == 422 and "already published" in twice.json()["errors"][0]
    for bad in ({"internal_port": 0}, {"internal_port": "ssh"}, {}):
        answer = api.post(path, bad)
        assert answer.status_code == 422 and "internal_port" in answer.json()["errors"][0]
    api.ok("DELETE", f"{path}/{svc['id']}.json")
    assert api.delete(f"{path}/{svc['id']}").status_code == 404
    unknown_vm = SERVICES.format(env=env["id"], vm="9", nic=nic)
    assert api.post(unknown_vm, {"internal_port": 22}).status_code == 404
    api.ok("DELETE", f"/configurations/{env['id']}")


def test_delete_answers_404_once_gone(api: Api) -> None:
    env = restore(api)
    api.ok("DELETE", f"/configurations/{env['id']}")
    api.ok("DELETE", f"/configurations/{env['id']}")  # while deleting: nothing new
    wait_until(lambda: gone(api, env["id"]))
    assert api.delete(f"/configurations/{env['id']}").status_code == 404


def test_vpn_attachments_of_a_template_come_with_the_environment(api: Api, sim: Sim) -> None:
    attached = {"id": "v-1", "connected": True, "vpn": {"id": "vpn-1", "name": "corp"}}
    template = {
        "id": "5101",
        "name": "attached",
        "region": "US-West",
        "networks": [{"id": "3101", "name": "net", "vpn_attachments": [attached]}],
        "vms": [{"id": "2501", "name": "vm", "interfaces": [{"id": "2601", "network_id": "3101"}]}],
    }
    sim.admin.reset(seed_with(templates=[template]))
    sim.admin.config(copy_seconds=0.2, delete_seconds=0.2)
    env = restore(api, "5101")
    assert env["networks"][0]["vpn_attachments"] == [attached]
    api.ok("DELETE", f"/configurations/{env['id']}")


@pytest.mark.leaves_environments(1)
def test_the_count_sees_an_environment_left_behind(api: Api, sim: Sim) -> None:
    restore(api)
    [left] = sim.admin.restored_left()
    assert left["template_id"] == "5001" and left["runstate"] == "stopped"


def test_admin_booted_refuses_a_bad_body(sim: Sim) -> None:
    url = f"{sim.url}/_sim/configurations/1001/booted"
    answer = requests.post(url, json={"vms": []}, timeout=5)
    assert answer.status_code == 422
