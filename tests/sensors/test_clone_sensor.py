"""CloneCompleteSensor in poke, reschedule and deferrable modes, and CloneCompleteTrigger."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timedelta, timezone
from itertools import islice
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
)

from airflow_provider_skytap.hooks.api import poll_pauses
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.sensors.clone import CloneCompleteSensor, CloneFailedError
from airflow_provider_skytap.triggers.clone import CloneCompleteTrigger
from tests.tasks import context, first_event, rebuild, run_task

ENV = "1001"


def sensor(conn: str, rid: str, kind: str = "template", **kwargs: Any) -> CloneCompleteSensor:
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("max_poll_interval", 0.3)
    kwargs.setdefault("timeout", 30)
    with DAG("sensor_test", schedule=None):
        return CloneCompleteSensor(
            task_id="wait", resource_id=rid, kind=kind, skytap_conn_id=conn, **kwargs
        )


def reschedule_ctx(first_try: datetime | None = None) -> Any:
    """Reschedule mode asks the task instance when it was first rescheduled."""
    ctx = context()

    class TI:
        def get_first_reschedule_date(self, _: Any) -> datetime | None:
            return first_try

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    ctx["ti"] = TI()
    return ctx


def busy_template(hook: SkytapHook, sim: Any, seconds: float = 1.0) -> str:
    sim.admin.config(copy_seconds=seconds)
    return str(hook.save_as_template(ENV, name="being saved")["id"])


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_waits_until_the_template_is_ready(
    skytap_conn: str, hook: SkytapHook, sim: Any, deferrable: bool
) -> None:
    tid = busy_template(hook, sim)
    outcome = run_task(sensor(skytap_conn, tid, deferrable=deferrable))
    assert outcome.result == {
        "id": tid,
        "kind": "template",
        "name": "being saved",
        "region": "US-West",
    }
    assert not hook.get_template(tid)["busy"]
    assert len(outcome.deferrals) == (1 if deferrable else 0)


def test_waits_until_an_environment_copy_leaves_busy(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    sim.admin.config(copy_seconds=1)
    eid = str(hook.copy_environment(ENV, name="env copy")["id"])
    result = run_task(sensor(skytap_conn, eid, kind="environment", deferrable=True)).result
    assert result["kind"] == "environment"
    assert hook.get_environment(eid)["runstate"] != "busy"


def test_reschedule_mode_gives_the_slot_back_while_busy(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    tid = busy_template(hook, sim, seconds=5)
    op = sensor(skytap_conn, tid, mode="reschedule")
    with pytest.raises(AirflowRescheduleException):
        op.execute(reschedule_ctx())
    sim.admin.config(copy_seconds=0.1)
    ready = str(hook.save_as_template(ENV, name="quick")["id"])
    time.sleep(0.5)
    op = sensor(skytap_conn, ready, mode="reschedule")
    assert op.execute(reschedule_ctx())["name"] == "quick"


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_a_failed_copy_fails_at_once_with_skytaps_message_even_with_soft_fail(
    skytap_conn: str, hook: SkytapHook, sim: Any, mode: str
) -> None:
    sim.admin.faults(fail_next_copy="Disk copy failed")
    tid = busy_template(hook, sim, seconds=0.5)
    op = sensor(
        skytap_conn,
        tid,
        soft_fail=True,
        deferrable=mode == "deferrable",
        mode="reschedule" if mode == "reschedule" else "poke",
        poke_interval=0.2,
    )
    ctx = reschedule_ctx()

    def until_not_rescheduled() -> None:
        for _ in range(20):  # reschedule mode: each try is one poke
            try:
                run_task(op, ctx)
            except AirflowRescheduleException:
                time.sleep(0.2)
            else:
                return

    started = time.monotonic()
    with pytest.raises(CloneFailedError, match=rf"template {tid} \('being saved'\).*Disk copy"):
        until_not_rescheduled()
    assert time.monotonic() - started < 20  # failed, not timed out (timeout is 30 s)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_a_missing_resource_fails_naming_it(skytap_conn: str, sim: Any, deferrable: bool) -> None:
    op = sensor(skytap_conn, "99999", soft_fail=True, deferrable=deferrable)
    with pytest.raises(CloneFailedError, match="template 99999 is gone"):
        run_task(op)


def test_a_resource_that_disappears_while_deferred_fails_naming_it(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    """Skytap answers 404 for a copy mid-wait (the simulator cannot delete a busy copy, so
    its fault rules give the 404 over real HTTP)."""
    sim.admin.config(copy_seconds=30)
    eid = str(hook.copy_environment(ENV, name="vanishing")["id"])
    sim.admin.faults(
        rules=[{"method": "GET", "path": f"/v2/configurations/{eid}", "status": 404, "count": None}]
    )
    trigger = CloneCompleteTrigger(
        kind="environment",
        resource_id=eid,
        skytap_conn_id=skytap_conn,
        end_time=time.time() + 30,
        poll_interval=0.1,
    )
    event = asyncio.run(first_event(trigger))
    assert (event["status"], event["reason"]) == ("error", "not_found")
    assert event["message"].startswith(f"environment {eid} is gone")


@pytest.mark.parametrize(
    ("mode", "soft_fail", "expected"),
    [
        ("poke", False, AirflowSensorTimeout),
        ("poke", True, AirflowSkipException),
        ("deferrable", False, AirflowSensorTimeout),
    ],
)
def test_timeout_and_soft_fail(
    skytap_conn: str, hook: SkytapHook, sim: Any, mode: str, soft_fail: bool, expected: type
) -> None:
    tid = busy_template(hook, sim, seconds=30)
    op = sensor(skytap_conn, tid, timeout=1, soft_fail=soft_fail, deferrable=mode == "deferrable")
    with pytest.raises(expected):
        run_task(op)


def test_each_reschedule_poke_logs_the_time_since_the_first(
    skytap_conn: str, hook: SkytapHook, sim: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tid = busy_template(hook, sim, seconds=30)
    op = sensor(skytap_conn, tid, mode="reschedule", timeout=3600, poke_interval=60)
    capsys.readouterr()
    with pytest.raises(AirflowRescheduleException):
        op.execute(reschedule_ctx(datetime.now(timezone.utc) - timedelta(seconds=150)))
    out = capsys.readouterr().out
    assert re.search(rf"template {tid} .*: still busy after 2 min 3\d s \(busy True\)", out), out
    assert "; next check in 60 s" in out


@pytest.mark.parametrize(
    ("soft_fail", "expected"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)]
)
def test_reschedule_mode_times_out_from_the_first_try(
    skytap_conn: str, hook: SkytapHook, sim: Any, soft_fail: bool, expected: type
) -> None:
    tid = busy_template(hook, sim, seconds=30)
    op = sensor(skytap_conn, tid, timeout=60, soft_fail=soft_fail, mode="reschedule")
    with pytest.raises(AirflowRescheduleException):  # 10 s into a 60 s timeout: look later
        op.execute(reschedule_ctx(datetime.now(timezone.utc) - timedelta(seconds=10)))
    with pytest.raises(expected):  # 61 s after the first try: the timeout is spent
        op.execute(reschedule_ctx(datetime.now(timezone.utc) - timedelta(seconds=61)))


def test_deferred_timeout_with_soft_fail_skips(
    skytap_conn: str, hook: SkytapHook, sim: Any
) -> None:
    """Airflow resumes a deferred sensor through resume_execution, which applies soft_fail."""
    tid = busy_template(hook, sim, seconds=30)
    op = sensor(skytap_conn, tid, timeout=1, soft_fail=True, deferrable=True)
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    event = asyncio.run(first_event(rebuild(deferred.value.trigger)))
    assert event["reason"] == "timeout"
    with pytest.raises(AirflowSkipException):
        op.resume_execution("execute_complete", {"event": event}, context())
    # ...while a failure is never turned into a skip
    failed = {**event, "reason": "failed", "message": "template failed: Disk copy failed"}
    with pytest.raises(CloneFailedError):
        op.resume_execution("execute_complete", {"event": failed}, context())


def test_trigger_serializes_to_primitives_and_back() -> None:
    trigger = CloneCompleteTrigger(
        kind="template",
        resource_id="5001",
        skytap_conn_id="skytap_default",
        end_time=1_800_000_000.5,
        poll_interval=5,
        max_poll_interval=120,
        log_every=300,
        carry={"id": "7", "created": True},
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_skytap.triggers.clone.CloneCompleteTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # primitives only
    again = rebuild(trigger)
    assert again.serialize() == (classpath, kwargs)


def test_trigger_survives_an_outage_and_logs_progress(
    skytap_conn: str, hook: SkytapHook, sim: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Every GET fails for a while (longer than the hook's retry deadline); the wait goes on."""
    from tests.conftest import set_connection

    set_connection(monkeypatch, "skytap_short", sim.url, sim.username, sim.token, retry_deadline=1)
    tid = busy_template(hook, sim, seconds=8)
    sim.admin.faults(
        rules=[{"method": "GET", "path": f"/v2/templates/{tid}", "status": 503, "count": 4}]
    )
    trigger = CloneCompleteTrigger(
        kind="template",
        resource_id=tid,
        skytap_conn_id="skytap_short",
        end_time=time.time() + 60,
        poll_interval=0.5,
        max_poll_interval=1,
        log_every=1,
    )
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "success" and event["resource_id"] == tid
    out = capsys.readouterr().out
    assert "still waiting" in out  # gave up on a call, kept waiting
    assert f"template {tid}" in out and "still busy after" in out


def test_poke_mode_backs_off_from_poke_interval_to_max_poll_interval(
    skytap_conn: str, hook: SkytapHook, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """frozen_copy's wait pokes 2 s apart growing to 5 s; here 0.05 s growing to 0.2 s."""
    import airflow_provider_skytap.hooks.skytap as base

    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    clock = SimpleNamespace(sleep=sleep, monotonic=time.monotonic, time=time.time)
    monkeypatch.setattr(base, "time", clock)
    tid = busy_template(hook, sim, seconds=1.5)
    result = run_task(sensor(skytap_conn, tid, poke_interval=0.05, max_poll_interval=0.2)).result
    assert result["id"] == tid
    assert len(pauses) >= 6
    assert pauses == pytest.approx(list(islice(poll_pauses(0.05, 0.2), len(pauses))))
    assert pauses[:5] == pytest.approx([0.05, 0.075, 0.1125, 0.16875, 0.2])
