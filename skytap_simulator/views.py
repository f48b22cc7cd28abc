"""API JSON shapes of environments, templates and VMs (call under ``SimState.read``)."""

from __future__ import annotations

import hashlib
from typing import Any

from .models import VM, Resource
from .state import SimState, lockversion_of, storage_of


def resource_url(base_url: str, res: Resource, v2: bool) -> str:
    """Absolute API URL of a resource (``/v2/...`` on v2 requests)."""
    prefix = "/v2" if v2 else ""
    return f"{base_url}{prefix}/{res.kind}s/{res.id}"


def owner_id(username: str) -> str:
    """A stable numeric user id for a user name (Skytap's ids are digits)."""
    return str(int(hashlib.sha256(username.encode()).hexdigest()[:8], 16))


def vm_view(st: SimState, res: Resource, vm: VM) -> dict[str, Any]:
    """One VM; ``disk_image`` stays hidden."""
    return {
        "id": vm.id,
        "name": vm.name,
        "runstate": st.vm_runstate_of(res, vm.runstate),
        "rate_limited": False,
        "error": vm.error,
        "hardware": vm.hardware.model_dump(mode="json"),
        "interfaces": [i.model_dump(mode="json") for i in vm.interfaces],
    }


def _common(st: SimState, res: Resource, base_url: str, v2: bool) -> dict[str, Any]:
    return {
        "id": res.id,
        "url": resource_url(base_url, res, v2),
        "name": res.name,
        "description": res.description,
        "region": res.region,
        # Who made it: skytap-sdk-go's Environment shows owner_id, owner_name and owner_url
        # [CODE]; templates the same [ASSUMED]; owner_name is the user's login [ASSUMED].
        "owner_id": owner_id(res.owner),
        "owner_name": res.owner,
        "owner_url": f"{base_url}{'/v2' if v2 else ''}/users/{owner_id(res.owner)}",
        "error": res.error,
        "vms": [vm_view(st, res, vm) for vm in res.vms],
        "networks": [n.model_dump(mode="json") for n in res.networks],
        "vm_count": len(res.vms),
        "storage": storage_of(res),
        "lockversion": lockversion_of(res),
        "can_copy": True,
        "tags": [t.model_dump(mode="json") for t in res.tags],
    }


def configuration_view(st: SimState, res: Resource, base_url: str, v2: bool) -> dict[str, Any]:
    """An environment as ``GET /v2/configurations/{id}`` shows it."""
    view = _common(st, res, base_url, v2)
    view.update(
        {
            "runstate": st.runstate_of(res),
            "rate_limited": False,
            "errors": [res.error] if res.error else [],
            "can_save_as_template": True,
            "outbound_traffic": res.outbound_traffic,
            "routable": res.routable,
        }
    )
    return view


def template_view(st: SimState, res: Resource, base_url: str, v2: bool) -> dict[str, Any]:
    """A template; idle is ``busy: false`` on v2 and ``busy: null`` on v1."""
    view = _common(st, res, base_url, v2)
    busy = st.busy_reason(res) is not None
    view["busy"] = True if busy else (False if v2 else None)
    return view


def render(st: SimState, res: Resource, base_url: str, v2: bool) -> dict[str, Any]:
    """Either view, by the resource's kind."""
    if res.kind == "template":
        return template_view(st, res, base_url, v2)
    return configuration_view(st, res, base_url, v2)
