"""The async wait for a Skytap copy, used by the deferrable operators and the sensor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_skytap.hooks.api import PROGRESS_LONGEST, ago, describe, readiness
from airflow_provider_skytap.hooks.skytap import (
    SkytapAPIError,
    SkytapAsyncHook,
    SkytapAuthError,
    SkytapNotFoundError,
    SkytapResourceFailedError,
    SkytapWaitTimeoutError,
)


class CloneCompleteTrigger(BaseTrigger):
    """Wait, off the worker, until an environment or template is no longer busy.

    Polls through :class:`SkytapAsyncHook` with the hook's own backoff (from ``poll_interval``
    up to ``max_poll_interval``) and logs the state, the time since the wait began and the
    next check on the schedule of every wait (``hooks.api.progress_gap``: every 10 s for
    2 min, every 30 s to 10 min, then every poll pause, at most ``log_every`` apart). A call
    that fails even after the hook's retries is logged and the wait goes on, so a Skytap
    outage shorter than the timeout does not fail the task.

    Fires one event, ``{"status": "success" | "error", "reason": ..., "message": ...,
    "kind": ..., "resource_id": ..., "name": ..., "end_time": ..., "carry": {...}}``;
    ``reason`` is ``ready``, ``failed`` (Skytap filled in ``error``), ``not_found``,
    ``timeout`` or ``auth``.

    :param kind: ``environment`` or ``template``
    :param resource_id: the Skytap id to wait for
    :param skytap_conn_id: a connection of type ``skytap``
    :param end_time: when to give up, as a UNIX timestamp (survives a triggerer restart)
    :param poll_interval: first pause between polls, in seconds
    :param max_poll_interval: longest pause between polls, in seconds
    :param log_every: the longest gap between two progress lines, seconds
    :param started_at: when the wait began, as a UNIX timestamp (default: now); the elapsed
        time in the log counts from it, across outages and triggerer restarts
    :param carry: primitives handed back in the event's ``carry`` (what the task needs when
        it resumes; ``dag.test()`` drops the deferral's kwargs, so they travel here too)
    """

    def __init__(
        self,
        *,
        kind: str,
        resource_id: str,
        skytap_conn_id: str,
        end_time: float,
        poll_interval: float = 10.0,
        max_poll_interval: float = 300.0,
        log_every: float = PROGRESS_LONGEST,
        carry: dict[str, Any] | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.resource_id = str(resource_id)
        self.skytap_conn_id = skytap_conn_id
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.log_every = float(log_every)
        self.carry = dict(carry or {})
        self.started_at = time.time() if started_at is None else float(started_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kind": self.kind,
                "resource_id": self.resource_id,
                "skytap_conn_id": self.skytap_conn_id,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "log_every": self.log_every,
                "carry": self.carry,
                "started_at": self.started_at,
            },
        )

    def _event(self, status: str, reason: str, message: str, name: Any = None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "reason": reason,
                "message": message,
                "kind": self.kind,
                "resource_id": self.resource_id,
                "name": name,
                "end_time": self.end_time,
                "carry": self.carry,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = SkytapAsyncHook(self.skytap_conn_id, logger=self.log)  # lines in the task's log
        label = describe(self.kind, self.resource_id)  # type: ignore[arg-type]
        self.log.info(
            "Waiting until %s is no longer busy (deferred; began %s ago)",
            label,
            ago(max(0.0, time.time() - self.started_at)),
        )
        while True:
            remaining = self.end_time - time.time()
            if remaining <= 0:
                yield self._event("error", "timeout", f"{label} was still busy at the timeout")
                return
            try:
                resource = await hook.wait_until_ready(
                    self.kind,  # type: ignore[arg-type]
                    self.resource_id,
                    timeout=remaining,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    log_every=self.log_every,
                    already=max(0.0, time.time() - self.started_at),
                )
            except SkytapResourceFailedError as err:
                yield self._event("error", "failed", str(err))
                return
            except SkytapNotFoundError as err:
                yield self._event("error", "not_found", f"{label} is gone: {err}")
                return
            except SkytapWaitTimeoutError as err:
                yield self._event("error", "timeout", str(err))
                return
            except SkytapAuthError as err:
                yield self._event("error", "auth", str(err))
                return
            except SkytapAPIError as err:
                pause = min(self.max_poll_interval, max(self.poll_interval, 1.0))
                self.log.warning("%s: %s; still waiting, next look in %.0f s", label, err, pause)
                await asyncio.sleep(min(pause, max(0.0, self.end_time - time.time())))
                continue
            state = readiness(self.kind, resource)  # type: ignore[arg-type]
            yield self._event(
                "success",
                "ready",
                f"{describe(self.kind, self.resource_id, resource)} is ready ({state.detail})",  # type: ignore[arg-type]
                resource.get("name"),
            )
            return
