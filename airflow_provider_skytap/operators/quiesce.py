"""QuiesceOperator: freeze or thaw the filesystems (or pause and resume the applications) of
many VMs over SSH, guarded on each VM. A thin wrapper over :class:`QuiesceSession`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseHook, BaseOperator

from airflow_provider_skytap.exceptions import InvalidValueError
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID, SkytapHook
from airflow_provider_skytap.quiesce.report import (
    APPLICATION_CONSISTENT,
    CRASH_CONSISTENT,
    INCONSISTENT,
)
from airflow_provider_skytap.quiesce.session import (
    GuardianFiredError,
    HostStepError,
    QuiesceError,
    QuiesceSession,
    wants_sudo,
)
from airflow_provider_skytap.quiesce.spec import (
    FAILURE_POLICIES,
    MAX_PARALLEL,
    QuiesceSpec,
    QuiesceTarget,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "APPLICATION_CONSISTENT",
    "CRASH_CONSISTENT",
    "FAILURE_POLICIES",
    "INCONSISTENT",
    "GuardianFiredError",
    "HostStepError",
    "QuiesceChoice",
    "QuiesceError",
    "QuiesceOperator",
    "QuiescePreset",
    "QuiesceTarget",
    "wants_sudo",
]

Action = Literal["freeze", "thaw"]
ACTIONS = ("freeze", "thaw")


class QuiesceOperator(BaseOperator):
    """Freeze (or thaw) the filesystems of several VMs over SSH, in parallel, guarded on each VM.

    ``action="freeze"`` arms a guardian on each VM that freezes the ``mounts`` and holds them
    until the thaw task tells it to thaw, a signal arrives, or ``max_freeze_seconds`` pass, so
    a dead Airflow worker never leaves a VM frozen. ``action="thaw"`` tells the guardians to
    thaw (or thaws in their place), checks every mount is writable again and reports, per host
    and overall, whether the copy taken in between is application-consistent. Profile ``app``
    freezes no filesystem: the guardian holds the application's own pause instead, and needs
    no root.

    :param action: ``"freeze"`` or ``"thaw"``
    :param mounts: mount points to freeze, in order (thawed in reverse): one list for every
        VM, or a mapping from SSH connection id (or, with ``environment_id``, VM name) to that
        VM's list, with an optional ``"*"`` entry for the others. Profile ``app``: the
        application's directories (plain directories will do; the thaw checks each is writable)
    :param max_freeze_seconds: the longest the VMs may stay frozen; the guardian thaws by itself
        then and the copy is reported as not application-consistent. Required for freeze.
    :param ssh_conn_ids: the targets as SSH connection ids (one per VM); or else
    :param environment_id: a Skytap environment whose VMs are the targets, reached through
        their published SSH services (:meth:`SkytapHook.get_ssh_endpoints`)
    :param vm_names: with ``environment_id``: only the VMs with these names
    :param ssh_conn_id: with ``environment_id``: the SSH connection giving user and key
    :param skytap_conn_id: with ``environment_id``: the Skytap connection
    :param profile: ``fsfreeze`` (default), ``postgres`` (CHECKPOINT, then freeze), ``mysql``
        (a lock held until the thaw: BACKUP STAGE BLOCK_COMMIT on MariaDB 10.4.1 and later, else
        FLUSH TABLES WITH READ LOCK), ``custom``, or ``app`` (no filesystem
        freeze: ``pre_freeze_command`` pauses the application, ``post_thaw_command`` resumes it;
        needs no root)
    :param profile_options: options of the profile (postgres: os_user, psql, host, port,
        database; mysql: os_user, mysql, defaults_file, socket, lock: ``auto``, ``backup_stage``
        or ``ftwrl``)
    :param pre_freeze_command: ``custom``: shell command run as root before the first freeze;
        ``app`` (required): the pause, run once the guardian is armed
    :param post_thaw_command: ``custom``: shell command run as root after the last thaw;
        ``app`` (required): the resume, run whenever the hold ends (also after a failed pause)
    :param allow_root_fs: allow freezing ``/``, ``/boot``, ``/usr`` and ``/var`` (dangerous)
    :param failure_policy: ``fail`` (default: any host that cannot be frozen fails the task
        after thawing the others; a guardian that fired fails the thaw) or
        ``continue_crash_consistent`` (go on without that host and report crash-consistent)
    :param max_parallel: how many hosts are worked on at once (default 64: an environment's
        VMs all at once, so 32 hosts take about as long as one rather than four rounds)
    :param step_timeout: seconds a profile step (CHECKPOINT, the MySQL lock, custom commands)
        may take on a VM
    :param probe_timeout: seconds the thaw's write probe may take per mount
    :param use_sudo: run the VM side through ``sudo -n``; default: unless the SSH user is root,
        or the profile is ``app`` (which then runs as the SSH user)
    :param ssh_connect_attempts: attempts to open each SSH connection (SSHHook's retries)
    :param freeze_task_id: thaw: the freeze task, whose report places the freezes on the
        controller's clock for the whole freeze window (else each host's own window is given)
    """

    template_fields: Sequence[str] = (
        "mounts",
        "max_freeze_seconds",
        "ssh_conn_ids",
        "environment_id",
        "vm_names",
        "ssh_conn_id",
        "skytap_conn_id",
        "profile",
        "profile_options",
        "pre_freeze_command",
        "post_thaw_command",
        "failure_policy",
        "max_parallel",
        "step_timeout",
        "probe_timeout",
    )
    template_fields_renderers = {
        "profile_options": "json",
        "pre_freeze_command": "bash",
        "post_thaw_command": "bash",
    }
    ui_color = "#c6e2ff"

    def __init__(
        self,
        *,
        action: Action,
        mounts: Sequence[str] | dict[str, Sequence[str]] | str,
        max_freeze_seconds: float | str | None = None,
        ssh_conn_ids: Sequence[str] | str | None = None,
        environment_id: str | int | None = None,
        vm_names: Sequence[str] | str | None = None,
        ssh_conn_id: str = "ssh_default",
        skytap_conn_id: str = "skytap_default",
        profile: str = "fsfreeze",
        profile_options: dict[str, Any] | None = None,
        pre_freeze_command: str | None = None,
        post_thaw_command: str | None = None,
        allow_root_fs: bool = False,
        failure_policy: str = "fail",
        max_parallel: int | str = MAX_PARALLEL,
        step_timeout: float | str = 120,
        probe_timeout: float | str = 10,
        use_sudo: bool | None = None,
        ssh_connect_attempts: int = 3,
        freeze_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Only the shape of the task is checked here; templated values are checked in execute.
        if action not in ACTIONS:
            raise ValueError(f"action must be 'freeze' or 'thaw', got {action!r}")
        if (ssh_conn_ids is None) == (environment_id is None):
            raise ValueError("give the targets as either ssh_conn_ids or environment_id")
        if action == "freeze" and max_freeze_seconds is None:
            raise ValueError(
                "max_freeze_seconds is required to freeze: the guardian on each VM thaws by "
                "itself after that many seconds (size it to the copy, plus a margin)"
            )
        self.action = action
        self.mounts = mounts
        self.max_freeze_seconds = max_freeze_seconds
        self.ssh_conn_ids = ssh_conn_ids
        self.environment_id = environment_id
        self.vm_names = vm_names
        self.ssh_conn_id = ssh_conn_id
        self.skytap_conn_id = skytap_conn_id
        self.profile = profile
        self.profile_options = profile_options
        self.pre_freeze_command = pre_freeze_command
        self.post_thaw_command = post_thaw_command
        self.allow_root_fs = allow_root_fs
        self.failure_policy = failure_policy
        self.max_parallel = max_parallel
        self.step_timeout = step_timeout
        self.probe_timeout = probe_timeout
        self.use_sudo = use_sudo
        self.ssh_connect_attempts = ssh_connect_attempts
        self.freeze_task_id = freeze_task_id
        # The freeze's report when the freeze ran in this process (frozen_copy's early thaw).
        self.freeze_report: dict[str, Any] | None = None
        self._session: QuiesceSession | None = None

    @cached_property
    def skytap_hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)

    def spec(self) -> QuiesceSpec:
        """The rendered settings, validated (a ValueError names the field and the value)."""
        return QuiesceSpec.build(
            mounts=self.mounts,
            max_freeze_seconds=(
                None
                if self.action == "thaw" and self.max_freeze_seconds is None
                else self.max_freeze_seconds
            ),
            profile=self.profile,
            profile_options=self.profile_options,
            pre_freeze_command=self.pre_freeze_command,
            post_thaw_command=self.post_thaw_command,
            allow_root_fs=bool(self.allow_root_fs),
            failure_policy=self.failure_policy,
            max_parallel=self.max_parallel,
            step_timeout=self.step_timeout,
            probe_timeout=self.probe_timeout,
            use_sudo=self.use_sudo,
            ssh_connect_attempts=self.ssh_connect_attempts,
        )

    def resolve_targets(self) -> list[QuiesceTarget]:
        """The VMs to work on: the SSH connection ids, or the environment's VMs via Skytap."""
        if self.ssh_conn_ids is not None:
            ids = _string_list("ssh_conn_ids", self.ssh_conn_ids)
            return [QuiesceTarget(key=cid, name=cid, label=cid, ssh_conn_id=cid) for cid in ids]
        env_id = str(self.environment_id)
        names = None if self.vm_names is None else _string_list("vm_names", self.vm_names)
        endpoints = self.skytap_hook.get_ssh_endpoints(env_id, names)
        return [
            QuiesceTarget(
                key=f"env{env_id}-vm{ep.vm_id}",
                name=ep.vm_name,
                label=f"{ep.vm_name} (VM {ep.vm_id} at {ep.host}:{ep.port})",
                ssh_conn_id=str(self.ssh_conn_id),
                host=ep.host,
                port=ep.port,
            )
            for ep in endpoints
        ]

    def open_session(self, context: Context) -> QuiesceSession:
        """The checked settings and the resolved targets as a session (no host touched yet).

        :raises InvalidValueError: a bad value (named), before any host is contacted
        """
        try:  # a bad value fails the task at once, without retries, before any host
            spec = self.spec()
            targets = self.resolve_targets()
            field = "ssh_conn_id" if self.ssh_conn_ids is None else "ssh_conn_ids"
            for conn_id in dict.fromkeys(t.ssh_conn_id for t in targets):
                _check_ssh_connection(field, conn_id)
            session = QuiesceSession(
                spec, targets, dag_id=self.dag_id, run_id=str(context["run_id"]), logger=self.log
            )
        except InvalidValueError:
            raise
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        self.log.info(
            "%s %d host(s), profile %s: %s",
            self.action.capitalize(),
            len(session.hosts),
            spec.profile,
            "; ".join(f"{h.label} {h.mounts}" for h in session.hosts),
        )
        self._session = session
        return session

    def execute(self, context: Context) -> dict[str, Any]:
        with self.open_session(context) as session:
            if self.action == "freeze":
                return session.freeze().to_xcom()
            try:
                return session.release(freeze_report=self._freeze_report(context)).to_xcom()
            except QuiesceError as err:
                if err.result is not None:
                    _push_result(context, err.result)
                raise

    def _freeze_report(self, context: Context) -> dict[str, Any] | None:
        if self.freeze_report is not None or not self.freeze_task_id:
            return self.freeze_report
        ti = context.get("ti")
        pulled = None if ti is None else ti.xcom_pull(task_ids=self.freeze_task_id)
        return pulled if isinstance(pulled, dict) else None

    def on_kill(self) -> None:
        """A freeze task being killed thaws whatever it had frozen (the copy never starts)."""
        session = self._session
        if self.action == "freeze" and session is not None and session.armed:
            self.log.warning("Killed while freezing: thawing what this task froze")
            session.release_armed("kill")


def _check_ssh_connection(field: str, conn_id: str) -> None:
    """Fail once, naming the id, when an SSH connection is not defined (before any host)."""
    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ValueError(f"{field}: {conn_id!r} is not an Airflow connection ({detail})") from exc


def _push_result(context: Context, result: dict[str, Any]) -> None:
    """Keep the report as the task's XCom even when the task fails."""
    ti = context.get("ti")
    if ti is not None:
        ti.xcom_push(key="return_value", value=result)


def _string_list(field: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or not value:
        raise ValueError(f"{field} must be a non-empty list of strings, got {value!r}")
    items = [str(v) for v in value]
    if any(not v for v in items):
        raise ValueError(f"{field} must not contain empty names, got {value!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"{field} lists a name twice: {value!r}")
    return items


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
