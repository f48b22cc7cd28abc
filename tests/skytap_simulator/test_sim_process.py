"""The process: command-line options, state file restarts, start-up failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from skytap_simulator.__main__ import read_json_arg
from skytap_simulator.control import SimulatorError, SimulatorProcess
from skytap_simulator.seed import default_seed
from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api, env_ready, seed_with, template_ready, wait_until

# Each test starts simulator processes of its own (not the `sim` fixture's).
pytestmark = pytest.mark.integration

AUTH = ("demo", default_seed()["users"][0]["token"])


def test_state_survives_a_restart_and_copies_in_flight_finish(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(64 * 1024))
    env = {"id": "1010", "name": "imaged", "vms": [{"name": "vm", "disk_image": str(image)}]}
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(seed_with(environments=[env])))
    state_file, data_dir = tmp_path / "state.json", tmp_path / "data"
    opts: dict[str, Any] = {"state_file": state_file, "data_dir": data_dir, "time_scale": 0.5}
    with SimulatorProcess(seed=seed_file, **opts) as first:
        # 4 s at time_scale 0.5 (a restart at load 30 outlasted 1.5 s)
        first.admin.config(copy_seconds=8.0)
        api = Api(first.url, AUTH)
        api.ok("PUT", "/configurations/1001", {"name": "renamed"})
        tpl = api.ok(
            "POST",
            "/templates",
            {"configuration_id": "1010", "live_copy": True, "name": "in flight"},
        )
    assert state_file.exists()
    with SimulatorProcess(**opts) as second:
        api = Api(second.url, AUTH)
        assert api.ok("GET", "/v2/configurations/1001")["name"] == "renamed"
        assert second.admin.config()["copy_seconds"] == 8.0
        assert api.ok("GET", f"/v2/templates/{tpl['id']}")["busy"] is True
        assert (
            api.post("/templates", {"configuration_id": "1010", "live_copy": True}).status_code
            == 423
        )
        wait_until(lambda: template_ready(api, tpl["id"]), timeout=10)
        vm = next(t for t in second.admin.state()["templates"] if t["id"] == tpl["id"])["vms"][0]
        assert Path(vm["disk_image"]).read_bytes() == image.read_bytes()
        assert Path(vm["disk_image"]).parent == data_dir
        assert env_ready(api, "1010")


def test_faults_and_seed_from_the_command_line(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(seed_with(templates=[{"name": "extra"}])))
    with SimulatorProcess(seed=seed_file, faults={"latency_ms": 1}) as proc:
        api = Api(proc.url, AUTH)
        names = [t["name"] for t in api.get("/v2/templates").json()]
        assert names == ["base-linux", "extra"]
        assert proc.admin.get_faults()["latency_ms"] == 1
        proc.admin.reset()  # back to the built-in seed, no faults
        assert [t["name"] for t in api.get("/v2/templates").json()] == ["base-linux"]
        assert proc.admin.get_faults()["latency_ms"] == 0


def test_a_bad_seed_stops_start_up_with_the_reason(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps({"environments": [{"name": "x", "region": "Atlantis"}]}))
    with pytest.raises(SimulatorError, match="Atlantis"):
        SimulatorProcess(seed=seed_file).start()


def test_reset_refuses_a_bad_seed(sim: Sim) -> None:
    with pytest.raises(SimulatorError, match="422"):
        sim.admin.reset({"users": "nobody"})
    assert sim.admin.health()


def test_faults_option_reads_json_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text('{"drop_rate": 0.1}')
    assert read_json_arg(f"@{path}") == read_json_arg('{"drop_rate": 0.1}') == {"drop_rate": 0.1}
