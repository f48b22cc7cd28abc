"""SkytapAsyncHook (httpx) runs the same plans as SkytapHook: the same rules hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import SkytapNotFoundError, SkytapResourceFailedError
from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook
from tests.helpers import api_requests, live_named


def test_async_wait_until_ready(hook: SkytapHook, async_hook: SkytapAsyncHook) -> None:
    copy = hook.copy_environment("1001", name="async wait")
    ready = asyncio.run(
        async_hook.wait_until_ready("environment", copy["id"], timeout=30, poll_interval=0.1)
    )
    assert ready["id"] == copy["id"] and ready["runstate"] != "busy"


def test_async_retries_busy_rate_limited_and_dropped(async_hook: SkytapAsyncHook, sim: Any) -> None:
    path = "/v2/templates/5001"
    sim.admin.faults(
        retry_after_s=0,
        rules=[
            {"method": "GET", "path": path, "action": "error", "status": 423, "count": 1},
            {"method": "GET", "path": path, "action": "error", "status": 429, "count": 1},
            {"method": "GET", "path": path, "action": "drop", "count": 1},
        ],
    )
    template = asyncio.run(async_hook.get_resource("template", "5001"))
    assert template["name"] == "base-linux"
    assert len([r for r in api_requests(sim) if r["path"] == path]) == 4


def test_async_no_duplicate_after_a_dropped_post(async_hook: SkytapAsyncHook, sim: Any) -> None:
    sim.admin.faults(
        rules=[{"method": "POST", "path": "/templates", "action": "drop", "after": True}]
    )

    async def save() -> dict[str, Any]:
        api = await async_hook.get_api()
        return await async_hook.run(api.save_as_template("1001", name="async save"))

    made = asyncio.run(save())
    assert [t["id"] for t in live_named(sim, "async save")] == [made["id"]]


def test_async_fail_fast_paths(hook: SkytapHook, async_hook: SkytapAsyncHook, sim: Any) -> None:
    sim.admin.faults(fail_copies=[{"name_prefix": "broken", "message": "Storage error"}])
    copy = hook.copy_environment("1001", name="broken copy")
    with pytest.raises(SkytapResourceFailedError, match="Storage error"):
        asyncio.run(
            async_hook.wait_until_ready("environment", copy["id"], timeout=30, poll_interval=0.1)
        )
    with pytest.raises(SkytapNotFoundError, match="get template 424242: HTTP 404"):
        asyncio.run(async_hook.get_resource("template", "424242"))
