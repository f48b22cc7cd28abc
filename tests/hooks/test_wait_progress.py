"""Every long wait logs its state, the time spent and the next check on one schedule.

The schedule (``hooks.api.progress_gap``): every 10 s in the first 2 min, every 30 s to
10 min, then every poll pause (at least 30 s), at most ``log_every`` apart. The real-HTTP tests
run a 3-minute region copy in the simulator with time scaled 30x (6 s of wall time): the hook's
clock runs 30x faster and its pauses are 30x shorter, and the log must show the lines a user
would read at 0 s, 10 s, ... 2 min, 2 min 30 s, deferred (the trigger) and not.
"""

from __future__ import annotations

import asyncio
import re
import time
import types
from typing import Any

import pytest

import airflow_provider_skytap.hooks.skytap as hook_module
from airflow_provider_skytap.hooks.api import Progress, ago, progress_gap
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.triggers.clone import CloneCompleteTrigger

TEMPLATE = "5001"  # base-linux, US-West (the simulator's default seed)
SCALE = 30.0  # one wall second is half a simulated minute


def schedule(until: float, pause: float, longest: float = 300.0) -> list[float]:
    """The elapsed seconds at which a wait polled every ``pause`` logs, up to ``until``."""
    progress, points = Progress(longest=longest), []
    elapsed = 0.0
    while elapsed <= until:
        if progress.due(elapsed, pause):
            points.append(elapsed)
        elapsed = min(progress.next_at, (elapsed // pause + 1) * pause)
    return points


def test_the_schedule_is_often_at_first_then_the_poll_interval_capped() -> None:
    assert progress_gap(0, 600) == 10 and progress_gap(119, 600) == 10
    assert progress_gap(120, 600) == 30 and progress_gap(599, 600) == 30
    assert progress_gap(600, 60) == 60  # then the poll interval ...
    assert progress_gap(600, 600) == 300  # ... at most 5 min apart
    assert progress_gap(600, 2) == 30  # ... and at least 30 s (a fast poll does not flood)
    assert progress_gap(5, 600, longest=4) == 4  # log_every caps every step
    points = schedule(900, pause=600)
    assert points[:13] == [float(s) for s in range(0, 121, 10)]
    assert points[13:29] == [float(s) for s in range(150, 601, 30)]
    assert points[29:] == [900.0]
    # between two polls further apart than the schedule, the lines still come
    progress = Progress()
    assert progress.due(0.0, 600.0) and progress.next_at == 10.0


def test_a_poll_that_comes_late_does_not_flood_the_log() -> None:
    progress = Progress()
    assert progress.due(0.0, 60.0)
    assert progress.due(95.0, 60.0)  # a retry held the poll up: one line, not ten
    assert not progress.due(99.0, 60.0) and progress.due(100.0, 60.0)


def test_durations_read_as_a_user_reads_them() -> None:
    assert ago(0.4) == "0.4 s"
    assert ago(42) == "42 s" and ago(150) == "2 min 30 s" and ago(180) == "3 min"
    assert ago(7500) == "2 h 5 min"


def elapsed_of(line: str) -> float:
    """The elapsed seconds a progress line shows ("after 2 min 30 s (")."""
    found = re.search(r"after ((?:\d+ min)?(?: ?[\d.]+ s)?) \(", line)
    assert found, line
    text = found.group(1)
    minutes = re.search(r"(\d+) min", text)
    seconds = re.search(r"([\d.]+) s", text)
    return (int(minutes.group(1)) * 60 if minutes else 0) + (
        float(seconds.group(1)) if seconds else 0
    )


@pytest.fixture
def scaled_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks' clock runs ``SCALE`` times faster and their pauses are that much shorter."""
    start = time.monotonic()

    def clock() -> float:
        return start + (time.monotonic() - start) * SCALE

    async def async_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / SCALE)

    monkeypatch.setattr(
        hook_module,
        "time",
        types.SimpleNamespace(sleep=lambda s: time.sleep(s / SCALE), time=time.time),
    )
    monkeypatch.setattr(hook_module, "asyncio", types.SimpleNamespace(sleep=async_sleep))
    make_api = hook_module._SkytapHookBase._make_api

    def scaled_api(self: Any, settings: Any) -> Any:
        api = make_api(self, settings)
        api.clock = clock
        return api

    monkeypatch.setattr(hook_module._SkytapHookBase, "_make_api", scaled_api)


def region_copy(hook: SkytapHook, sim: Any) -> str:
    """A DR copy of a template to EMEA that Skytap (the simulator) takes 3 minutes to make."""
    sim.admin.config(region_copy_seconds=180 / SCALE)
    return str(hook.copy_template(TEMPLATE, name="dr progress", target_region="EMEA")["id"])


def check_lines(lines: list[str], tid: str) -> None:
    still = [line for line in lines if "still busy after" in line]
    assert still, lines
    for line in still:
        assert f"template {tid} ('dr progress')" in line
        assert "(busy True" in line and "; next check in " in line
    shown = [elapsed_of(line) for line in still]
    expected = [float(s) for s in range(0, 121, 10)] + [float(s) for s in range(150, 600, 30)]
    # Each line lands on a point of the schedule, a little after it (a request's time is
    # scaled 30x too: 5 ms read 0.15 s, 200 ms on a loaded machine 6 s; the first, opening a
    # connection, up to 12 s).
    points = []
    for number, got in enumerate(shown):
        point = max(p for p in expected if p <= got + 1)
        assert got - point <= (12 if number == 0 else 6), (shown, expected)
        points.append(point)
    assert points == sorted(set(points)), shown  # one line per point, none skipped ...
    assert set(expected[1:15]) <= set(points), shown  # ... up to the copy's end at 3 min
    # Polls 60 s growing 1.5x apart (0, 60, 150, 285 s) see it ready at the first after 3 min.
    ready = [line for line in lines if f"template {tid} ('dr progress') is ready after" in line]
    assert len(ready) == 1, ready
    found = re.search(r"ready after (\d+) min (\d+) s", ready[0])
    assert found and 285 <= int(found.group(1)) * 60 + int(found.group(2)) <= 300, ready
    assert max(shown) < 285, shown


def test_a_region_copy_logs_its_state_on_the_schedule(
    hook: SkytapHook, sim: Any, scaled_time: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tid = region_copy(hook, sim)
    capsys.readouterr()
    # the region copy operator's own pauses: 60 s growing to 10 min
    hook.wait_until_ready("template", tid, timeout=3600, poll_interval=60, max_poll_interval=600)
    check_lines(capsys.readouterr().out.splitlines(), tid)  # the task log goes to stdout here


def test_a_deferred_region_copy_logs_on_the_same_schedule(
    skytap_conn: str,
    hook: SkytapHook,
    sim: Any,
    scaled_time: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tid = region_copy(hook, sim)
    trigger = CloneCompleteTrigger(
        kind="template",
        resource_id=tid,
        skytap_conn_id=skytap_conn,
        end_time=time.time() + 600,
        poll_interval=60,
        max_poll_interval=600,
    )

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    capsys.readouterr()
    event = asyncio.run(first_event())
    assert event["status"] == "success", event
    lines = capsys.readouterr().out.splitlines()
    assert any("Waiting until template" in line and "deferred" in line for line in lines)
    check_lines(lines, tid)
