"""Freeze, live copy, wait, thaw: the chain every consistent Skytap copy needs, as a TaskGroup.

``frozen_copy()`` adds a task group of four tasks to the DAG being defined::

    <group>.freeze -> <group>.copy -> <group>.wait -> <group>.thaw (trigger_rule all_done)

Every second between the freeze and the release is the application's downtime, and starting
a task takes Airflow seconds, so no task starts inside that window: ``freeze`` freezes the
VMs, requests the copy (a plain call to :class:`~airflow_provider_skytap.copies.CopyService`),
polls it (0.5 s backing off to 1 s) and, the moment Skytap shows it complete, releases the
VMs over the SSH connections its :class:`~airflow_provider_skytap.quiesce.session.QuiesceSession`
still holds. ``copy`` then adopts that copy (ours, requested in this freeze window), waits
for it if it is not complete yet, and keeps its result; ``wait`` checks it; ``thaw`` runs
whatever happened (``all_done``): it releases whatever is still frozen (idempotent), reports
per VM and tags the copy with its verdict. No task runs another task's operator.

The settings are two spec objects built once in the DAG and handed to every task that needs
them (Airflow renders their ``template_fields``): a :class:`~airflow_provider_skytap.copies.
CopySpec` (what to copy) and a :class:`QuiesceChoice` (which VMs, which mounts, and which of
the DAG author's :class:`QuiescePreset` to use). The profile, its commands and the SSH
connection come only from the DAG's code: the trigger form picks among the names the DAG
author wrote, and the tasks refuse anything else, naming the field and the value.

The verdict (:func:`~airflow_provider_skytap.consistency.copy_verdict`):
``application-consistent`` only for a copy requested in this freeze window after every VM
was frozen, and complete before the first release. A copy of this DAG found from another
window (an earlier try, a cleared run) is adopted without freezing again, and vouched for at
best as ``crash-consistent``; one that is not provably this DAG's fails the run, named.

It answers the group; a DAG goes on from ``[chain.wait, chain.thaw]``: whatever follows runs
only when the copy completed *and* the VMs were released, and a failed copy still fails the
run::

    with DAG(..., params=quiesce_params(), render_template_as_native_obj=True):
        chain = frozen_copy(group_id="backup", target="template")
        [chain.wait, chain.thaw] >> copy_to_dr
"""

from __future__ import annotations

import copy as copying
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Param, TaskGroup, TriggerRule, XComArg

from airflow_provider_skytap.consistency import (
    CONFIRMED,
    INCONSISTENT,
    FreezeWindow,
    consistency,
    copy_verdict,
)
from airflow_provider_skytap.copies import CopyService, CopySpec, Target
from airflow_provider_skytap.exceptions import (
    GuardianFiredError,
    InvalidValueError,
    QuiesceError,
    SkytapError,
)
from airflow_provider_skytap.hooks.api import describe, readiness
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID, SkytapHook
from airflow_provider_skytap.links import SkytapResourceLink, persist
from airflow_provider_skytap.operators.quiesce import QuiesceOperator
from airflow_provider_skytap.sensors.clone import CloneCompleteSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

# While the VMs are frozen every second of the wait is downtime: poll the copy often.
FROZEN_POLL_SECONDS = 0.5
FROZEN_MAX_POLL_SECONDS = 1.0
# The XCom key the freeze task pushes the copy under the moment it is requested.
COPY_KEY = "copy"


@dataclass(frozen=True)
class QuiescePreset:
    """A named way to quiesce the VMs, written by the DAG author in the DAG's code.

    The trigger form offers the names of a DAG's presets and nothing else, so a user allowed
    only to trigger the DAG can choose among them but never write a command that runs on the
    VMs (as root for every profile but ``app``).

    :param profile: ``fsfreeze``, ``postgres``, ``mysql``, ``app`` or ``custom``
    :param pre_freeze_command: ``app``/``custom``: the pause (see :class:`QuiesceOperator`)
    :param post_thaw_command: ``app``/``custom``: the resume
    :param profile_options: options of the profile (postgres, mysql)
    :param description: what it does, for the trigger form
    """

    profile: str = "fsfreeze"
    pre_freeze_command: str | None = None
    post_thaw_command: str | None = None
    profile_options: Mapping[str, Any] | None = None
    description: str = ""


#: The presets the example DAGs offer: each profile that needs no command of its own.
DEFAULT_PRESETS: dict[str, QuiescePreset] = {
    "fsfreeze": QuiescePreset("fsfreeze", description="filesystems only (fsfreeze)"),
    "postgres": QuiescePreset("postgres", description="PostgreSQL CHECKPOINT, then fsfreeze"),
    "mysql": QuiescePreset(
        "mysql", description="MySQL/MariaDB lock held until the release, then fsfreeze"
    ),
}


class QuiesceChoice:
    """Which VMs to quiesce and how: the quiesce spec of a :func:`frozen_copy` chain.

    Built once and handed to the freeze and thaw tasks; Airflow renders the attributes in
    ``template_fields``. ``preset`` and ``ssh_conn_id`` are checked against the DAG author's
    ``presets`` and ``ssh_conn_ids`` when a task runs: a value from the trigger form that is
    not among them fails the task, naming the field and the value, before any VM is touched.

    :param environment_id: the Skytap environment whose VMs are quiesced
    :param mounts: the mounts (a list for every VM, or VM name -> list, with ``"*"``)
    :param max_freeze_seconds: the longest freeze; each VM's guardian releases by itself then
    :param preset: the name of one of ``presets``
    :param ssh_conn_id: one of ``ssh_conn_ids``
    :param vm_names: only these VMs (None or empty: every VM)
    :param presets: name -> :class:`QuiescePreset` (DAG code; default :data:`DEFAULT_PRESETS`)
    :param ssh_conn_ids: the SSH connections a run may use (DAG code; default: ``ssh_conn_id``
        when it is a plain name)
    :param skytap_conn_id: the Skytap connection
    """

    template_fields: Sequence[str] = (
        "environment_id",
        "mounts",
        "max_freeze_seconds",
        "preset",
        "ssh_conn_id",
        "vm_names",
    )

    def __init__(
        self,
        *,
        environment_id: str | int,
        mounts: Any,
        max_freeze_seconds: Any = 600,
        preset: str = "fsfreeze",
        ssh_conn_id: str = "skytap_vm_ssh",
        vm_names: Any = None,
        presets: Mapping[str, QuiescePreset] | None = None,
        ssh_conn_ids: Sequence[str] | None = None,
        skytap_conn_id: str = DEFAULT_CONN_ID,
    ) -> None:
        self.environment_id = environment_id
        self.mounts = mounts
        self.max_freeze_seconds = max_freeze_seconds
        self.preset = preset
        self.ssh_conn_id = ssh_conn_id
        self.vm_names = vm_names
        self.presets = dict(presets if presets is not None else DEFAULT_PRESETS)
        if ssh_conn_ids is None:
            if "{{" in ssh_conn_id:
                raise ValueError(
                    "ssh_conn_id is templated: list the connections a run may use in "
                    "ssh_conn_ids (DAG code), so no trigger can point it elsewhere"
                )
            ssh_conn_ids = (ssh_conn_id,)
        self.ssh_conn_ids = tuple(ssh_conn_ids)
        self.skytap_conn_id = skytap_conn_id

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.template_fields)
        return f"QuiesceChoice({fields})"

    def chosen(self) -> QuiescePreset:
        """The preset and SSH connection, checked against the DAG author's lists."""
        name = self.preset
        if not isinstance(name, str) or name not in self.presets:
            raise InvalidValueError(
                f"profile: {name!r} is not one of this DAG's presets ({', '.join(self.presets)});"
                " what runs on the VMs comes from the DAG's code, not from the trigger form"
            )
        if self.ssh_conn_id not in self.ssh_conn_ids:
            raise InvalidValueError(
                f"ssh_conn_id: {self.ssh_conn_id!r} is not one of this DAG's SSH connections "
                f"({', '.join(self.ssh_conn_ids)}); a run may not point the VMs' credentials "
                "at another connection"
            )
        return self.presets[name]

    def apply(self, op: QuiesceOperator) -> None:
        """Set the rendered, checked choice on a task's own :class:`QuiesceOperator` fields."""
        preset = self.chosen()
        op.environment_id = self.environment_id
        op.ssh_conn_ids = None
        op.ssh_conn_id = str(self.ssh_conn_id)
        op.skytap_conn_id = self.skytap_conn_id
        op.vm_names = self.vm_names or None
        op.mounts = self.mounts
        op.max_freeze_seconds = self.max_freeze_seconds
        op.profile = preset.profile
        op.pre_freeze_command = preset.pre_freeze_command
        op.post_thaw_command = preset.post_thaw_command
        op.profile_options = dict(preset.profile_options) if preset.profile_options else None


def quiesce_params(
    *,
    environment_id: str = "1001",
    ssh_conn_ids: Sequence[str] = ("skytap_vm_ssh",),
    mounts: list[str] | dict[str, list[str]] | None = None,
    presets: Mapping[str, QuiescePreset] | None = None,
    profile: str = "fsfreeze",
    max_freeze_seconds: int = 600,
) -> dict[str, Param]:
    """The environment, how to reach its VMs, and what to freeze, as trigger-form Params.

    ``profile`` and ``ssh_conn_id`` are choices among the names the DAG's code gives
    (``presets``, ``ssh_conn_ids``): the form offers no free text that reaches a VM.
    """
    presets = dict(presets if presets is not None else DEFAULT_PRESETS)
    if profile not in presets:
        raise ValueError(f"profile {profile!r} is not one of presets ({', '.join(presets)})")
    return {
        "environment_id": Param(
            environment_id,
            type="string",
            pattern=r"^[0-9]+$",
            title="Skytap environment",
            description="Id of the environment (the number in its Skytap URL).",
        ),
        "ssh_conn_id": Param(
            ssh_conn_ids[0],
            type="string",
            enum=list(ssh_conn_ids),
            title="SSH connection",
            description="Airflow connection with the user and key for the VMs (one of the "
            "DAG's). Hosts and ports come from each VM's published SSH service (port 22).",
        ),
        "vm_names": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="VMs to freeze",
            description="Names of the VMs to freeze, one per line; empty: every VM.",
        ),
        "mounts": Param(
            mounts if mounts is not None else ["/srv/data"],
            type=["array", "object"],
            items={"type": "string", "pattern": "^/"},
            minItems=1,
            additionalProperties={"type": "array", "items": {"type": "string", "pattern": "^/"}},
            title="Mount points",
            description="Filesystems to freeze on each VM (for an app preset: the "
            "application's directories). A list for every VM, or an object from VM name to "
            "its list, with \"*\" for the others. '/' is refused.",
        ),
        "profile": Param(
            profile,
            type="string",
            enum=list(presets),
            title="How to quiesce",
            description="; ".join(f"{k}: {p.description or p.profile}" for k, p in presets.items())
            + ". The DAG's code defines these; the form cannot add one.",
        ),
        "max_freeze_seconds": Param(
            max_freeze_seconds,
            type="integer",
            minimum=10,
            maximum=7200,
            title="Longest freeze (seconds)",
            description="Each VM's guardian thaws by itself after this long, whatever happens "
            "to Airflow; the copy is then reported as not application-consistent. Size it to "
            "the copy's time plus a margin.",
        ),
    }


def choice_from_params(
    *,
    presets: Mapping[str, QuiescePreset] | None = None,
    ssh_conn_ids: Sequence[str] = ("skytap_vm_ssh",),
    skytap_conn_id: str = DEFAULT_CONN_ID,
) -> QuiesceChoice:
    """The :class:`QuiesceChoice` that reads :func:`quiesce_params` (with the same lists)."""
    return QuiesceChoice(
        environment_id="{{ params.environment_id }}",
        mounts="{{ params.mounts }}",
        max_freeze_seconds="{{ params.max_freeze_seconds }}",
        preset="{{ params.profile }}",
        ssh_conn_id="{{ params.ssh_conn_id }}",
        vm_names="{{ params.vm_names or None }}",
        presets=presets,
        ssh_conn_ids=ssh_conn_ids,
        skytap_conn_id=skytap_conn_id,
    )


class FreezeAndCopyOperator(QuiesceOperator):
    """The ``freeze`` task of :func:`frozen_copy`: freeze, request the copy, release when done.

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
            info.update(complete_before_release=True, released=True)
            ti.xcom_push(key=COPY_KEY, value=info)
            self.log.info(
                "%s is complete: releasing the VMs over the open connections",
                describe(target.kind, info["id"]),
            )
            try:
                result["release"] = session.release(freeze_report=frozen.to_xcom()).to_xcom()
            except QuiesceError as err:
                result["release"] = err.result
                self.log.warning("The release failed (%s); the thaw task releases and reports", err)
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
    """The ``copy`` task of :func:`frozen_copy`: adopt the copy the freeze task requested.

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
    """The ``thaw`` task of :func:`frozen_copy`: release, report, and tag the copy's verdict.

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


class FrozenCopyGroup(TaskGroup):
    """The task group :func:`frozen_copy` answers, with its four tasks by role."""

    freeze: FreezeAndCopyOperator
    copy: AdoptCopyOperator
    wait: CloneCompleteSensor
    thaw: ThawAndVouchOperator


def frozen_copy(
    *,
    group_id: str = "frozen_copy",
    copy: CopySpec | None = None,
    quiesce: QuiesceChoice | None = None,
    target: str = "template",
    skytap_conn_id: str = DEFAULT_CONN_ID,
) -> FrozenCopyGroup:
    """Add the task group freeze -> copy -> wait -> thaw to the DAG being defined.

    - ``freeze`` (:class:`FreezeAndCopyOperator`): freezes, requests the copy, and releases
      the VMs the moment it is complete; retries only fail before the request.
    - ``copy`` (:class:`AdoptCopyOperator`): adopts and publishes that copy (``copy.output``).
    - ``wait`` checks the copy is complete (pokes every 2 s backing off to 5 s).
    - ``thaw`` (:class:`ThawAndVouchOperator`, ``all_done``) releases what is still frozen,
      reports per VM and tags the verdict; it fails when a guardian released first.

    :param group_id: the group's id (two chains in one DAG need two)
    :param copy: what to copy; default: the environment of the DAG's ``environment_id``
        param, as ``target``
    :param quiesce: which VMs and how; default :func:`choice_from_params` (the DAG's params
        from :func:`quiesce_params`, with the default presets)
    :param target: ``"template"`` (a backup) or ``"environment"`` (a running copy), when
        ``copy`` is not given
    :param skytap_conn_id: the Skytap connection
    """
    copy = copy or CopySpec(environment_id="{{ params.environment_id }}", target=target)
    quiesce = quiesce or choice_from_params(skytap_conn_id=skytap_conn_id)
    group = FrozenCopyGroup(group_id=group_id)
    with group:
        # A failed freeze has released what it froze: its retry may come soon.
        freeze = FreezeAndCopyOperator(
            task_id="freeze",
            quiesce=quiesce,
            copy=copy,
            chain_id=group_id,
            retry_delay=timedelta(seconds=10),
        )
        adopt = AdoptCopyOperator(
            task_id="copy",
            copy=copy,
            freeze_task_id=freeze.task_id,
            skytap_conn_id=skytap_conn_id,
            retry_delay=timedelta(seconds=5),
        )
        copy_id: Any = XComArg(adopt, key="id")
        wait = CloneCompleteSensor(
            task_id="wait",
            resource_id=copy_id,
            kind=copy.target,
            poke_interval=2,
            max_poll_interval=5,
            mode="poke",
            deferrable=False,
            timeout=4 * 3600,
            retry_delay=timedelta(seconds=5),
            skytap_conn_id=skytap_conn_id,
        )
        thaw = ThawAndVouchOperator(
            task_id="thaw",
            quiesce=quiesce,
            freeze_task_id=freeze.task_id,
            copy_task_id=adopt.task_id,
            trigger_rule=TriggerRule.ALL_DONE,
            retry_delay=timedelta(seconds=5),
        )
        freeze >> adopt >> wait >> thaw
    group.freeze, group.copy, group.wait, group.thaw = freeze, adopt, wait, thaw
    return group
