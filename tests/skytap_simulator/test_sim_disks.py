"""Disk images are read progressively during the copy: writes in that window tear the copy."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api, seed_with, state_item, template_ready, wait_until

SIZE = 256 * 1024
COPY_SECONDS = 1.0


@pytest.fixture
def image(sim: Sim, tmp_path: Path) -> Path:
    """An environment 'imaged' (id 1010) whose only VM has a 256 KiB disk image."""
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SIZE))
    env: dict[str, Any] = {
        "id": "1010",
        "name": "imaged",
        "runstate": "running",
        "vms": [{"id": "2010", "name": "vm-1", "disk_image": str(path)}],
    }
    sim.admin.reset(seed_with(environments=[env]))
    sim.admin.config(copy_seconds=COPY_SECONDS)
    return path


def save_template(sim: Sim, api: Api, write: Any = None) -> bytes:
    """Save 'imaged' as a template; call ``write`` mid-copy; return the copied image."""
    tpl = api.ok("POST", "/templates", {"configuration_id": "1010", "live_copy": True})
    if write is not None:
        time.sleep(COPY_SECONDS / 2)
        write()
    wait_until(lambda: template_ready(api, tpl["id"]))
    vm = state_item(sim.admin.state(), "templates", tpl["id"])["vms"][0]
    assert vm["disk_image"] and Path(vm["disk_image"]).parent != Path()
    assert "disk_image" not in str(api.ok("GET", f"/v2/templates/{tpl['id']}"))
    return Path(vm["disk_image"]).read_bytes()


def test_a_quiet_source_is_copied_exactly(sim: Sim, api: Api, image: Path) -> None:
    assert save_template(sim, api) == image.read_bytes()


def test_an_append_during_the_copy_tears_it(sim: Sim, api: Api, image: Path) -> None:
    before = image.read_bytes()

    def append() -> None:
        with image.open("ab") as fh:
            fh.write(os.urandom(SIZE))

    copy = save_template(sim, api, append)
    after = image.read_bytes()
    assert copy != before and copy != after


def test_block_writes_during_the_copy_tear_it(sim: Sim, api: Api, image: Path) -> None:
    before = image.read_bytes()

    def overwrite_first_and_last_blocks() -> None:
        with image.open("r+b") as fh:
            fh.write(b"\xff" * 4096)
            fh.seek(SIZE - 4096)
            fh.write(b"\xee" * 4096)

    copy = save_template(sim, api, overwrite_first_and_last_blocks)
    after = image.read_bytes()
    assert len(copy) == SIZE
    assert copy != before and copy != after
    assert copy[:4096] == before[:4096] and copy[-4096:] == after[-4096:]


def test_copies_of_copies_and_environment_copies_get_their_own_images(
    sim: Sim, api: Api, image: Path
) -> None:
    sim.admin.config(copy_seconds=0.2)
    env = api.ok("POST", "/configurations", {"configuration_id": "1010", "live_copy": True})
    wait_until(lambda: api.ok("GET", f"/v2/configurations/{env['id']}")["runstate"] != "busy")
    tpl = api.ok("POST", "/templates", {"configuration_id": env["id"], "live_copy": True})
    wait_until(lambda: template_ready(api, tpl["id"]))
    state = sim.admin.state()
    env_img = state_item(state, "environments", env["id"])["vms"][0]["disk_image"]
    tpl_img = state_item(state, "templates", tpl["id"])["vms"][0]["disk_image"]
    assert len({env_img, tpl_img, str(image)}) == 3
    assert Path(tpl_img).read_bytes() == Path(env_img).read_bytes() == image.read_bytes()


def test_a_missing_source_image_fails_the_copy(sim: Sim, api: Api, image: Path) -> None:
    sim.admin.config(copy_seconds=0.2)
    image.unlink()
    tpl = api.ok("POST", "/templates", {"configuration_id": "1010", "live_copy": True})
    done = wait_until(lambda: template_ready(api, tpl["id"]))
    assert "Disk copy failed" in done["error"]
