"""Small readers of the simulator's admin view, shared by the hooks', operators' and DAG tests."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def api_requests(sim: Any) -> list[dict[str, Any]]:
    """The API requests the simulator saw (its admin routes left out)."""
    return [r for r in sim.admin.requests() if not r["path"].startswith("/_sim")]


def live_named(sim: Any, name: str) -> list[dict[str, Any]]:
    """Every environment and template with this name that is not deleted, per the simulator."""
    state = sim.admin.state()
    found = []
    for collection in ("environments", "templates"):
        for item in state[collection]:
            if item["name"] == name and not item.get("deleted"):
                found.append(item)
    return found


def default_seed() -> dict[str, Any]:
    text = resources.files("skytap_simulator").joinpath("default_seed.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]
