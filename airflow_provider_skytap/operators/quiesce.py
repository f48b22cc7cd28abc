"""QuiesceOperator: freeze or thaw the filesystems (or pause and resume the applications) of
many VMs over SSH, guarded on each VM."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_skytap import checks
from airflow_provider_skytap.hooks.api import SkytapAuthError, SkytapNotFoundError
from airflow_provider_skytap.hooks.skytap import SkytapHook
from airflow_provider_skytap.quiesce import commands as qc

if TYPE_CHECKING:
    from airflow.providers.ssh.hooks.ssh import SSHHook
    from airflow.sdk import Context

Action = Literal["freeze", "thaw"]
ACTIONS = ("freeze", "thaw")
FAILURE_POLICIES = ("fail", "continue_crash_consistent")
APPLICATION_CONSISTENT = "application-consistent"
CRASH_CONSISTENT = "crash-consistent"
INCONSISTENT = "inconsistent"
_WORST = {APPLICATION_CONSISTENT: 0, CRASH_CONSISTENT: 1, INCONSISTENT: 2}
# How long the thaw waits for a guardian to answer before unfreezing in its place.
GUARDIAN_WAIT = 30
# Hosts worked on at once by default: each is a thread waiting on its SSH session, cheap on
# the worker; bounding it lower made 32 hosts take four rounds of every step.
MAX_PARALLEL = 64
# Slack on top of what a remote step may take, for SSH itself.
SSH_SLACK = 30
T = TypeVar("T")


class QuiesceError(AirflowException):
    """A freeze or thaw failed; ``result`` holds the per-host report when there is one."""

    def __init__(self, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


class GuardianFiredError(QuiesceError, AirflowFailException):
    """The thaw found every host thawed, but a guardian had thawed before the thaw task: the
    copy is not application-consistent. Final: a retry would read the same records, so the
    task fails without one (``AirflowFailException``)."""


class HostStepError(QuiesceError):
    """One step failed on one host: names the host, the step, the exit code and remote stderr."""

    def __init__(
        self,
        host: str,
        step: str,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: str = "",
        report: dict[str, Any] | None = None,
    ) -> None:
        text = f"{host}: {step} failed"
        if exit_code is not None:
            text += f" (exit {exit_code})"
        text += f": {message}"
        if stderr and stderr not in message:
            text += f"; remote stderr: {stderr}"
        super().__init__(text)
        self.host = host
        self.step = step
        self.exit_code = exit_code
        self.report = report or {}


@dataclass(frozen=True)
class QuiesceTarget:
    """One VM to quiesce: its stable key (part of the guardian's name) and how to reach it."""

    key: str
    name: str  # what ``mounts`` may be keyed by: the SSH connection id, or the VM's name
    label: str
    ssh_conn_id: str
    host: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class _Settings:
    """The operator's templated values, rendered and validated."""

    mounts: dict[str, list[str]]  # target name (or "*") -> mounts
    profile: str
    options: dict[str, str]
    max_seconds: int | None
    failure_policy: str
    max_parallel: int
    step_timeout: int
    probe_timeout: int


class _Host:
    """One target's SSH session (an SSHHook and its client) and the guardian commands on it."""

    def __init__(
        self,
        target: QuiesceTarget,
        gid: str,
        mounts: list[str],
        *,
        profile: str,
        use_sudo: bool | None,
        connect_attempts: int,
    ) -> None:
        self.target = target
        self.gid = gid
        self.mounts = mounts
        self.profile = profile
        self._use_sudo = use_sudo
        self._connect_attempts = connect_attempts

    @property
    def label(self) -> str:
        return self.target.label

    @cached_property
    def hook(self) -> SSHHook:
        # paramiko, most of this module's import time, loads when a task connects, not when
        # a DAG file is parsed (bench/results/parse_import.md).
        from airflow.providers.ssh.hooks.ssh import SSHHook

        return SSHHook(
            ssh_conn_id=self.target.ssh_conn_id,
            remote_host=self.target.host or "",
            port=self.target.port,
            conn_retry_attempts=self._connect_attempts,
        )

    @cached_property
    def sudo(self) -> bool:
        return wants_sudo(self._use_sudo, self.hook.username, self.profile)

    def address(self) -> str:
        return f"{self.hook.username}@{self.hook.remote_host}:{self.hook.port}"

    def run(self, step: str, action: str, args: Sequence[str], *, timeout: float) -> dict[str, Any]:
        """Run one guardian command (installing the script first if the VM lacks it)."""
        try:
            sudo = self.sudo
        except Exception as exc:  # the SSH connection cannot be read or is incomplete
            how = f"ssh_conn_id {self.target.ssh_conn_id!r}: {_describe(exc)}"
            raise HostStepError(self.label, f"{step} (ssh connection)", how) from exc
        command = qc.run_command(action, args, sudo=sudo)
        code, out, err = self._exec(step, command, timeout)
        if code == qc.NOT_INSTALLED:
            install_code, install_out, install_err = self._exec(
                step, qc.install_command(sudo=sudo), 120
            )
            if install_code != 0:
                where = qc.LIB_DIR if sudo else f"{qc.LIB_DIR} (root) or {qc.USER_STATE_DIR}/lib"
                reason = qc.parse_report(install_out).get("error")
                raise HostStepError(
                    self.label,
                    step,
                    f"could not install the guardian script in {where}"
                    + (f": {reason}" if reason else ""),
                    exit_code=install_code,
                    stderr=install_err,
                )
            code, out, err = self._exec(step, command, timeout)
        report = qc.parse_report(out)
        report["exit_code"] = code
        report["stderr"] = err
        return report

    def _exec(self, step: str, command: str, timeout: float) -> tuple[int, str, str]:
        try:
            client = self.hook.get_conn()
        except Exception as exc:
            user = getattr(self.__dict__.get("hook"), "username", None)
            how = f"as {user!r} with ssh_conn_id {self.target.ssh_conn_id!r}: {_describe(exc)}"
            raise HostStepError(self.label, f"{step} (ssh connect)", how) from exc
        try:
            code, out, err = self.hook.exec_ssh_client_command(
                client, command, get_pty=False, environment=None, timeout=timeout
            )
        except Exception as exc:
            raise HostStepError(self.label, step, f"ssh: {_describe(exc)}") from exc
        return code, out.decode("utf-8", "replace"), _tail(err.decode("utf-8", "replace"))

    def close(self) -> None:
        if "hook" in self.__dict__ and self.hook.client is not None:
            self.hook.client.close()
            self.hook.client = None


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
        (FLUSH TABLES WITH READ LOCK held until thaw), ``custom``, or ``app`` (no filesystem
        freeze: ``pre_freeze_command`` pauses the application, ``post_thaw_command`` resumes it;
        needs no root)
    :param profile_options: options of the profile (postgres: os_user, psql, host, port,
        database; mysql: os_user, mysql, defaults_file, socket)
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
        self._armed: list[_Host] = []
        self._armed_lock = threading.Lock()
        self._current: _Settings | None = None

    @cached_property
    def skytap_hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)

    # ---------------------------------------------------------------- settings and targets

    def _settings(self) -> _Settings:
        if self.failure_policy not in FAILURE_POLICIES:
            raise ValueError(
                f"failure_policy must be one of {', '.join(FAILURE_POLICIES)}, "
                f"got {self.failure_policy!r}"
            )
        return _Settings(
            mounts=qc.validate_mount_map(
                self.mounts, allow_root_fs=bool(self.allow_root_fs), profile=str(self.profile)
            ),
            profile=str(self.profile),
            options=qc.validate_profile(
                self.profile,
                self.profile_options,
                pre_freeze_command=self.pre_freeze_command,
                post_thaw_command=self.post_thaw_command,
            ),
            max_seconds=(
                None
                if self.action == "thaw" and self.max_freeze_seconds is None
                else checks.whole_seconds("max_freeze_seconds", self.max_freeze_seconds)
            ),
            failure_policy=self.failure_policy,
            max_parallel=checks.positive_int("max_parallel", self.max_parallel),
            step_timeout=checks.whole_seconds("step_timeout", self.step_timeout),
            probe_timeout=checks.whole_seconds("probe_timeout", self.probe_timeout),
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

    # ---------------------------------------------------------------- execute

    def execute(self, context: Context) -> dict[str, Any]:
        try:  # a bad value fails the task at once, without retries, before any host
            settings = self._settings()
            self._current = settings
            self._armed = []
            targets = self.resolve_targets()
            field = "ssh_conn_id" if self.ssh_conn_ids is None else "ssh_conn_ids"
            for conn_id in dict.fromkeys(t.ssh_conn_id for t in targets):
                _check_ssh_connection(field, conn_id)
            mounts = qc.mounts_per_target(settings.mounts, [t.name for t in targets])
        except ValueError as exc:
            raise checks.InvalidValueError(str(exc)) from None
        except (SkytapNotFoundError, SkytapAuthError) as exc:
            # No such environment, or the token refused: a retry meets the same answer.
            raise AirflowFailException(str(exc)) from exc
        run_id = str(context["run_id"])
        hosts = [
            _Host(
                t,
                qc.guardian_id(self.dag_id, run_id, t.key),
                mounts[t.name],
                profile=settings.profile,
                use_sudo=self.use_sudo,
                connect_attempts=checks.positive_int(
                    "ssh_connect_attempts", self.ssh_connect_attempts
                ),
            )
            for t in targets
        ]
        self.log.info(
            "%s %d host(s), profile %s: %s",
            self.action.capitalize(),
            len(hosts),
            settings.profile,
            "; ".join(f"{h.label} {h.mounts}" for h in hosts),
        )
        try:
            if self.action == "freeze":
                return self._freeze(settings, hosts)
            return self._thaw(settings, hosts, context)
        finally:
            for host in hosts:
                host.close()

    def on_kill(self) -> None:
        """A freeze task being killed thaws whatever it had frozen (the copy never starts)."""
        with self._armed_lock:
            armed = list(self._armed)
        settings = self._current
        if self.action == "freeze" and armed and settings is not None:
            self.log.warning("Killed while freezing: thawing %d host(s)", len(armed))
            self._release(settings, armed, reason="kill")

    # ---------------------------------------------------------------- freeze

    def _freeze(self, settings: _Settings, hosts: list[_Host]) -> dict[str, Any]:
        results = {h.gid: self._freeze_result(h, settings) for h in hosts}
        # Phase 1, nothing frozen yet: connect and check every host, in parallel.
        checked = self._each(settings, hosts, lambda h: self._preflight(settings, h))
        failed = {h: exc for h, exc in checked.items() if isinstance(exc, Exception)}
        for host, exc in failed.items():
            results[host.gid].update(status="not-frozen", error=str(exc))
        if failed:
            message = _joined("preflight failed; nothing was frozen", failed.values())
            if settings.failure_policy == "fail":
                summary = self._freeze_summary(results, settings.max_seconds)
                raise QuiesceError(message, result=summary)
            self.log.warning("%s; going on crash-consistent without those hosts", message)
        ready = [h for h in hosts if h not in failed]
        # Barrier: every host passed preflight. Phase 2: arm the guardians and freeze, in
        # parallel over the SSH sessions already open, so the first host's freeze is not
        # stretched by the others' connection set-up.
        try:
            frozen = self._each(settings, ready, lambda h: self._arm(settings, h, results))
        except BaseException:
            # Interrupted (task timeout, KeyboardInterrupt): never leave anything frozen.
            self._release(settings, self._armed, reason="rollback")
            raise
        failed2 = {h: exc for h, exc in frozen.items() if isinstance(exc, Exception)}
        for host, exc in failed2.items():
            results[host.gid].update(status="not-frozen", error=str(exc))
        if failed2:
            # A host that failed may have frozen part of its mounts, or timed out mid-freeze:
            # it is thawed too (thaw is idempotent). Under "fail" every host is thawed.
            to_thaw = ready if settings.failure_policy == "fail" else list(failed2)
            self._release(settings, to_thaw, reason="rollback", results=results)
            message = _joined("freeze failed", failed2.values())
            if settings.failure_policy == "fail":
                raise QuiesceError(
                    f"{message}; thawed the {len(to_thaw)} host(s) again",
                    result=self._freeze_summary(results, settings.max_seconds),
                )
            self.log.warning("%s; going on crash-consistent without those hosts", message)
        summary = self._freeze_summary(results, settings.max_seconds)
        self.log.info(
            "Frozen %d of %d host(s); consistency %s; the guardians thaw by themselves after %d s",
            summary["frozen_hosts"],
            len(hosts),
            summary["consistency"],
            settings.max_seconds,
        )
        return summary

    def _preflight(self, settings: _Settings, host: _Host) -> dict[str, Any]:
        args = qc.preflight_args(
            host.gid,
            host.mounts,
            allow_root_fs=bool(self.allow_root_fs),
            profile=settings.profile,
        )
        # a bounded write probe per mount, and perhaps releasing an earlier try's guardian
        timeout = 3 * len(host.mounts) + GUARDIAN_WAIT + SSH_SLACK
        report = host.run("preflight", "preflight", args, timeout=timeout)
        _raise_for(host, "preflight", report)
        if report.get("previous_guardian"):
            self.log.warning(
                "%s: a guardian of an earlier try still held the freeze; it thawed first",
                host.label,
            )
        self.log.info("%s: preflight ok (%s)", host.label, host.address())
        return report

    def _arm(self, settings: _Settings, host: _Host, results: dict[str, Any]) -> dict[str, Any]:
        assert settings.max_seconds is not None
        with self._armed_lock:
            self._armed.append(host)
        args = qc.arm_args(
            host.gid,
            host.mounts,
            profile=settings.profile,
            options=settings.options,
            max_seconds=settings.max_seconds,
            step_timeout=settings.step_timeout,
        )
        timeout = settings.step_timeout + 60 + SSH_SLACK
        report = host.run("freeze", "arm", args, timeout=timeout)
        result = results[host.gid]
        result.update(
            status=report.get("status") or "unknown",
            pid=_int(report.get("pid")),
            frozen_at=_iso(report.get("frozen_at")),
            deadline_at=_iso(report.get("deadline_at")),
            mounts=qc.mount_states(report["mount"]),
        )
        result["exit_codes"].update(
            arm=report["exit_code"],
            pre_freeze=_int(report.get("pre_freeze_rc")),
            freeze=_int(report.get("freeze_rc")),
        )
        _raise_for(host, report.get("error_step") or "freeze", report)
        result.update(consistency=APPLICATION_CONSISTENT, error=None)
        self.log.info(
            "%s: %s at %s (%s); guardian pid %s thaws by itself at %s",
            host.label,
            "paused" if settings.profile == qc.APP else "frozen",
            result["frozen_at"],
            ", ".join(host.mounts),
            result["pid"],
            result["deadline_at"],
        )
        return report

    def _freeze_result(self, host: _Host, settings: _Settings) -> dict[str, Any]:
        return {
            "host": host.label,
            "target": host.target.key,
            "guardian_id": host.gid,
            "profile": settings.profile,
            "status": "not-frozen",
            "frozen_at": None,
            "deadline_at": None,
            "pid": None,
            "mounts": {},
            "exit_codes": {},
            "consistency": CRASH_CONSISTENT,
            "error": None,
        }

    def _freeze_summary(self, results: dict[str, Any], max_seconds: int | None) -> dict[str, Any]:
        hosts = list(results.values())
        frozen = [r for r in hosts if r["status"] == "frozen"]
        times = sorted(r["frozen_at"] for r in frozen if r["frozen_at"])
        return {
            "action": "freeze",
            "consistency": _worst(r["consistency"] for r in hosts),
            "frozen_hosts": len(frozen),
            "first_frozen_at": times[0] if times else None,
            "last_frozen_at": times[-1] if times else None,
            "max_freeze_seconds": max_seconds,
            "hosts": hosts,
        }

    def _release(
        self,
        settings: _Settings,
        hosts: Iterable[_Host],
        *,
        reason: str,
        results: dict[str, Any] | None = None,
    ) -> None:
        """Thaw hosts the freeze task armed, over the sessions already open; errors logged."""
        targets = list(dict.fromkeys(hosts))
        if not targets:
            return
        done = self._each(settings, targets[::-1], lambda h: self._thaw_host(settings, h, reason))
        for host, outcome in done.items():
            if isinstance(outcome, Exception):
                self.log.error("%s: could not thaw again: %s", host.label, outcome)
                continue
            self.log.info("%s: thawed again (%s)", host.label, reason)
            if results is not None:
                results[host.gid].update(status="thawed", consistency=CRASH_CONSISTENT)

    # ---------------------------------------------------------------- thaw

    def _thaw_host(self, settings: _Settings, host: _Host, reason: str) -> dict[str, Any]:
        args = qc.thaw_args(
            host.gid,
            host.mounts,
            reason=reason,
            probe_timeout=settings.probe_timeout,
            wait=GUARDIAN_WAIT,
            profile=settings.profile,
        )
        timeout = GUARDIAN_WAIT + settings.probe_timeout * len(host.mounts) + SSH_SLACK
        report = host.run("thaw", "thaw", args, timeout=timeout)
        _raise_for(host, report.get("error_step") or "thaw", report)
        return report

    def _thaw(self, settings: _Settings, hosts: list[_Host], context: Context) -> dict[str, Any]:
        # Reverse order: the last host frozen is the first thawed.
        done = self._each(settings, hosts[::-1], lambda h: self._thaw_host(settings, h, "thaw"))
        results: list[dict[str, Any]] = []
        errors: list[Exception] = []
        for host in hosts:
            outcome = done[host]
            if isinstance(outcome, HostStepError):
                errors.append(outcome)
                results.append(self._thaw_result(host, settings, outcome.report, str(outcome)))
            elif isinstance(outcome, Exception):
                errors.append(outcome)
                results.append(self._thaw_result(host, settings, {}, str(outcome)))
            else:
                results.append(self._thaw_result(host, settings, outcome, None))
        summary = _thaw_summary(results)
        window = summary["freeze_window"]
        self.log.info(
            "Thawed %d host(s); freeze window %s s (%s to %s); consistency %s",
            len(hosts),
            window["seconds"],
            window["first_frozen_at"],
            window["last_thawed_at"],
            summary["consistency"],
        )
        if errors:
            _push_result(context, summary)
            raise QuiesceError(_joined("thaw failed", errors), result=summary)
        fired = [r for r in results if r["guardian_fired"]]
        if fired:
            message = "; ".join(
                f"{r['host']}: the guardian thawed by itself ({r['fired_by']}) at "
                f"{r['thawed_at']}, before the thaw task"
                + (
                    f" (max_freeze_seconds reached, {r['seconds_frozen']} s after the freeze: "
                    "make it longer than the copy takes)"
                    if r["fired_by"] == "deadline"
                    else ""
                )
                for r in fired
            )
            message += ": the copy is not application-consistent"
            if settings.failure_policy == "fail":
                _push_result(context, summary)
                raise GuardianFiredError(message, result=summary)
            self.log.warning("%s", message)
        return summary

    def _thaw_result(
        self, host: _Host, settings: _Settings, report: dict[str, Any], error: str | None
    ) -> dict[str, Any]:
        fired_by = report.get("fired") or None
        fired = fired_by in qc.GUARDIAN_FIRED
        frozen_at = _epoch(report.get("frozen_at"))
        thawed_at = _epoch(report.get("thawed_at"))
        if fired:
            consistency = INCONSISTENT
        elif report.get("status") == "thawed" and frozen_at is not None:
            consistency = APPLICATION_CONSISTENT
        else:
            consistency = CRASH_CONSISTENT
        outcomes = qc.mount_states(report.get("outcome", []))
        for mount, outcome in outcomes.items():
            if outcome == "not-ours":
                self.log.warning(
                    "%s: %s was frozen by another process; left frozen", host.label, mount
                )
            elif outcome == "not-armed":
                self.log.warning(
                    "%s: this run never froze %s (no guardian record); left as it is",
                    host.label,
                    mount,
                )
        if error is None:
            self.log.info(
                "%s: thawed (guardian %s, %s); frozen %s s",
                host.label,
                report.get("guardian"),
                fired_by or "not fired",
                _seconds(frozen_at, thawed_at),
            )
        return {
            "host": host.label,
            "target": host.target.key,
            "guardian_id": host.gid,
            "profile": report.get("profile") or settings.profile,
            "guardian": report.get("guardian"),
            "fired_by": fired_by,
            "guardian_fired": fired,
            "frozen_at": _iso(frozen_at),
            "thawed_at": _iso(thawed_at),
            "seconds_frozen": _seconds(frozen_at, thawed_at),
            "mounts": outcomes,
            "exit_codes": {
                "thaw_task": report.get("exit_code"),
                "pre_freeze": _int(report.get("pre_freeze_rc")),
                "freeze": _int(report.get("freeze_rc")),
                "thaw": _int(report.get("thaw_rc")),
                "post_thaw": _int(report.get("post_thaw_rc")),
            },
            "consistency": consistency,
            "error": error,
            "_frozen_epoch": frozen_at,
            "_thawed_epoch": thawed_at,
        }

    # ---------------------------------------------------------------- parallel

    def _each(
        self, settings: _Settings, hosts: list[_Host], work: Callable[[_Host], T]
    ) -> dict[_Host, T | Exception]:
        """``work`` on every host, at most ``max_parallel`` at once; an exception is a result."""
        if not hosts:
            return {}
        workers = min(settings.max_parallel, len(hosts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quiesce") as pool:
            futures = {host: pool.submit(work, host) for host in hosts}
        outcomes: dict[_Host, T | Exception] = {}
        for host, future in futures.items():
            exc = future.exception()
            outcomes[host] = exc if isinstance(exc, Exception) else future.result()
        return outcomes


# -------------------------------------------------------------------- helpers


def wants_sudo(use_sudo: bool | None, username: str | None, profile: str) -> bool:
    """Whether the VM side runs through ``sudo -n``: as told, else for users other than root,
    except with profile ``app``, which needs no root and then runs as the SSH user."""
    if use_sudo is not None:
        return use_sudo
    return username != "root" and profile != qc.APP


def _check_ssh_connection(field: str, conn_id: str) -> None:
    """Fail once, naming the id, when an SSH connection is not defined (before any host)."""
    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise ValueError(
            f"{field}: {conn_id!r} is not an Airflow connection ({_describe(exc)})"
        ) from exc


def _raise_for(host: _Host, step: str, report: dict[str, Any]) -> None:
    """A non-zero exit of a guardian command as a HostStepError with the script's own reason."""
    code = report.get("exit_code")
    if code == 0:
        return
    reason = report.get("error") or "the command failed"
    step = report.get("error_step") or step
    raise HostStepError(
        host.label, step, reason, exit_code=code, stderr=report.get("stderr", ""), report=report
    )


def _thaw_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    frozen = [r["_frozen_epoch"] for r in results if r["_frozen_epoch"] is not None]
    thawed = [r["_thawed_epoch"] for r in results if r["_thawed_epoch"] is not None]
    first = min(frozen) if frozen else None
    last = max(thawed) if thawed else None
    for r in results:
        del r["_frozen_epoch"], r["_thawed_epoch"]
    return {
        "action": "thaw",
        "consistency": _worst(r["consistency"] for r in results),
        "freeze_window": {
            "first_frozen_at": _iso(first),
            "last_thawed_at": _iso(last),
            "seconds": _seconds(first, last),
        },
        "hosts": results,
    }


def _push_result(context: Context, result: dict[str, Any]) -> None:
    """Keep the report as the task's XCom even when the task fails."""
    ti = context.get("ti")
    if ti is not None:
        ti.xcom_push(key="return_value", value=result)


def _worst(levels: Iterable[str]) -> str:
    return max(levels, key=_WORST.__getitem__, default=CRASH_CONSISTENT)


def _joined(what: str, errors: Iterable[BaseException]) -> str:
    return f"{what}: " + " | ".join(str(e) for e in errors)


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


def _epoch(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _iso(value: Any) -> str | None:
    epoch = value if isinstance(value, float) else _epoch(value)
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


def _int(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _tail(text: str, limit: int = 1500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
