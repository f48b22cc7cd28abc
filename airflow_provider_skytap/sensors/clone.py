"""Wait until a Skytap copy (environment or template) is ready."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from airflow_provider_skytap.exceptions import (
    CloneFailedError,
    SkytapNotFoundError,
    SkytapResourceFailedError,
    SkytapWaitTimeoutError,
)
from airflow_provider_skytap.hooks.api import (
    PROGRESS_LONGEST,
    ago,
    check_id,
    check_kind,
    describe,
    readiness,
)
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID, SkytapHook
from airflow_provider_skytap.triggers.clone import CloneCompleteTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class CloneCompleteSensor(BaseSensorOperator):
    """Wait until an environment (``runstate`` not busy) or a template (``busy`` false) is ready.

    Works in ``poke``, ``reschedule`` and deferrable modes; ``timeout`` and ``soft_fail``
    (skip instead of fail at the timeout) apply in all three. When Skytap fills in the copy's
    ``error``, or the copy disappears (404), the task fails at once, naming the resource and
    carrying Skytap's message. Returns the resource's id, kind, name and region.

    :param resource_id: the environment or template id, e.g. ``clone.output["id"]``
    :param kind: ``environment`` or ``template``, e.g. ``clone.output["kind"]``
    :param deferrable: wait in the triggerer, holding no worker slot
    :param max_poll_interval: longest pause between polls, seconds: pokes (and a deferred
        wait's polls) start ``poke_interval`` apart and grow 1.5x each time up to this
    :param log_every: the longest gap between two progress lines, seconds (see
        ``hooks.api.progress_gap``; poke and deferred modes alike)
    :param skytap_conn_id: a connection of type ``skytap``
    """

    template_fields: Sequence[str] = ("resource_id", "kind")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        resource_id: str | int,
        kind: str = "template",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float = 60.0,
        log_every: float = PROGRESS_LONGEST,
        skytap_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10.0)
        kwargs.setdefault("timeout", 4 * 3600)
        super().__init__(**kwargs)
        self.resource_id = resource_id
        self.kind = kind
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval
        self.log_every = log_every
        self.skytap_conn_id = skytap_conn_id

    @cached_property
    def hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)

    def _checked(self) -> tuple[Any, str]:
        return check_kind(self.kind), check_id(self.resource_id, "resource_id")

    def poke(self, context: Context) -> bool | Any:
        kind, rid = self._checked()
        try:
            resource = self.hook.get_resource(kind, rid)
        except SkytapNotFoundError as err:
            raise CloneFailedError(f"{describe(kind, rid)} is gone: {err}") from err
        state = readiness(kind, resource)
        label = describe(kind, rid, resource)
        if state.state == "failed":
            raise CloneFailedError(f"{label} failed: {state.detail}")
        if state.state == "busy":
            ti = context.get("ti")
            # Reschedule mode: since the first poke (Airflow's own measure for the timeout).
            first = getattr(ti, "get_first_reschedule_date", None) if self.reschedule else None
            started = first(context) if first else getattr(ti, "start_date", None)
            if isinstance(started, datetime):
                spent = (datetime.now(timezone.utc) - started).total_seconds()
                self.log.info(
                    "%s: still busy after %s (%s); next check in %s",
                    label,
                    ago(spent),
                    state.detail,
                    ago(float(self.poke_interval)),
                )
            else:
                self.log.info("%s is still busy (%s)", label, state.detail)
            return False
        self.log.info("%s is ready (%s)", label, state.detail)
        return True

    def execute(self, context: Context) -> Any:
        kind, rid = self._checked()
        if self.deferrable:
            if self.poke(context):
                return self._summary(kind, rid)
            self.defer(
                trigger=CloneCompleteTrigger(
                    kind=kind,
                    resource_id=rid,
                    skytap_conn_id=self.skytap_conn_id,
                    end_time=time.time() + float(self.timeout),
                    poll_interval=float(self.poke_interval),
                    max_poll_interval=float(self.max_poll_interval),
                    log_every=float(self.log_every),
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=float(self.timeout) + 300),
            )
        if self.reschedule or self.exponential_backoff:
            super().execute(context)  # Airflow's own pauses
            return self._summary(kind, rid)
        # Poke mode: the pauses every wait of the provider makes (hooks.api.poll_pauses), from
        # poke_interval growing 1.5x per poke up to max_poll_interval, by the hook's own wait.
        try:
            self.hook.wait_until_ready(
                kind,
                rid,
                timeout=float(self.timeout),
                poll_interval=float(self.poke_interval),
                max_poll_interval=max(float(self.poke_interval), float(self.max_poll_interval)),
                log_every=float(self.log_every),
            )
        except SkytapWaitTimeoutError as err:
            if self.soft_fail:
                raise AirflowSkipException(str(err)) from err
            raise AirflowSensorTimeout(str(err)) from err
        except SkytapNotFoundError as err:
            raise CloneFailedError(f"{describe(kind, rid)} is gone: {err}") from err
        except SkytapResourceFailedError as err:
            raise CloneFailedError(f"{describe(kind, rid)} failed: {err}") from err
        return self._summary(kind, rid)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Back from the trigger: the timeout is a sensor timeout, any other error a failure."""
        kind, rid = self._checked()
        if not isinstance(event, dict) or event.get("status") != "success":
            message = str(event.get("message") if isinstance(event, dict) else event)
            if isinstance(event, dict) and event.get("reason") == "timeout":
                raise AirflowSensorTimeout(message)
            raise CloneFailedError(message)
        return self._summary(kind, rid)

    def _summary(self, kind: Any, rid: str) -> dict[str, Any]:
        resource = self.hook.get_resource(kind, rid)
        return {
            "id": rid,
            "kind": kind,
            "name": resource.get("name"),
            "region": resource.get("region"),
        }
