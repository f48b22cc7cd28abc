"""Run operators in-process the way a worker and a triggerer would, against the simulator.

A deferral is carried out as Airflow does it: the trigger is serialized, rebuilt from its
classpath and kwargs (as the triggerer does), run to its first event, and the task resumes
in the named method with the event and the deferral's kwargs. Full DAG runs with the real
scheduler pieces are in tests/system/.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import BaseTrigger

LOGICAL_DATE = datetime(2026, 11, 24, tzinfo=timezone.utc)


@dataclass
class TaskInstance:
    """The one piece of a running task instance the operators use: pushing XComs."""

    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def context(logical_date: datetime | None = LOGICAL_DATE, run_id: str | None = None) -> Any:
    """A task context: logical date (None for a manual run without one), run id, ti."""
    stamp = (logical_date or datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc)).isoformat()
    return {
        "ti": TaskInstance(),
        "logical_date": logical_date,
        "run_id": run_id or f"scheduled__{stamp}",
        "dag_run": SimpleNamespace(
            run_after=logical_date or datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc)
        ),
    }


def rebuild(trigger: BaseTrigger) -> BaseTrigger:
    """The trigger as the triggerer gets it: from ``serialize()`` alone."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)  # type: ignore[no-any-return]


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload  # type: ignore[no-any-return]
    raise AssertionError(f"{trigger!r} ended without an event")


@dataclass
class Outcome:
    result: Any
    deferrals: list[TaskDeferred]


def run_task(op: Any, ctx: Any | None = None, *, max_deferrals: int = 10) -> Outcome:
    """Execute ``op``, carrying out each deferral until it returns (or raises)."""
    ctx = ctx if ctx is not None else context()
    deferrals: list[TaskDeferred] = []
    call: Any = lambda: op.execute(ctx)  # noqa: E731
    while True:
        try:
            return Outcome(call(), deferrals)
        except TaskDeferred as deferred:
            deferrals.append(deferred)
            if len(deferrals) > max_deferrals:
                raise AssertionError(f"more than {max_deferrals} deferrals") from None
            event = asyncio.run(first_event(rebuild(deferred.trigger)))
            method = getattr(op, deferred.method_name)
            kwargs = deferred.kwargs or {}
            call = lambda m=method, e=event, k=kwargs: m(ctx, event=e, **k)  # noqa: E731
