"""Freeze, live copy, wait, thaw: the chain every consistent Skytap copy needs, and its params.

``frozen_copy()`` adds the four tasks to the DAG being defined, wired the one safe way::

    freeze -> copy -> wait -> thaw (trigger_rule all_done)

Every second between the freeze and the thaw is the application's downtime, and starting a
task takes Airflow seconds, so no task starts inside that window: once every VM is frozen,
the freeze task runs the copy task's work in its own process (request the copy, wait for it
polling every 0.5 s backing off to 1 s, thaw the moment it is complete). The copy task then
finds the copy by its name and keeps its result; ``wait`` checks it; ``thaw`` still runs
after it, whatever happened (``all_done``): it thaws whatever is still frozen (a thaw is
idempotent), reports per VM, and tags the copy with its verdict (``application-consistent``,
``crash-consistent`` or ``inconsistent``). If anything goes wrong after the freeze, the VMs
stay frozen and the copy task, its retries and the thaw task do what they always did.

It answers the four tasks, so a DAG goes on from ``[chain.wait, chain.thaw]``: whatever
follows runs only when the copy completed *and* the VMs were thawed, and a failed copy still
fails the run (put the DAG's leaves downstream of ``chain.wait``). ``quiesce_params()`` gives
the trigger-form Params it reads (each with a title, a description and a JSON-schema type)::

    with DAG(..., params=quiesce_params(), render_template_as_native_obj=True):
        chain = frozen_copy(target="template")
        [chain.wait, chain.thaw] >> copy_to_dr

``render_template_as_native_obj=True`` is needed: lists and mappings stay lists and mappings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk import BaseOperator, Param, TriggerRule, XComArg

from airflow_provider_skytap.backups import consistency, consistency_tag
from airflow_provider_skytap.hooks.api import describe, readiness
from airflow_provider_skytap.operators.clone import LiveCloneOperator
from airflow_provider_skytap.operators.quiesce import GuardianFiredError, QuiesceOperator
from airflow_provider_skytap.sensors.clone import CloneCompleteSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

# While the VMs are frozen every second of the wait is downtime: poll the copy often.
FROZEN_POLL_SECONDS = 0.5
FROZEN_MAX_POLL_SECONDS = 1.0

# QuiesceOperator keyword -> the template reading it from the params below.
QUIESCE_FROM_PARAMS: dict[str, Any] = {
    "environment_id": "{{ params.environment_id }}",
    "vm_names": "{{ params.vm_names or None }}",
    "ssh_conn_id": "{{ params.ssh_conn_id }}",
    "mounts": "{{ params.mounts }}",
    "profile": "{{ params.profile }}",
    "pre_freeze_command": "{{ params.pre_freeze_command or None }}",
    "post_thaw_command": "{{ params.post_thaw_command or None }}",
}


def quiesce_params(
    *,
    environment_id: str = "1001",
    ssh_conn_id: str = "skytap_vm_ssh",
    mounts: list[str] | dict[str, list[str]] | None = None,
    profile: str = "fsfreeze",
    max_freeze_seconds: int = 600,
) -> dict[str, Param]:
    """The environment, how to reach its VMs, and what to freeze, as trigger-form Params."""
    return {
        "environment_id": Param(
            environment_id,
            type="string",
            pattern=r"^[0-9]+$",
            title="Skytap environment",
            description="Id of the environment (the number in its Skytap URL).",
        ),
        "ssh_conn_id": Param(
            ssh_conn_id,
            type="string",
            minLength=1,
            title="SSH connection",
            description="Airflow connection with the user and key for the VMs. Hosts and ports "
            "come from each VM's published SSH service (port 22) in Skytap.",
        ),
        "vm_names": Param(
            [],
            type="array",
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
            description="Filesystems to freeze on each VM (for profile app: the application's "
            "directories). A list for every VM, or an object from VM name to its list, with "
            "\"*\" for the others. '/' is refused.",
        ),
        "profile": Param(
            profile,
            type="string",
            enum=["fsfreeze", "postgres", "mysql", "app", "custom"],
            title="Freeze profile",
            description="fsfreeze: filesystems only; postgres: CHECKPOINT, then freeze; mysql: "
            "FLUSH TABLES WITH READ LOCK held until the thaw; app: the commands below pause and "
            "resume the application, nothing frozen, no root needed; custom: the commands, "
            "then fsfreeze.",
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
        "pre_freeze_command": Param(
            "",
            type="string",
            title="Pause command (app, custom)",
            description="Shell command run on each VM before the freeze (profile app: pauses "
            "the application). It sees SKYTAP_QUIESCE_MOUNTS, that VM's mounts.",
            section="Advanced",
        ),
        "post_thaw_command": Param(
            "",
            type="string",
            title="Resume command (app, custom)",
            description="Shell command run on each VM after the thaw (profile app: resumes the "
            "application); it may run twice, so it must be harmless on a running application.",
            section="Advanced",
        ),
    }


class _NoXCom:
    """A task instance stand-in that keeps nothing: what a task runs of another task early
    is not its XCom (the other task pushes its own when it runs)."""

    def xcom_push(self, *args: Any, **kwargs: Any) -> None:
        return None


def _run_early(owner: BaseOperator, task_id: str, context: Context, **changes: Any) -> Any:
    """Run the DAG's task ``task_id`` inside ``owner``'s task, now, with this run's params.

    A copy of the task is rendered and executed (``changes`` set on it first); it pushes no
    XCom: the task itself still runs in its turn. Exceptions propagate.
    """
    found = owner.dag.get_task(task_id)
    if not isinstance(found, BaseOperator):
        raise TypeError(f"task {task_id!r} is mapped: it cannot run inside another task")
    task = found.prepare_for_execution()  # a copy: the DAG's task is left as it is
    for name, value in changes.items():
        setattr(task, name, value)
    own: Any = {**context, "ti": _NoXCom(), "task": task}
    task.render_template_fields(own)
    # Its execute unwrapped: it runs as part of this task, not as a task instance of its own.
    execute = type(task).execute
    return getattr(execute, "__wrapped__", execute)(task, own)


class FreezeThenCopyOperator(QuiesceOperator):
    """The freeze task of :func:`frozen_copy`: freeze, then copy and thaw in the same process.

    Airflow takes seconds to start a task (``airflow dags test`` about 2 s, a scheduler more),
    and while the VMs are frozen every second is the application's downtime. So once every VM
    is frozen this task runs the DAG's copy task (``copy_task_id``, with this run's params) in
    its own process: it requests the copy, waits for it (not deferring), and thaws the VMs the
    moment Skytap reports it complete. The copy task then runs in its turn, finds the copy by
    its name (as a retry does), sees it complete and keeps its result; the thaw task reports.

    Anything going wrong after the freeze (an API error, a failed copy, no result within
    ``max_freeze_seconds``) is logged, not raised, and leaves the VMs frozen: the copy task
    then requests or finds the copy, waits for it, fails the run if it failed, retries if it
    may, and the thaw task (``all_done``) thaws. Never retried (``retries=0``): a failed freeze
    has thawed what it froze.

    :param copy_task_id: the DAG's copy task (a :class:`FrozenLiveCloneOperator`)
    """

    def __init__(self, *, copy_task_id: str = "clone", **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(action="freeze", **kwargs)
        self.copy_task_id = copy_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        report = super().execute(context)
        try:
            made = _run_early(
                self,
                self.copy_task_id,
                context,
                wait_for_completion=True,
                deferrable=False,
                timeout=float(self.max_freeze_seconds or 600),
                freeze_report=report,
            )
        except Exception as err:
            self.log.warning(
                "The copy right after the freeze did not complete (%s); the VMs stay frozen "
                "and the %s task takes it over",
                err,
                self.copy_task_id,
            )
        else:
            self.log.info(
                "Copied while frozen: %s %s is complete, and the thaw ran at once (above)",
                made.get("kind"),
                made.get("id"),
            )
        return report


class FrozenLiveCloneOperator(LiveCloneOperator):
    """The copy task of :func:`frozen_copy`: a live clone of frozen VMs, thawed once it is done.

    It requests the copy (or finds the one the freeze task or an earlier try requested, by its
    name) and waits for it itself, not deferring (the VMs are frozen); the moment Skytap
    reports the copy complete it runs the DAG's thaw task (``thaw_task_id``, with this run's
    params) in this process, so the VMs are not kept frozen while Airflow starts the next
    tasks. Only then: a copy that failed, or a try that will be retried, leaves the VMs frozen
    for the thaw task (``all_done``) or the retry. An error of this early thaw is logged, not
    raised: the thaw task runs next, thaws what is left and reports.

    :param thaw_task_id: the DAG's thaw task (a :class:`FrozenCopyThawOperator`, or a
        :class:`QuiesceOperator` with action thaw); run early, it tags nothing
    """

    def __init__(self, *, thaw_task_id: str = "thaw", **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", True)
        kwargs.setdefault("deferrable", False)
        super().__init__(**kwargs)
        self.thaw_task_id = thaw_task_id
        self._context: Context | None = None
        # The freeze's report, when the freeze task runs this one early: the thaw places the
        # freezes on the controller's clock with it.
        self.freeze_report: dict[str, Any] | None = None

    def _start(self, context: Context, deadline: float) -> dict[str, Any]:
        self._context = context  # for the early thaw (execute is wrapped: not overridden)
        return super()._start(context, deadline)

    def _completed(self, result: dict[str, Any], resource: Any | None = None) -> dict[str, Any]:
        done = super()._completed(result, resource)
        if self._context is not None and self.wait_for_completion:
            self.thaw_now(self._context)
        return done

    def thaw_now(self, context: Context) -> dict[str, Any] | None:
        """Run the DAG's thaw task here and now; answers its report, or None if it failed.

        :param context: this task's context (its params are the thaw task's)
        """
        try:
            report: dict[str, Any] = _run_early(
                self,
                self.thaw_task_id,
                context,
                copy_task_id=None,
                freeze_report=self.freeze_report,
            )
        except Exception as err:
            self.log.warning(
                "Early thaw failed (%s); the %s task thaws and reports", err, self.thaw_task_id
            )
            return None
        self.log.info(
            "Thaw once the copy was complete: freeze window %s s; the %s task reports",
            report.get("freeze_window", {}).get("seconds"),
            self.thaw_task_id,
        )
        return report


class FrozenCopyThawOperator(QuiesceOperator):
    """The thaw task of :func:`frozen_copy`: thaw, report, and tag the copy with the verdict.

    It thaws whatever is still frozen and reports per VM, as ``QuiesceOperator(action="thaw")``
    does; then it tags the copy the copy task made with what the report found (the consistency
    tag of :mod:`airflow_provider_skytap.backups`): ``application-consistent``,
    ``crash-consistent``, or ``inconsistent`` when a guardian thawed first (the task still
    fails then). Only a complete copy is tagged. A copy left without the tag (its run failed
    or was killed before this task looked) was never vouched for, and
    ``PruneBackupsOperator(confirmed_only=True)`` does not count it as a backup.

    The report gains ``"copy": {"id", "kind", "consistency"}`` (None when nothing was tagged).

    :param copy_task_id: the DAG's copy task (None: tag nothing, as when the copy task runs
        this task early, before it has pushed the copy's id)
    """

    def __init__(self, *, copy_task_id: str | None = "clone", **kwargs: Any) -> None:
        super().__init__(action="thaw", **kwargs)
        self.copy_task_id = copy_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            report = super().execute(context)
        except GuardianFiredError as err:
            try:  # the guardian's message is what the run must say, whatever tagging does
                if err.result is not None:
                    self.tag_copy(context, str(err.result["consistency"]))
            except Exception as tag_err:
                self.log.warning("Could not tag the copy inconsistent: %s", tag_err)
            raise
        report["copy"] = self.tag_copy(context, str(report["consistency"]))
        return report

    def tag_copy(self, context: Context, verdict: str) -> dict[str, Any] | None:
        """Tag the complete copy of this run with ``verdict``; what was tagged, or None."""
        if not self.copy_task_id:
            return None
        ti = context["ti"]
        rid = ti.xcom_pull(task_ids=self.copy_task_id, key="id")
        kind = ti.xcom_pull(task_ids=self.copy_task_id, key="kind")
        if rid is None or kind is None:
            self.log.info("No copy was requested in this run; nothing to tag")
            return None
        resource = self.skytap_hook.get_resource(kind, rid)
        label = describe(kind, rid, resource)
        state = readiness(kind, resource)
        if state.state != "ready":
            self.log.warning(
                "Not tagging %s %s: it is %s (%s); retention will not count it as a backup",
                label,
                verdict,
                state.state,
                state.detail,
            )
            return None
        if consistency(resource) == verdict:
            self.log.info("%s is tagged %s already", label, consistency_tag(verdict))
        else:
            self.skytap_hook.add_tags(kind, rid, [consistency_tag(verdict)])
            self.log.info("Tagged %s %s", label, consistency_tag(verdict))
        return {"id": str(rid), "kind": kind, "consistency": verdict}


class FrozenCopy(NamedTuple):
    """The four tasks of :func:`frozen_copy`."""

    freeze: FreezeThenCopyOperator
    copy: FrozenLiveCloneOperator
    wait: CloneCompleteSensor
    thaw: FrozenCopyThawOperator


def frozen_copy(
    *,
    target: str = "template",
    copy_task_id: str = "clone",
    wait_task_id: str = "wait_for_clone",
) -> FrozenCopy:
    """Add freeze -> copy -> wait -> thaw to the DAG being defined (settings from its params).

    - ``freeze`` (:class:`FreezeThenCopyOperator`) never retries: a failed freeze has thawed
      what it froze. Once every VM is frozen it runs the copy task's work (request, wait,
      thaw) in its own process; anything failing there leaves the VMs frozen for the tasks
      below.
    - the copy (:class:`FrozenLiveCloneOperator`, ``target`` template or environment) finds
      the copy by name or requests it, waits for completion itself, polling every 0.5 s
      backing off to 1 s, never deferring (a deferral's round trip through the triggerer and
      the scheduler would be downtime), then thaws at once; it retries after 5 s, not the
      DAG's delay: the VMs may be frozen meanwhile.
    - ``wait`` checks the copy is complete (pokes every 2 s backing off to 5 s, not deferring).
    - ``thaw`` (:class:`FrozenCopyThawOperator`) runs whatever happened upstream
      (``all_done``), thaws what is still frozen, reports per VM, tags the complete copy with
      the verdict, and fails when a guardian had to thaw first (the copy is then tagged
      ``inconsistent``: it may be torn).

    :param target: ``"template"`` (a backup) or ``"environment"`` (a running copy)
    :param copy_task_id: the copy task's id
    :param wait_task_id: the wait task's id
    """
    freeze = FreezeThenCopyOperator(
        task_id="freeze",
        copy_task_id=copy_task_id,
        max_freeze_seconds="{{ params.max_freeze_seconds }}",
        retries=0,
        **QUIESCE_FROM_PARAMS,
    )
    copy = FrozenLiveCloneOperator(
        task_id=copy_task_id,
        environment_id="{{ params.environment_id }}",
        target=target,
        thaw_task_id="thaw",
        poll_interval=FROZEN_POLL_SECONDS,
        max_poll_interval=FROZEN_MAX_POLL_SECONDS,
        retry_delay=timedelta(seconds=5),
    )
    copy_id: Any = XComArg(copy, key="id")  # the copy's id, pushed as its own XCom
    wait = CloneCompleteSensor(
        task_id=wait_task_id,
        resource_id=copy_id,
        kind=target,
        poke_interval=2,
        max_poll_interval=5,
        mode="poke",
        deferrable=False,
        timeout=4 * 3600,
        retry_delay=timedelta(seconds=5),
    )
    thaw = FrozenCopyThawOperator(
        task_id="thaw",
        copy_task_id=copy_task_id,
        trigger_rule=TriggerRule.ALL_DONE,
        retry_delay=timedelta(seconds=5),
        freeze_task_id="freeze",
        **QUIESCE_FROM_PARAMS,
    )
    freeze >> copy >> wait >> thaw
    return FrozenCopy(freeze, copy, wait, thaw)
