"""``/_sim/*``: the simulator's own admin API (no auth, never faulted)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from .faults import FaultSettings
from .models import Config
from .simulator import Simulator


async def _body(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw) if raw.strip() else None


def _invalid(exc: Exception) -> JSONResponse:
    if isinstance(exc, ValidationError):
        errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    else:
        errors = [str(exc)]
    return JSONResponse({"errors": errors}, status_code=422)


def admin_router(sim: Simulator) -> APIRouter:
    """Health, reset, config, faults, state and the request log."""
    router = APIRouter(prefix="/_sim")

    @router.get("/health")
    async def health() -> Any:
        return {"ok": True}

    @router.post("/reset")
    async def reset(request: Request) -> Any:
        try:
            sim.reset(await _body(request))
        except (ValueError, ValidationError) as exc:
            return _invalid(exc)
        return {"ok": True}

    @router.get("/config")
    async def get_config() -> Any:
        return sim.state.config.model_dump()

    @router.post("/config")
    async def set_config(request: Request) -> Any:
        try:
            changes = await _body(request) or {}
            config = Config.model_validate({**sim.state.config.model_dump(), **changes})
        except (ValueError, ValidationError) as exc:
            return _invalid(exc)
        return sim.state.set_config(config).model_dump()

    @router.get("/faults")
    async def get_faults() -> Any:
        return sim.faults.settings.model_dump()

    @router.post("/faults")
    async def set_faults(request: Request) -> Any:
        try:
            settings = FaultSettings.model_validate(await _body(request) or {})
        except (ValueError, ValidationError) as exc:
            return _invalid(exc)
        sim.faults.replace(settings)
        return sim.faults.settings.model_dump()

    @router.get("/state")
    async def state() -> Any:
        return sim.state.snapshot()

    @router.get("/suspended")
    async def suspended() -> Any:
        found = sim.state.suspended_by_copy()
        return {"count": len(found), "vms": found}

    @router.get("/restored")
    async def restored() -> Any:
        found = sim.state.restored()
        left = [e for e in found if not e["deleted"] and not e["deleting"]]
        return {"made": len(found), "left": len(left), "environments": found}

    @router.post("/configurations/{env_id}/booted")
    async def booted(env_id: str, request: Request) -> Any:
        body = await _body(request) or {}
        vms = body.get("vms") if isinstance(body, dict) else None
        if not isinstance(vms, dict) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in vms.values()
        ):
            return _invalid(ValueError('body must be {"vms": {"<vm id>": <ssh port>, ...}}'))
        sim.state.booted(env_id, {str(k): v for k, v in vms.items()})
        return {"ok": True}

    @router.get("/requests")
    async def requests() -> Any:
        return sim.requests.entries()

    @router.delete("/requests")
    async def clear_requests() -> Any:
        sim.requests.clear()
        return {"ok": True}

    return router
