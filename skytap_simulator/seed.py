"""Seed documents: the starting users, environments and templates of the simulator."""

from __future__ import annotations

import json
from importlib import resources
from itertools import count
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .models import (
    CONFIGURATION,
    DEFAULT_QUOTAS,
    REGIONS,
    TEMPLATE,
    Config,
    Network,
    Quota,
    Resource,
    StateDoc,
    User,
)


class SeedDoc(BaseModel):
    """The seed file format (docs/simulator.md, "Seed format"); resources mirror the API."""

    model_config = ConfigDict(extra="forbid")

    users: list[User] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    quotas: list[Quota] | None = None
    environments: list[Resource] = Field(default_factory=list)
    templates: list[Resource] = Field(default_factory=list)


def default_seed() -> dict[str, Any]:
    """The built-in seed (``default_seed.json``)."""
    text = resources.files("skytap_simulator").joinpath("default_seed.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def build_state(seed: dict[str, Any], config_overrides: dict[str, Any] | None = None) -> StateDoc:
    """Validate a seed and turn it into a full state, assigning every missing id."""
    doc = SeedDoc.model_validate(seed)
    config = Config.model_validate({**doc.config, **(config_overrides or {})})
    quotas = doc.quotas if doc.quotas is not None else [Quota(**q) for q in DEFAULT_QUOTAS]
    ids = count(_first_free_id(doc))
    state = StateDoc(config=config, users=doc.users, quotas=quotas)
    for kind, table, items in (
        (CONFIGURATION, state.environments, doc.environments),
        (TEMPLATE, state.templates, doc.templates),
    ):
        for res in items:
            _normalize(res, kind, ids)
            if res.id in table:
                raise ValueError(f"duplicate {kind} id {res.id} in seed")
            table[res.id] = res
    state.next_id = next(ids)
    return state


def _first_free_id(doc: SeedDoc) -> int:
    """Generated ids start above every numeric id in the seed (and at 10001 at least)."""
    found = [10000]
    text = doc.model_dump_json()
    for obj in json.loads(text)["environments"] + json.loads(text)["templates"]:
        found.extend(_numeric_ids(obj))
    return max(found) + 1


def _numeric_ids(obj: Any) -> list[int]:
    if isinstance(obj, dict):
        out = [int(obj["id"])] if str(obj.get("id", "")).isdigit() else []
        for value in obj.values():
            out.extend(_numeric_ids(value))
        return out
    if isinstance(obj, list):
        return [n for item in obj for n in _numeric_ids(item)]
    return []


def _normalize(res: Resource, kind: str, ids: count[int]) -> None:
    """Fill ids, the default network, interface networks and VM runstates."""
    res.kind = CONFIGURATION if kind == CONFIGURATION else TEMPLATE
    if res.region not in REGIONS:
        raise ValueError(f"{kind} {res.name}: unknown region {res.region}")
    res.id = res.id or str(next(ids))
    if not res.networks:
        res.networks.append(Network())
    for net in res.networks:
        net.id = net.id or str(next(ids))
    for tag in res.tags:
        tag.id = tag.id or str(next(ids))
    default_state = res.runstate if kind == CONFIGURATION else "stopped"
    for vm in res.vms:
        vm.id = vm.id or str(next(ids))
        vm.runstate = vm.runstate or default_state
        for disk in vm.hardware.disks:
            disk.id = disk.id or str(next(ids))
        for iface in vm.interfaces:
            iface.id = iface.id or str(next(ids))
            iface.network_id = iface.network_id or res.networks[0].id
            for svc in iface.services:
                svc.id = svc.id or str(next(ids))
