"""Live clone of a running environment, and copies of a template to DR regions."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_provider_skytap import checks
from airflow_provider_skytap.backups import (
    backup_name,
    check_tags,
    consistency,
    consistency_tag,
    run_stamp,
    source_tag,
    time_tag,
    time_tags,
)
from airflow_provider_skytap.consistency import dag_source_tags
from airflow_provider_skytap.copies import CopyService, CopySpec, Target
from airflow_provider_skytap.exceptions import (
    InvalidValueError,
    SkytapAPIError,
    SkytapBusyError,
    SkytapError,
    SkytapResourceFailedError,
    SkytapWaitTimeoutError,
)
from airflow_provider_skytap.hooks.api import (
    PROGRESS_LONGEST,
    Kind,
    check_id,
    check_name,
    check_region,
    describe,
)
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID, SkytapHook
from airflow_provider_skytap.links import SkytapResourceLink, persist
from airflow_provider_skytap.triggers.clone import CloneCompleteTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

# Templated, so a DAG can take them from its params; checked in execute.
_WAIT_FIELDS = ("poll_interval", "max_poll_interval", "timeout", "log_every")


def raise_for_event(event: Mapping[str, Any] | None) -> None:
    """Turn a :class:`CloneCompleteTrigger` error event into the matching exception."""
    if not isinstance(event, Mapping):
        raise SkytapError(f"the wait ended without an event (got {event!r})")
    if event.get("status") == "success":
        return
    message = str(event.get("message") or event)
    reason = event.get("reason")
    if reason == "timeout":
        raise SkytapWaitTimeoutError(message)
    if reason in ("failed", "not_found"):
        raise SkytapResourceFailedError(message)
    raise SkytapError(message)


class _SkytapCopyOperator(BaseOperator):
    """The shared flow: find or make one copy, tag it, link it, then wait or defer."""

    source_kind: ClassVar[Kind]
    operator_extra_links = (SkytapResourceLink(),)
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 10.0,
        max_poll_interval: float = 60.0,
        timeout: float = 4 * 3600,
        log_every: float = PROGRESS_LONGEST,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        skytap_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.description = description
        self.tags = tags
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout
        self.log_every = log_every
        self.deferrable = deferrable
        self.skytap_conn_id = skytap_conn_id
        self._made: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)

    @cached_property
    def copies(self) -> CopyService:
        return CopyService(self.hook, self.log)

    # ---- what subclasses say

    def _source_id(self) -> str:
        raise NotImplementedError

    def _target(self, context: Context, source: Mapping[str, Any]) -> Target:
        raise NotImplementedError

    def _create(self, target: Target) -> dict[str, Any]:
        raise NotImplementedError

    # ---- the flow

    def _check_settings(self) -> None:
        checks.positive_seconds("poll_interval", self.poll_interval)
        checks.positive_seconds("max_poll_interval", self.max_poll_interval)
        checks.positive_seconds("timeout", self.timeout)
        checks.positive_seconds("log_every", self.log_every)
        if float(self.max_poll_interval) < float(self.poll_interval):
            raise ValueError(
                f"max_poll_interval ({self.max_poll_interval!r}) must not be less than "
                f"poll_interval ({self.poll_interval!r})"
            )
        if self.name is not None:
            check_name(self.name)
        if self.description is not None and not isinstance(self.description, str):
            raise ValueError(f"description must be a string, got {self.description!r}")
        check_tags(self.tags)

    def execute(self, context: Context) -> dict[str, Any]:
        try:  # a bad value fails the task at once: a retry would meet the same value
            self._check_settings()
        except InvalidValueError:
            raise
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        return self._start(context, time.time() + float(self.timeout))

    def _start(self, context: Context, deadline: float) -> dict[str, Any]:
        source_id = self._source_id()
        while True:
            source = self.hook.get_resource(self.source_kind, source_id)
            try:
                target = self._target(context, source)
            except ValueError as exc:
                raise InvalidValueError(str(exc)) from None
            found = self.copies.find(target)
            made = None if found is None else found.resource
            created = made is None
            if made is None:
                busy = self.copies.source_ready(self.source_kind, source_id, source)
                if busy is not None:
                    self._wait_for_source(source_id, deadline, busy)
                    continue
                try:
                    made = self._create(target)
                except SkytapAPIError as err:
                    if err.status != 423 and not isinstance(err, SkytapBusyError):
                        raise
                    # Busy or locked by another copy (another DR region, say): when
                    # deferrable at once (no worker slot spent sending the copy again),
                    # else past the hook's retry deadline. Wait for the source, look again.
                    self._wait_for_source(source_id, deadline, str(err))
                    continue
            break
        rid = str(made["id"])
        self._made = {"kind": target.kind, "id": rid, "name": target.name}
        self.copies.ensure_tags(target, made)
        url = self.hook.ui_url(target.kind, rid)
        result: dict[str, Any] = {
            "id": rid,
            "kind": target.kind,
            "name": target.name,  # renamed to it once ready, if Skytap did not apply it
            "region": made.get("region") or target.region,
            "source_kind": self.source_kind,
            "source_id": source_id,
            "created": created,
            "url": url,
        }
        persist(context, target.kind, rid, url)
        # One XCom per field too, so a DAG can pass ``clone.output["id"]`` downstream.
        for key in ("id", "kind", "name", "region"):
            context["ti"].xcom_push(key=key, value=result[key])
        self.log.info(
            "%s %s in %s from %s",
            "Made" if created else "Found (an earlier try or task requested it)",
            describe(target.kind, rid, made),
            result["region"],
            describe(self.source_kind, source_id),
        )
        return self._finish(result, deadline)

    def _wait_for_source(self, source_id: str, deadline: float, why: str) -> None:
        label = describe(self.source_kind, source_id)
        if time.time() >= deadline:
            raise SkytapWaitTimeoutError(f"{label} was still busy at the timeout ({why})")
        self.log.info("%s is busy (%s); waiting for it before copying", label, why)
        if self.deferrable:
            self.defer(
                trigger=self._trigger(self.source_kind, source_id, deadline),
                method_name="resume_after_source",
                timeout=self._defer_timeout(deadline),
            )
        self.hook.wait_until_ready(
            self.source_kind,
            source_id,
            timeout=max(0.0, deadline - time.time()),
            poll_interval=float(self.poll_interval),
            max_poll_interval=float(self.max_poll_interval),
            log_every=float(self.log_every),
        )

    def resume_after_source(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Back from waiting for a busy source: look again, then copy (or wait again)."""
        raise_for_event(event)
        return self._start(context, float(event["end_time"]))

    def _finish(self, result: dict[str, Any], deadline: float) -> dict[str, Any]:
        if not self.wait_for_completion:
            return result
        if self.deferrable:
            self.defer(
                trigger=self._trigger(result["kind"], result["id"], deadline, carry=result),
                method_name="execute_complete",
                timeout=self._defer_timeout(deadline),
            )
        resource = self.hook.wait_until_ready(
            result["kind"],
            result["id"],
            timeout=max(0.0, deadline - time.time()),
            poll_interval=float(self.poll_interval),
            max_poll_interval=float(self.max_poll_interval),
            log_every=float(self.log_every),
        )
        return self._completed(result, resource)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Back from the trigger: fail with Skytap's message, or finish."""
        raise_for_event(event)
        return self._completed(dict(event["carry"]))

    def _completed(
        self, result: dict[str, Any], resource: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        self.copies.finish(
            result["kind"],
            result["id"],
            name=result["name"],
            description=self.description,
            resource=resource,
        )
        self.log.info("%s is ready: %s", describe(result["kind"], result["id"]), result["url"])
        return result

    def _trigger(
        self, kind: Kind, resource_id: str, deadline: float, carry: dict[str, Any] | None = None
    ) -> CloneCompleteTrigger:
        return CloneCompleteTrigger(
            kind=kind,
            resource_id=resource_id,
            skytap_conn_id=self.skytap_conn_id,
            end_time=deadline,
            poll_interval=float(self.poll_interval),
            max_poll_interval=float(self.max_poll_interval),
            log_every=float(self.log_every),
            carry=carry,
        )

    @staticmethod
    def _defer_timeout(deadline: float) -> timedelta:
        # A backstop only: the trigger reports its own timeout with the resource's state.
        return timedelta(seconds=max(1.0, deadline - time.time()) + 300)

    def on_kill(self) -> None:
        """Say what happens to a copy in flight: it goes on, and the next try reuses it.

        Skytap has no call that cancels a copy, and a busy resource cannot be deleted, so
        killing this task leaves the copy running in Skytap. The next try of this task (or a
        re-run of the same date) finds it by name and waits for it instead of making another;
        if no run comes back to it, the retention operator removes it with the old backups.
        """
        if self._made:
            self.log.warning(
                "Task killed; %s goes on copying in Skytap (a copy cannot be cancelled). The "
                "next try reuses it by its name %r.",
                describe(self._made["kind"], self._made["id"]),
                self._made["name"],
            )
        else:
            self.log.warning("Task killed before any copy was requested; nothing to clean up")


class LiveCloneOperator(_SkytapCopyOperator):
    """Clone a running environment without stopping it: save it as a template, or copy it.

    Idempotent: the copy has a deterministic name (DAG, environment, logical date, or the run
    id for a manual run without one) and carries this provider's tags, so a retry, a re-run of
    the same date or a backfill reuses what an earlier try made. Returns
    ``{"id", "kind", "name", "region", "source_kind", "source_id", "created", "url"}``, and
    pushes ``id``, ``kind``, ``name`` and ``region`` as XComs of their own (as soon as the copy
    is requested), so ``clone.output["id"]`` works downstream.

    :param environment_id: the running environment to clone
    :param target: ``template`` (save as a template) or ``environment`` (copy it)
    :param vm_ids: only these VMs (``target="environment"`` only)
    :param live: ask Skytap for a live clone (``live_copy``), the default. ``False`` makes
        Skytap SUSPEND the environment's running VMs for the copy (they stay suspended):
        only for an environment that is not running; it is logged as a warning
    :param name: name of the copy; default ``<dag_id>-environment-<id>-<YYYYmmddTHHMMSSZ>``
    :param description: description of the copy (for environments, set once it is ready)
    :param tags: extra tags; this provider's own tags are always added
    :param wait_for_completion: wait until the copy is ready (default True)
    :param poll_interval: first pause between polls, seconds (10: the VMs may be frozen)
    :param max_poll_interval: longest pause between polls, seconds
    :param timeout: seconds to wait in all, for a busy source and then for the copy
    :param log_every: the longest gap between two progress lines, seconds (every 10 s
        for 2 min, every 30 s to 10 min, then every poll pause: ``hooks.api.progress_gap``)
    :param deferrable: wait in the triggerer, holding no worker slot
    :param skytap_conn_id: a connection of type ``skytap``
    """

    template_fields: Sequence[str] = (
        "environment_id",
        "target",
        "vm_ids",
        "name",
        "description",
        "tags",
        *_WAIT_FIELDS,
    )
    source_kind = "environment"

    def __init__(
        self,
        *,
        environment_id: str | int,
        target: str = "template",
        vm_ids: Sequence[str | int] | None = None,
        live: bool = True,
        poll_interval: float = 10.0,
        max_poll_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poll_interval=poll_interval, max_poll_interval=max_poll_interval, **kwargs)
        self.environment_id = environment_id
        self.target = target
        self.vm_ids = vm_ids
        self.live = live

    def spec(self) -> CopySpec:
        """What this task copies, from its rendered fields."""
        return CopySpec(
            environment_id=self.environment_id,
            target=self.target,
            name=self.name,
            description=self.description,
            tags=self.tags,
            vm_ids=self.vm_ids,
            live=self.live,
        )

    def _check_settings(self) -> None:
        super()._check_settings()
        self.spec().checked()

    def _source_id(self) -> str:
        return check_id(self.environment_id, "environment_id")

    def _target(self, context: Context, source: Mapping[str, Any]) -> Target:
        return self.copies.live_clone_target(
            self.spec().checked(), dag_id=self.dag_id, context=context, source=source
        )

    def _create(self, target: Target) -> dict[str, Any]:
        return self.copies.create(target, self.spec().checked(), retry_busy=not self.deferrable)


class CopyTemplateToRegionOperator(_SkytapCopyOperator):
    """Copy a template to another Skytap region for disaster recovery; map it over regions.

    Idempotent: a template with this name in ``target_region`` that an earlier try made is
    reused. A template made by :class:`LiveCloneOperator` passes its tags on (so retention
    prunes the DR copies of one environment together) and its name, so the DR copy has the
    same name in each region. Its consistency tag (what the thaw found) is passed on once the
    copy is complete, so a region copy that failed half way is not counted as a backup. Region
    copies take hours: use ``deferrable=True``.

    While another copy reads the template (a region copy to another region, say), Skytap
    refuses a new copy of it; this operator then waits until the template is free (deferring
    when deferrable) and copies it then, so mapped regions copy one after another.

    :param template_id: the template to copy, typically ``clone.output["id"]``
    :param target_region: the Skytap region to copy it to, e.g. ``EMEA``
    :param name: name of the copy; default the source's name when this DAG made the source,
        else ``<dag_id>-template-<id>-<YYYYmmddTHHMMSSZ>``
    :param description: description of the copy, set once it is ready
    :param tags: extra tags; this provider's own tags are always added
    :param wait_for_completion: wait until the copy is ready (default True)
    :param poll_interval: first pause between polls, seconds
    :param max_poll_interval: longest pause between polls, seconds
    :param timeout: seconds to wait in all (default 24 h: region copies queue)
    :param log_every: the longest gap between two progress lines, seconds (every 10 s
        for 2 min, every 30 s to 10 min, then every poll pause: ``hooks.api.progress_gap``)
    :param deferrable: wait in the triggerer, holding no worker slot
    :param skytap_conn_id: a connection of type ``skytap``
    """

    template_fields: Sequence[str] = (
        "template_id",
        "target_region",
        "name",
        "description",
        "tags",
        *_WAIT_FIELDS,
    )
    source_kind = "template"

    def __init__(
        self,
        *,
        template_id: str | int,
        target_region: str,
        poll_interval: float = 60.0,
        max_poll_interval: float = 600.0,
        timeout: float = 24 * 3600,
        log_every: float = PROGRESS_LONGEST,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=timeout,
            log_every=log_every,
            **kwargs,
        )
        self.template_id = template_id
        self.target_region = target_region

    def _check_settings(self) -> None:
        super()._check_settings()
        check_id(self.template_id, "template_id")
        check_region(self.target_region, self.hook.settings.regions)

    def _source_id(self) -> str:
        return check_id(self.template_id, "template_id")

    def _target(self, context: Context, source: Mapping[str, Any]) -> Target:
        tid = self._source_id()
        region = check_region(self.target_region, self.hook.settings.regions)
        if region == source.get("region"):
            raise ValueError(
                f"target_region {region!r} is the region template {tid} is in already; "
                "a DR copy needs another region"
            )
        inherited = dag_source_tags(source, self.dag_id)
        stamp, when = run_stamp(context)
        if len(inherited) == 1:
            tag = inherited[0]
            default_name = str(
                source.get("name") or backup_name(self.dag_id, "template", tid, stamp)
            )
            times = tuple(sorted(time_tags(source))) or (time_tag(when),)
        else:
            tag = source_tag(self.dag_id, "template", tid)
            default_name = backup_name(self.dag_id, "template", tid, stamp)
            times = (time_tag(when),)
        return Target(
            kind="template",
            name=self.name or default_name,
            region=region,
            source_tag=tag,
            time_tags=times,
            user_tags=tuple(check_tags(self.tags)),
        )

    def _completed(
        self, result: dict[str, Any], resource: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        done = super()._completed(result, resource)
        # The source's consistency tag, once the copy is complete (a copy that failed half way
        # must not look like a good backup): retention counts the DR copy as its source.
        verdict = consistency(self.hook.get_resource("template", result["source_id"]))
        if verdict is not None:
            copy = resource or self.hook.get_resource("template", result["id"])
            if consistency(copy) != verdict:
                self.hook.add_tags("template", result["id"], [consistency_tag(verdict)])
                self.log.info(
                    "Tagged %s %s, as its source",
                    describe("template", result["id"]),
                    consistency_tag(verdict),
                )
        return done

    def _create(self, target: Target) -> dict[str, Any]:
        return self.hook.copy_template(
            self._source_id(),
            name=target.name,
            target_region=target.region,
            retry_busy=not self.deferrable,
        )


__all__ = ["CopyTemplateToRegionOperator", "LiveCloneOperator"]
