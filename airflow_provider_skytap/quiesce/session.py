"""One quiesce session: preflight every host, arm the guardians, release them; over SSH.

The API the operators (and any task that waits for a copy) use::

    spec = QuiesceSpec.build(mounts=["/data"], max_freeze_seconds=600)
    with QuiesceSession(spec, targets, dag_id=..., run_id=...) as session:
        frozen = session.freeze()          # FreezeReport; raises QuiesceError (all thawed)
        ...copy...
        thawed = session.release()         # ThawReport; one round trip per host

A session keeps the SSH connections it opened for the freeze and releases over them. A
release from another session (another task: the ``all_done`` safety net) reconnects; the
guardians are found by name (``commands.guardian_id``), and a release is idempotent.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

# The error classes are defined in airflow_provider_skytap.exceptions.
from airflow_provider_skytap.exceptions import GuardianFiredError, HostStepError, QuiesceError
from airflow_provider_skytap.quiesce import commands as qc
from airflow_provider_skytap.quiesce.report import (
    APPLICATION_CONSISTENT,
    CRASH_CONSISTENT,
    INCONSISTENT,
    Answer,
    FreezeReport,
    HostReport,
    ThawReport,
    boot_id,
    controller_freezes,
    epoch,
    integer,
    monotonic,
)
from airflow_provider_skytap.quiesce.spec import QuiesceSpec, QuiesceTarget

if TYPE_CHECKING:
    from airflow.providers.ssh.hooks.ssh import SSHHook

# Slack on top of what a remote step may take, for SSH itself.
SSH_SLACK = 30
T = TypeVar("T")
log = logging.getLogger(__name__)


def wants_sudo(use_sudo: bool | None, username: str | None, profile: str) -> bool:
    """Whether the VM side runs through ``sudo -n``: as told, else for users other than root,
    except with profile ``app``, which needs no root and then runs as the SSH user."""
    if use_sudo is not None:
        return use_sudo
    return username != "root" and profile != qc.APP


class _Host:
    """One target's SSH connection (kept open for the session) and the guardian commands."""

    def __init__(self, target: QuiesceTarget, gid: str, mounts: list[str], spec: QuiesceSpec):
        self.target = target
        self.gid = gid
        self.mounts = mounts
        self.spec = spec

    @property
    def label(self) -> str:
        return self.target.label

    @cached_property
    def hook(self) -> SSHHook:
        # paramiko loads when a task connects, not when a DAG file is parsed.
        from airflow.providers.ssh.hooks.ssh import SSHHook

        return SSHHook(
            ssh_conn_id=self.target.ssh_conn_id,
            remote_host=self.target.host or "",
            port=self.target.port,
            conn_retry_attempts=self.spec.connect_attempts,
        )

    @cached_property
    def sudo(self) -> bool:
        return wants_sudo(self.spec.use_sudo, self.hook.username, self.spec.profile)

    def address(self) -> str:
        return f"{self.hook.username}@{self.hook.remote_host}:{self.hook.port}"

    def run(self, step: str, action: str, args: Sequence[str], *, timeout: float) -> Answer:
        """Run one guardian command (installing the script first if the VM lacks it); a
        non-zero exit raises :class:`HostStepError` with the script's own reason."""
        try:
            sudo = self.sudo
        except Exception as exc:  # the SSH connection cannot be read or is incomplete
            how = f"ssh_conn_id {self.target.ssh_conn_id!r}: {_describe(exc)}"
            raise HostStepError(self.label, f"{step} (ssh connection)", how) from exc
        command = qc.run_command(action, args, sudo=sudo)
        sent = time.time()
        code, out, err = self._exec(step, command, timeout)
        if code == qc.NOT_INSTALLED:
            install_code, install_out, install_err = self._exec(
                step, qc.install_command(sudo=sudo), 120
            )
            if install_code != 0:
                where = qc.LIB_DIR if sudo else f"{qc.LIB_DIR} (root) or {qc.USER_STATE_DIR}/lib"
                reason = self._parse(step, install_out).get("error")
                raise HostStepError(
                    self.label,
                    step,
                    f"could not install the guardian script in {where}"
                    + (f": {reason}" if reason else ""),
                    exit_code=install_code,
                    stderr=install_err,
                )
            sent = time.time()
            code, out, err = self._exec(step, command, timeout)
        report = self._parse(step, out)
        report["exit_code"] = code
        report["stderr"] = err
        answer = Answer(report, sent, time.time(), monotonic())
        if code != 0:
            reason = report.get("error") or "the command failed"
            raise HostStepError(
                self.label,
                report.get("error_step") or step,
                reason,
                exit_code=code,
                stderr=err,
                answer=answer,
            )
        return answer

    def _parse(self, step: str, out: str) -> dict[str, Any]:
        try:
            return qc.parse_report(out)
        except qc.ReportError as exc:
            raise HostStepError(self.label, step, str(exc)) from exc

    def _exec(self, step: str, command: str, timeout: float) -> tuple[int, str, str]:
        try:
            client = self.hook.get_conn()
        except Exception as exc:
            user = getattr(self.__dict__.get("hook"), "username", None)
            how = f"as {user!r} with ssh_conn_id {self.target.ssh_conn_id!r}: {_describe(exc)}"
            raise HostStepError(self.label, f"{step} (ssh connect)", how) from exc
        try:
            code, out, err = _run_to_eof(client, command, timeout, self.hook.log)
        except Exception as exc:
            raise HostStepError(self.label, step, f"ssh: {_describe(exc)}") from exc
        return code, out.decode("utf-8", "replace"), _tail(err.decode("utf-8", "replace"))

    def close(self) -> None:
        if "hook" in self.__dict__ and self.hook.client is not None:
            self.hook.client.close()
            self.hook.client = None


class QuiesceSession:
    """Freeze and release the targets of one DAG run, holding an SSH connection per host.

    :param spec: the validated settings (:meth:`QuiesceSpec.build`)
    :param targets: the VMs (:class:`QuiesceTarget`); their mounts come from ``spec``
    :param dag_id: with ``run_id``, names each host's guardian (the same in every task of a run)
    :param run_id: the DAG run's id
    :param logger: where progress goes, a logging.Logger or alike (default: this module's)
    """

    def __init__(
        self,
        spec: QuiesceSpec,
        targets: Sequence[QuiesceTarget],
        *,
        dag_id: str,
        run_id: str,
        logger: Any = None,
    ) -> None:
        self.spec = spec
        self.log = logger or log
        mounts = spec.mounts_for(targets)
        self.hosts = [
            _Host(t, qc.guardian_id(dag_id, run_id, t.key), mounts[t.name], spec) for t in targets
        ]
        self._armed: list[_Host] = []
        self._lock = threading.Lock()
        self._records: dict[str, HostReport] = {}

    def __enter__(self) -> QuiesceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every SSH connection this session opened."""
        for host in self.hosts:
            host.close()

    @property
    def armed(self) -> bool:
        """Whether any guardian was armed (or being armed) by this session."""
        with self._lock:
            return bool(self._armed)

    # ---------------------------------------------------------------- freeze

    def freeze(self) -> FreezeReport:
        """Preflight every host, then (barrier) arm every guardian in parallel.

        Under policy ``fail`` any host failing raises :class:`QuiesceError` after every armed
        host was released again; under ``continue_crash_consistent`` the others go on and the
        report says crash-consistent.
        """
        spec = self.spec
        if spec.max_seconds is None:
            raise ValueError("max_freeze_seconds is required to freeze")
        records = {h.gid: self._record(h) for h in self.hosts}
        checked = self._each(self.hosts, self._preflight)
        failed = {h: exc for h, exc in checked.items() if isinstance(exc, Exception)}
        for host, exc in failed.items():
            records[host.gid].error = str(exc)
        report = FreezeReport(list(records.values()), spec.max_seconds)
        if failed:
            message = _joined("preflight failed; nothing was frozen", failed.values())
            if spec.failure_policy == "fail":
                raise QuiesceError(message, result=report.to_xcom())
            self.log.warning("%s; going on crash-consistent without those hosts", message)
        ready = [h for h in self.hosts if h not in failed]
        try:
            frozen = self._each(ready, lambda h: self._arm(h, records[h.gid]))
        except BaseException:
            # Interrupted (task timeout, KeyboardInterrupt): never leave anything frozen.
            self.release_armed("rollback")
            raise
        failed2 = {h: exc for h, exc in frozen.items() if isinstance(exc, Exception)}
        for host, exc in failed2.items():
            records[host.gid].status = "not-frozen"
            records[host.gid].error = str(exc)
        if failed2:
            # A host that failed may have frozen part of its mounts: it is released too.
            to_thaw = ready if spec.failure_policy == "fail" else list(failed2)
            for host in self.release_armed("rollback", to_thaw):
                records[host.gid].status = "thawed"
                records[host.gid].consistency = CRASH_CONSISTENT
            message = _joined("freeze failed", failed2.values())
            if spec.failure_policy == "fail":
                raise QuiesceError(
                    f"{message}; thawed the {len(to_thaw)} host(s) again", result=report.to_xcom()
                )
            self.log.warning("%s; going on crash-consistent without those hosts", message)
        self.log.info(
            "Frozen %d of %d host(s); consistency %s; the guardians thaw by themselves after %d s",
            report.frozen_hosts,
            len(self.hosts),
            report.consistency,
            spec.max_seconds,
        )
        return report

    def _record(self, host: _Host) -> HostReport:
        return HostReport(host.label, host.target.key, host.gid, self.spec.profile)

    def _preflight(self, host: _Host) -> Answer:
        args = qc.preflight_args(
            host.gid, host.mounts, allow_root_fs=self.spec.allow_root_fs, profile=self.spec.profile
        )
        timeout = 3 * len(host.mounts) + self.spec.guardian_wait + SSH_SLACK
        answer = host.run("preflight", "preflight", args, timeout=timeout)
        if answer.report.get("previous_guardian"):
            self.log.warning(
                "%s: a guardian of an earlier try still held the freeze; it thawed first",
                host.label,
            )
        self.log.info("%s: preflight ok (%s)", host.label, host.address())
        return answer

    def _arm(self, host: _Host, record: HostReport) -> Answer:
        spec = self.spec
        assert spec.max_seconds is not None
        with self._lock:
            self._armed.append(host)
            self._records[host.gid] = record
        args = qc.arm_args(
            host.gid,
            host.mounts,
            profile=spec.profile,
            options=spec.options,
            max_seconds=spec.max_seconds,
            step_timeout=spec.step_timeout,
        )
        try:
            answer = host.run("freeze", "arm", args, timeout=spec.step_timeout + 60 + SSH_SLACK)
        except HostStepError as exc:
            if exc.answer is not None:
                _arm_fields(record, exc.answer)
            raise
        _arm_fields(record, answer)
        record.note_clock(answer)
        record.consistency, record.error = APPLICATION_CONSISTENT, None
        self.log.info(
            "%s: %s (%s); guardian pid %s thaws by itself at %s",
            host.label,
            "paused" if spec.profile == qc.APP else "frozen",
            ", ".join(host.mounts),
            record.pid,
            record.freeze_xcom()["deadline_at"],
        )
        return answer

    # ---------------------------------------------------------------- release

    def release_armed(self, reason: str, hosts: Sequence[_Host] | None = None) -> list[_Host]:
        """Release the hosts this session armed (or ``hosts``) over the open connections;
        errors are logged, not raised. Answers the hosts released.

        :param reason: ``rollback`` (a failed freeze) or ``kill`` (the task is being killed)
        :param hosts: only these (default: every host armed so far)
        """
        with self._lock:
            targets = list(dict.fromkeys(self._armed if hosts is None else hosts))
        if not targets:
            return []
        self.log.warning("Thawing %d host(s) again (%s)", len(targets), reason)
        done = self._each(targets[::-1], lambda h: self._thaw(h, reason))
        released = []
        for host, outcome in done.items():
            if isinstance(outcome, Exception):
                self.log.error("%s: could not thaw again: %s", host.label, outcome)
            else:
                self.log.info("%s: thawed again (%s)", host.label, reason)
                released.append(host)
        return released

    def release(self, *, freeze_report: Mapping[str, Any] | None = None) -> ThawReport:
        """Tell every guardian to thaw (or thaw in its place), check each mount is writable
        again, and report per host whether the copy in between is application-consistent.

        :param freeze_report: the freeze's XCom, when the freeze ran in another session: it
            places the freezes on the controller's clock for the whole window
        :raises QuiesceError: a host could not be released (``result`` has the report)
        :raises GuardianFiredError: under policy ``fail``, a guardian thawed first
        """
        done = self._each(self.hosts[::-1], lambda h: self._thaw(h, "thaw"))
        earlier = controller_freezes(freeze_report)
        records: list[HostReport] = []
        errors: list[Exception] = []
        for host in self.hosts:
            outcome = done[host]
            answer = outcome.answer if isinstance(outcome, HostStepError) else outcome
            if isinstance(outcome, Exception):
                errors.append(outcome)
            record = self._thaw_record(host, answer if isinstance(answer, Answer) else None)
            if isinstance(outcome, Exception):
                record.error = str(outcome)
            if record.frozen_mono is None and host.gid in earlier:
                record.mono_boot, record.frozen_mono = earlier[host.gid]
            records.append(record)
        report = ThawReport(records)
        window = report.window()
        self.log.info(
            "Thawed %d host(s); freeze window %s s (%s clock; longest single host %s s); "
            "consistency %s",
            len(records),
            window["seconds"],
            window["clock"],
            window["longest_host_seconds"],
            report.consistency,
        )
        if errors:
            raise QuiesceError(_joined("thaw failed", errors), result=report.to_xcom())
        fired = [r for r in records if r.guardian_fired]
        if fired:
            message = "; ".join(_fired_message(r) for r in fired)
            message += ": the copy is not application-consistent"
            if self.spec.failure_policy == "fail":
                raise GuardianFiredError(message, result=report.to_xcom())
            self.log.warning("%s", message)
        return report

    def _thaw(self, host: _Host, reason: str) -> Answer:
        spec = self.spec
        args = qc.thaw_args(
            host.gid,
            host.mounts,
            reason=reason,
            probe_timeout=spec.probe_timeout,
            wait=spec.guardian_wait,
            profile=spec.profile,
        )
        timeout = spec.guardian_wait + spec.probe_timeout * len(host.mounts) + SSH_SLACK
        return host.run("thaw", "thaw", args, timeout=timeout)

    def _thaw_record(self, host: _Host, answer: Answer | None) -> HostReport:
        report = answer.report if answer is not None else {}
        record = self._record(host)
        armed = self._records.get(host.gid)
        if armed is not None:  # armed in this session: its freeze is on our clock already
            record.frozen_mono, record.mono_boot = armed.frozen_mono, armed.mono_boot
        record.profile = report.get("profile") or self.spec.profile
        record.guardian = report.get("guardian")
        record.status = report.get("status") or "unknown"
        record.fired_by = report.get("fired") or None
        record.pid = integer(report.get("pid"))
        record.frozen_at = epoch(report.get("frozen_at"))
        record.thawed_at = epoch(report.get("thawed_at"))
        record.mounts = qc.mount_states(report.get("outcome", []))
        record.exit_codes = {
            "thaw_task": report.get("exit_code"),
            "pre_freeze": integer(report.get("pre_freeze_rc")),
            "freeze": integer(report.get("freeze_rc")),
            "thaw": integer(report.get("thaw_rc")),
            "post_thaw": integer(report.get("post_thaw_rc")),
        }
        if record.guardian_fired:
            record.consistency = INCONSISTENT
        elif record.status == "thawed" and record.frozen_at is not None:
            record.consistency = APPLICATION_CONSISTENT
        else:
            record.consistency = CRASH_CONSISTENT
        if answer is not None:
            record.note_clock(answer)
            ago = answer.ago(record.thawed_at)
            if ago is not None:
                record.thawed_mono = answer.received_mono - ago
        for mount, outcome in record.mounts.items():
            if outcome == "not-ours":
                self.log.warning(
                    "%s: %s is held by another run or process; left as it is", host.label, mount
                )
            elif outcome == "not-armed":
                self.log.warning(
                    "%s: this run never froze %s (no guardian record); left as it is",
                    host.label,
                    mount,
                )
        if answer is not None and answer.report.get("exit_code") == 0:
            self.log.info(
                "%s: thawed (guardian %s, %s); frozen %s s",
                host.label,
                record.guardian,
                record.fired_by or "not fired",
                record.seconds_frozen,
            )
        return record

    # ---------------------------------------------------------------- parallel

    def _each(self, hosts: list[_Host], work: Callable[[_Host], T]) -> dict[_Host, T | Exception]:
        """``work`` on every host, at most ``max_parallel`` at once; an exception is a result."""
        if not hosts:
            return {}
        workers = min(self.spec.max_parallel, len(hosts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quiesce") as pool:
            futures = {host: pool.submit(work, host) for host in hosts}
        outcomes: dict[_Host, T | Exception] = {}
        for host, future in futures.items():
            exc = future.exception()
            outcomes[host] = exc if isinstance(exc, Exception) else future.result()
        return outcomes


# After the exit status, how long the output's end (EOF) may still take to arrive.
EOF_GRACE = 5.0


def _run_to_eof(client: Any, command: str, timeout: float, logger: Any) -> tuple[int, bytes, bytes]:
    """Run ``command`` on a paramiko client and read stdout and stderr to their end.

    ``SSHHook.exec_ssh_client_command`` stops reading once the exit status has come and no
    data is waiting at that instant; sshd may send the exit status before the last of the
    output, so the end of a report went missing now and then. Here the output is read up to
    its EOF (at most :data:`EOF_GRACE` seconds after the exit status, in case a process the
    command left behind holds the pipe open). Each report line is logged, as the hook did.
    """
    logger.info("Running command: %s", command)
    _stdin, stdout, _stderr = client.exec_command(command, timeout=timeout)
    channel = stdout.channel
    channel.shutdown_write()
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        # paramiko wakes this on data and at EOF (not on the exit status alone)
        selector.register(channel, selectors.EVENT_READ)
        while True:
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            if channel.eof_received and not channel.recv_ready():
                break
            now = time.monotonic()
            if exited_at is None and channel.exit_status_ready():
                exited_at = now
            if now > deadline or (exited_at is not None and now - exited_at > EOF_GRACE):
                break
            selector.select(0.2)
    if not channel.status_event.wait(max(0.0, deadline - time.monotonic()) + 1):
        channel.close()
        raise TimeoutError(f"no answer within {timeout:g} s")
    code = channel.recv_exit_status()
    channel.close()
    for line in bytes(out).decode("utf-8", "replace").splitlines():
        logger.info("%s", line)
    for line in bytes(err).decode("utf-8", "replace").splitlines():
        logger.warning("%s", line)
    return code, bytes(out), bytes(err)


def _arm_fields(record: HostReport, answer: Answer) -> None:
    report = answer.report
    record.status = report.get("status") or "unknown"
    record.pid = integer(report.get("pid"))
    record.frozen_at = epoch(report.get("frozen_at"))
    record.deadline_at = epoch(report.get("deadline_at"))
    record.mounts = qc.mount_states(report.get("mount", []))
    record.exit_codes.update(
        arm=report.get("exit_code"),
        pre_freeze=integer(report.get("pre_freeze_rc")),
        freeze=integer(report.get("freeze_rc")),
    )
    ago = answer.ago(record.frozen_at)
    if ago is not None:
        record.frozen_mono, record.mono_boot = answer.received_mono - ago, boot_id()


def _fired_message(r: HostReport) -> str:
    text = (
        f"{r.host}: the guardian thawed by itself ({r.fired_by}) at "
        f"{r.thaw_xcom()['thawed_at']}, before the thaw task"
    )
    if r.fired_by == "deadline":
        text += (
            f" (max_freeze_seconds reached, {r.seconds_frozen} s after the freeze: "
            "make it longer than the copy takes)"
        )
    elif r.fired_by == "external-thaw":
        text += " (someone else unfroze a mount it held)"
    return text


def _joined(what: str, errors: Any) -> str:
    return f"{what}: " + " | ".join(str(e) for e in errors)


def _tail(text: str, limit: int = 1500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
