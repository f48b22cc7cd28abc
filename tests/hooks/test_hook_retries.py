"""Retry classes, Retry-After, the no-duplicate-POST rule and a 30% fault storm, over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import RetryPolicy, SkytapAPIError
from airflow_provider_skytap.hooks.skytap import SkytapHook
from tests.helpers import api_requests, live_named

ENV = "1001"
ENV_PATH = f"/v2/configurations/{ENV}"


def statuses(sim: Any, method: str, path: str) -> list[int]:
    return [r["status"] for r in api_requests(sim) if r["method"] == method and r["path"] == path]


@pytest.mark.parametrize(
    "fault",
    [
        {"action": "error", "status": 423},
        {"action": "error", "status": 429},
        {"action": "error", "status": 500},
        {"action": "error", "status": 503},
        {"action": "drop"},
    ],
    ids=["423", "429", "500", "503", "dropped"],
)
def test_transient_failures_of_a_read_are_retried(hook: SkytapHook, sim: Any, fault: dict) -> None:
    sim.admin.faults(rules=[{"method": "GET", "path": ENV_PATH, "count": 2, **fault}])
    assert hook.get_environment(ENV)["id"] == ENV
    seen = statuses(sim, "GET", ENV_PATH)
    assert len(seen) == 3 and seen[-1] == 200


def test_retry_after_is_honoured(hook: SkytapHook, sim: Any) -> None:
    sim.admin.faults(
        retry_after_s=2,
        rules=[{"method": "GET", "path": ENV_PATH, "action": "error", "status": 429, "count": 1}],
    )
    hook.get_environment(ENV)
    times = [r["t"] for r in api_requests(sim) if r["path"] == ENV_PATH]
    assert len(times) == 2
    assert times[1] - times[0] >= 1.9  # the fast test policy alone would wait < 0.5 s


def test_a_locked_source_is_waited_for(hook: SkytapHook, sim: Any) -> None:
    """A second copy while the first reads the source gets 423 and goes through after."""
    sim.admin.config(copy_seconds=1)
    hook.save_as_template(ENV, name="first")
    second = hook.copy_environment(ENV, name="second")
    assert second["name"] == "second"
    posts = statuses(sim, "POST", "/configurations")
    assert 423 in posts and posts[-1] == 200


def test_the_retry_deadline_bounds_a_call(skytap_conn: str, sim: Any) -> None:
    sim.admin.faults(error_rates={"503": 1.0})
    impatient = SkytapHook(skytap_conn, retry_policy=RetryPolicy(deadline=1, base=0.1, cap=0.2))
    with pytest.raises(SkytapAPIError, match=r"get environment 1001: HTTP 503.*gave up after"):
        impatient.get_environment(ENV)


CREATES: dict[str, tuple[str, Callable[[SkytapHook, str], dict[str, Any]]]] = {
    "copy environment": ("/configurations", lambda h, n: h.copy_environment(ENV, name=n)),
    "save as template": ("/templates", lambda h, n: h.save_as_template(ENV, name=n)),
    "copy to region": (
        "/templates",
        lambda h, n: h.copy_template("5001", name=n, target_region="EMEA"),
    ),
}
AFTER_FAULTS = {
    "503 after creating": {"action": "error", "status": 503},
    "dropped after creating": {"action": "drop"},
    "timeout after creating": {"action": "delay", "seconds": 3},  # the hook's timeout is 1 s
}


@pytest.mark.parametrize("fault", AFTER_FAULTS.values(), ids=AFTER_FAULTS.keys())
@pytest.mark.parametrize("create", CREATES.values(), ids=CREATES.keys())
def test_a_post_that_created_but_failed_to_answer_is_not_sent_again(
    sim: Any,
    monkeypatch: pytest.MonkeyPatch,
    create: tuple[str, Callable[[SkytapHook, str], dict[str, Any]]],
    fault: dict,
) -> None:
    from tests.conftest import FAST, set_connection

    path, make = create
    set_connection(monkeypatch, "short", sim.url, sim.username, sim.token, timeout=1)
    sim.admin.faults(rules=[{"method": "POST", "path": path, "after": True, "count": 1, **fault}])
    made = make(SkytapHook("short", retry_policy=FAST), "nightly 2026-11-24")

    copies = live_named(sim, "nightly 2026-11-24")
    assert [c["id"] for c in copies] == [made["id"]]
    log = api_requests(sim)
    posts = [r for r in log if r["method"] == "POST"]
    assert len(posts) == 1  # found by name, so never sent again
    lookups = [r for r in log if r["method"] == "GET" and r["path"].startswith("/v2/")]
    assert lookups, "the hook must look the copy up by name"


def test_a_post_refused_before_creating_is_sent_again_once(hook: SkytapHook, sim: Any) -> None:
    sim.admin.faults(
        rules=[{"method": "POST", "path": "/configurations", "action": "error", "status": 503}]
    )
    made = hook.copy_environment(ENV, name="second try")
    assert [c["id"] for c in live_named(sim, "second try")] == [made["id"]]
    assert statuses(sim, "POST", "/configurations") == [503, 200]


def test_an_unnamed_copy_gets_a_unique_name_so_a_retry_can_find_it(
    hook: SkytapHook, sim: Any
) -> None:
    sim.admin.faults(
        rules=[{"method": "POST", "path": "/configurations", "action": "drop", "after": True}]
    )
    made = hook.copy_environment(ENV)
    assert made["name"].startswith(f"skytap-copy-of-environment-{ENV}-")
    assert len(live_named(sim, made["name"])) == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_call_survives_30_percent_423_429_503(hook: SkytapHook, sim: Any, seed: int) -> None:
    """The foundation's bar: 30% of requests fail, every call succeeds, nothing doubles."""
    sim.admin.faults(
        seed=seed,
        error_rates={"423": 0.1, "429": 0.1, "503": 0.1},
        ambiguous_fraction=0.5,
        retry_after_s=0,
    )
    tag = f"storm-{seed}"
    env = hook.get_environment(ENV)
    copy = hook.copy_environment(env["id"], name=f"{tag} copy")
    template = hook.save_as_template(env["id"], name=f"{tag} template", description=tag)
    hook.wait_until_ready("environment", copy["id"], timeout=60, poll_interval=0.1)
    hook.wait_until_ready("template", template["id"], timeout=60, poll_interval=0.1)
    dr = hook.copy_template(template["id"], name=f"{tag} DR", target_region="EMEA")
    hook.wait_until_ready("template", dr["id"], timeout=60, poll_interval=0.1)
    hook.add_tags("template", dr["id"], [tag])
    assert [t["id"] for t in hook.list_resources("template", tags=[tag])] == [dr["id"]]
    hook.update("environment", copy["id"], description="checked")
    hook.delete("environment", copy["id"], timeout=60)

    for name in (f"{tag} template", f"{tag} DR"):
        assert len(live_named(sim, name)) == 1, name
    assert live_named(sim, f"{tag} copy") == []
    state = sim.admin.state()
    made = [e for e in state["environments"] if e["name"] == f"{tag} copy"]
    assert len(made) == 1  # one copy ever made (now deleted), not one per retry

    log = api_requests(sim)
    injected = [r for r in log if r.get("fault")]
    assert len(injected) >= 0.15 * len(log), f"{len(injected)} faults in {len(log)} requests"
    print(f"seed {seed}: {len(log)} requests, {len(injected)} failed by injection")


def test_an_older_resource_with_the_same_name_is_not_taken_for_the_new_copy(
    hook: SkytapHook, sim: Any
) -> None:
    older = hook.copy_environment(ENV, name="same name")
    hook.wait_until_ready("environment", older["id"], timeout=30, poll_interval=0.1)
    sim.admin.faults(
        rules=[{"method": "POST", "path": "/configurations", "action": "error", "status": 503}]
    )
    newer = hook.copy_environment(ENV, name="same name")
    assert newer["id"] != older["id"]
    assert sorted(c["id"] for c in live_named(sim, "same name")) == sorted(
        [older["id"], newer["id"]]
    )
