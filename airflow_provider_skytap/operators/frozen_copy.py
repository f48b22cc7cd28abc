"""The three working tasks of :func:`airflow_provider_skytap.frozen_copy.frozen_copy`.

``freeze`` (:class:`FreezeAndCopyOperator`) freezes, requests the copy through the copy
service, polls it and releases the VMs over its open SSH connections the moment it is
complete; ``copy`` (:class:`AdoptCopyOperator`) adopts and publishes that copy; ``thaw``
(:class:`ThawAndVouchOperator`, ``all_done``) releases what is still frozen and tags the
verdict. Each is given the chain's spec objects; none runs another's operator.
"""

from __future__ import annotations

import copy as copying
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_skytap.consistency import (
    CONFIRMED,
    INCONSISTENT,
    FreezeWindow,
    consistency,
    copy_verdict,
)
from airflow_provider_skytap.copies import CopyService, CopySpec, Target
from airflow_provider_skytap.exceptions import GuardianFiredError, QuiesceError, SkytapError
from airflow_provider_skytap.hooks.api import describe, readiness
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID, SkytapHook
from airflow_provider_skytap.links import SkytapResourceLink, persist
from airflow_provider_skytap.operators.quiesce import QuiesceChoice, QuiesceOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

# While the VMs are frozen every second of the wait is downtime: poll the copy often.
FROZEN_POLL_SECONDS = 0.5
FROZEN_MAX_POLL_SECONDS = 1.0
# The XCom key the freeze task pushes the copy under the moment it is requested.
COPY_KEY = "copy"


class FreezeAndCopyOperator(QuiesceOperator):
    """The chain's ``freeze`` task: freeze, request the copy, release when it is complete.

    Before anything is frozen it checks the run's values and looks for a copy of this run
    (an earlier try or a cleared run): one that is ours is adopted without freezing again (it
    was requested in another window: the thaw vouches for it at best as crash-consistent);
    one under our name that is not provably ours fails the task, named. Then it freezes, and
    requests the copy. A failure before the copy is requested releases the VMs and fails the
    task (a retry freezes again). After the request nothing freezes again and nothing is
    raised: if Skytap does not show the copy complete within ``max_freeze_seconds`` (or an
    error ends the wait), the VMs stay frozen and the copy and thaw tasks take over.

    Returns the freeze report, with ``window`` (its identity), ``copy`` (id, kind, name,
    ``requested_in_window``, ``complete_before_release``, ``released``) and ``release`` (the
    release's report, or None).

    :param quiesce: the chain's :class:`QuiesceChoice`
    :param copy: the chain's :class:`~airflow_provider_skytap.copies.CopySpec`
    :param chain_id: the chain's group id (part of the window's identity)
    """

    template_fields: Sequence[str] = ("quiesce", "copy")

    def __init__(
        self,
        *,
        quiesce: QuiesceChoice,
        copy: CopySpec,
        chain_id: str = "",
        poll_interval: float = FROZEN_POLL_SECONDS,
        max_poll_interval: float = FROZEN_MAX_POLL_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            action="freeze",
            mounts=quiesce.mounts,
            max_freeze_seconds=quiesce.max_freeze_seconds,
            environment_id=quiesce.environment_id,
            skytap_conn_id=quiesce.skytap_conn_id,
            **kwargs,
        )
        self.quiesce = copying.deepcopy(quiesce)
        self.copy = copy.own()
        self.chain_id = chain_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def execute(self, context: Context) -> dict[str, Any]:
        self.quiesce.apply(self)
        spec = self.copy.checked()
        ti = context["ti"]
        window = FreezeWindow(
            self.dag_id, str(context["run_id"]), int(ti.try_number), self.chain_id
        )
        service = CopyService(self.skytap_hook, self.log)
        source = self.skytap_hook.get_resource("environment", spec.environment_id)
        target = service.live_clone_target(
            spec, dag_id=self.dag_id, context=context, source=source, window=window
        )
        found = service.find(target)
        if found is not None:
            return self._adopt(context, window, target, found.resource, found.windows)
        busy = service.source_ready("environment", spec.environment_id, source)
        if busy is not None:  # before freezing: waiting now costs no downtime
            self.log.info("%s is busy (%s); waiting before freezing", spec.environment_id, busy)
            self.skytap_hook.wait_until_ready(
                "environment", spec.environment_id, timeout=3600, poll_interval=2
            )
        session = self.open_session(context)
        with session:
            frozen = session.freeze()  # a failure has released what it froze, and raises
            started = time.monotonic()
            made = self._request(service, target, spec, session)
            info: dict[str, Any] = {
                "id": str(made["id"]),
                "kind": target.kind,
                "name": target.requested_name,
                "window": window.token,
                "requested_in_window": True,
                "complete_before_release": False,
                "released": False,
            }
            ti.xcom_push(key=COPY_KEY, value=info)  # for the thaw, should this task die now
            # Each host's thaw waits, started, on its open connection: the release is one line.
            session.prepare_release()
            result = {**frozen.to_xcom(), "window": window.to_xcom(), "copy": info, "release": None}
            limit = float(session.spec.max_seconds or 600) - (time.monotonic() - started)
            try:
                service.wait(
                    target.kind,
                    info["id"],
                    timeout=max(1.0, limit),
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    log_every=10,
                )
            except Exception as err:
                self.log.warning(
                    "%s is not complete (%s); the VMs stay frozen: the copy task waits for it "
                    "and the thaw task releases them",
                    describe(target.kind, info["id"]),
                    err,
                )
                return result
            # Release first, record after: nothing may stand between the copy's completion and
            # the thaw. Should this task die in between, the thaw task finds the hosts released
            # without this record and vouches for less (never more).
            try:
                result["release"] = session.release(freeze_report=frozen.to_xcom()).to_xcom()
            except QuiesceError as err:
                result["release"] = err.result
                self.log.warning("The release failed (%s); the thaw task releases and reports", err)
            info.update(complete_before_release=True, released=True)
            ti.xcom_push(key=COPY_KEY, value=info)
            self.log.info(
                "%s was complete: the VMs were released over the open connections",
                describe(target.kind, info["id"]),
            )
        return result

    def _request(
        self, service: CopyService, target: Target, spec: Any, session: Any
    ) -> dict[str, Any]:
        """Request the copy; on a failure, release the VMs and raise (nothing was requested).

        The hook never sends the POST twice and, after an answer that was lost, finds the
        copy by its window-marked name (unique to this window): an error here means no copy.
        """
        try:
            made = service.request(target, spec)
        except BaseException as err:
            self.log.error("The copy could not be requested (%s): releasing the VMs", err)
            session.release_armed("rollback")
            raise
        try:
            service.ensure_tags(target, made)
        except Exception as err:  # requested: nothing freezes again; the copy task tags it
            self.log.warning("Could not tag %s yet (%s); the copy task tags it", made["id"], err)
        return made

    def _adopt(
        self,
        context: Context,
        window: FreezeWindow,
        target: Target,
        resource: Mapping[str, Any],
        windows: set[str],
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": str(resource["id"]),
            "kind": target.kind,
            "name": str(resource.get("name") or target.name),
            "window": sorted(windows)[0] if windows else None,
            "requested_in_window": False,
            "complete_before_release": False,
            "released": False,
        }
        self.log.warning(
            "Not freezing: %s of this DAG exists already, requested in another freeze window "
            "(an earlier try or a cleared run). It is adopted as it is; this run cannot vouch "
            "that it was complete before that window's release. Delete it and clear the run "
            "for an application-consistent copy",
            describe(target.kind, info["id"], resource),
        )
        context["ti"].xcom_push(key=COPY_KEY, value=info)
        return {
            "action": "freeze",
            "frozen": False,
            "consistency": None,
            "hosts": [],
            "window": window.to_xcom(),
            "copy": info,
            "release": None,
        }


class AdoptCopyOperator(BaseOperator):
    """The chain's ``copy`` task: adopt the copy the freeze task requested.

    It proves the copy is this DAG's (tags, made by the connection's user), publishes it
    (``id``, ``kind``, ``name``, ``region`` as XComs of their own, and the Skytap link), waits
    for it if the freeze task could not (polling fast: the VMs may still be frozen), and
    gives it its name and description once it is ready. It never requests a copy and never
    freezes: after the request nothing freezes again.

    :param copy: the chain's :class:`~airflow_provider_skytap.copies.CopySpec`
    :param freeze_task_id: the chain's freeze task
    :param timeout: seconds to wait for the copy
    :param skytap_conn_id: a connection of type ``skytap``
    """

    template_fields: Sequence[str] = ("copy",)
    operator_extra_links = (SkytapResourceLink(),)
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        copy: CopySpec,
        freeze_task_id: str,
        timeout: float = 4 * 3600,
        poll_interval: float = FROZEN_POLL_SECONDS,
        max_poll_interval: float = FROZEN_MAX_POLL_SECONDS,
        skytap_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.copy = copy.own()
        self.freeze_task_id = freeze_task_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.skytap_conn_id = skytap_conn_id

    @cached_property
    def hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        spec = self.copy.checked()
        ti = context["ti"]
        info = ti.xcom_pull(task_ids=self.freeze_task_id, key=COPY_KEY)
        if not isinstance(info, Mapping) or not info.get("id"):
            raise SkytapError(
                f"the {self.freeze_task_id} task requested no copy in this run; nothing to adopt"
            )
        service = CopyService(self.hook, self.log)
        kind, rid = spec.kind, str(info["id"])
        resource = self.hook.get_resource(kind, rid)
        target = service.live_clone_target(
            spec, dag_id=self.dag_id, context=context, source={"region": resource.get("region")}
        )
        if info.get("requested_in_window"):  # this run's freeze made it: tag it if it could not
            service.claim(target, resource, str(info.get("window") or ""))
            resource = self.hook.get_resource(kind, rid)
        service.prove_ours(target, resource)
        url = self.hook.ui_url(kind, rid)
        persist(context, kind, rid, url)
        name = str(info.get("name") or target.name)
        result = {
            "id": rid,
            "kind": kind,
            "name": name,
            "region": resource.get("region"),
            "source_kind": "environment",
            "source_id": spec.environment_id,
            "created": bool(info.get("requested_in_window")),
            "url": url,
        }
        for key in ("id", "kind", "name", "region"):
            ti.xcom_push(key=key, value=result[key])
        if readiness(kind, resource).state != "ready":
            resource = service.wait(
                kind,
                rid,
                timeout=float(self.timeout),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
            )
        service.finish(kind, rid, name=name, description=spec.description, resource=resource)
        self.log.info("%s is ready: %s", describe(kind, rid), url)
        return result


class ThawAndVouchOperator(QuiesceOperator):
    """The chain's ``thaw`` task: release, report, and tag the copy's verdict.

    Runs whatever happened upstream (``all_done``). It releases whatever is still frozen (the
    release is idempotent; nothing when the freeze task adopted a copy without freezing),
    reports per VM, and tags the complete copy with the verdict of
    :func:`~airflow_provider_skytap.consistency.copy_verdict`: ``application-consistent``
    only for a copy requested in this run's freeze window and complete before its first
    release. It fails when a guardian released first (the copy is tagged ``inconsistent``).

    The report gains ``"copy": {"id", "kind", "consistency", "note"}`` (None: nothing tagged).

    :param quiesce: the chain's :class:`QuiesceChoice`
    :param freeze_task_id: the chain's freeze task
    :param copy_task_id: the chain's copy task
    """

    template_fields: Sequence[str] = ("quiesce",)

    def __init__(
        self,
        *,
        quiesce: QuiesceChoice,
        freeze_task_id: str,
        copy_task_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            action="thaw",
            mounts=quiesce.mounts,
            environment_id=quiesce.environment_id,
            skytap_conn_id=quiesce.skytap_conn_id,
            freeze_task_id=freeze_task_id,
            **kwargs,
        )
        self.quiesce = copying.deepcopy(quiesce)
        self.copy_task_id = copy_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        self.quiesce.apply(self)
        ti = context["ti"]
        frozen = ti.xcom_pull(task_ids=self.freeze_task_id)
        frozen = frozen if isinstance(frozen, Mapping) else {}
        info = frozen.get("copy") or ti.xcom_pull(task_ids=self.freeze_task_id, key=COPY_KEY)
        info = info if isinstance(info, Mapping) else {}
        rid = ti.xcom_pull(task_ids=self.copy_task_id, key="id")
        kind = ti.xcom_pull(task_ids=self.copy_task_id, key="kind")
        ready_before = bool(info.get("complete_before_release"))
        if (
            rid is not None
            and kind is not None
            and not ready_before
            and info.get("released") is False
        ):
            ready_before = self._ready_now(kind, str(rid))  # asked before this release
        if frozen.get("frozen") is False:
            self.log.info(
                "Nothing was frozen in this run (the copy was adopted); nothing to release"
            )
            report: dict[str, Any] = {"action": "thaw", "consistency": None, "hosts": []}
        else:
            try:
                report = super().execute(context)
            except GuardianFiredError as err:
                try:  # the guardian's message is what the run must say, whatever tagging does
                    if err.result is not None and rid is not None and kind is not None:
                        CopyService(self.skytap_hook, self.log).tag_verdict(
                            kind, str(rid), INCONSISTENT
                        )
                except Exception as tag_err:
                    self.log.warning("Could not tag the copy inconsistent: %s", tag_err)
                raise
        if rid is None or kind is None:
            self.log.info("No copy was adopted in this run; nothing to tag")
            report["copy"] = None
            return report
        report["copy"] = self._vouch(kind, str(rid), report, info, frozen, ready_before)
        return report

    def _ready_now(self, kind: Any, rid: str) -> bool:
        try:
            return readiness(kind, self.skytap_hook.get_resource(kind, rid)).state == "ready"
        except SkytapError as err:
            self.log.warning("Could not read %s before the release: %s", describe(kind, rid), err)
            return False

    def _vouch(
        self,
        kind: Any,
        rid: str,
        report: Mapping[str, Any],
        info: Mapping[str, Any],
        frozen: Mapping[str, Any],
        ready_before: bool,
    ) -> dict[str, Any] | None:
        window = FreezeWindow.from_xcom(frozen.get("window"))
        same_window = bool(
            info.get("requested_in_window")
            and window is not None
            and info.get("window") == window.token
            and str(info.get("id")) == rid
        )
        # A host some other release thawed first (a killed freeze task: "kill") did not hold
        # the freeze until this release: the copy cannot be shown complete before it.
        first = all(h.get("fired_by") in (None, "thaw") for h in report.get("hosts") or [])
        service = CopyService(self.skytap_hook, self.log)
        current = self.skytap_hook.get_resource(kind, rid)
        earlier = consistency(current)
        verdict, note = copy_verdict(
            str(report.get("consistency")),
            same_window=same_window,
            complete_before_release=ready_before and (first or bool(info.get("released"))),
            earlier_verdict=earlier,
        )
        self.log.info("%s: %s (%s)", describe(kind, rid, current), verdict, note)
        if not same_window and earlier in CONFIRMED:
            # Its own window vouched for it: this run adds nothing (it did not see it made).
            return {"id": rid, "kind": kind, "consistency": verdict, "note": note}
        if not service.tag_verdict(kind, rid, verdict):
            return None
        return {"id": rid, "kind": kind, "consistency": verdict, "note": note}
