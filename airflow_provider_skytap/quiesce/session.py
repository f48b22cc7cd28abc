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

        quiet_paramiko()

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

    def run(
        self,
        step: str,
        action: str,
        args: Sequence[str],
        *,
        timeout: float,
        ready: Callable[[], bool] | None = None,
    ) -> Answer:
        """Run one guardian command (installing the script first if the VM lacks it); a
        non-zero exit raises :class:`HostStepError` with the script's own reason.

        :param ready: for ``arm --staged``: called when the command says ready; True sends
            go, False stop
        """
        try:
            sudo = self.sudo
        except Exception as exc:  # the SSH connection cannot be read or is incomplete
            how = f"ssh_conn_id {self.target.ssh_conn_id!r}: {describe_error(exc)}"
            raise HostStepError(self.label, f"{step} (ssh connection)", how) from exc
        command = qc.run_command(action, args, sudo=sudo)
        sent = time.time()
        code, out, err = self._exec(step, command, timeout, ready)
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
            code, out, err = self._exec(step, command, timeout, ready)
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

    def _exec(
        self, step: str, command: str, timeout: float, ready: Callable[[], bool] | None = None
    ) -> tuple[int, str, str]:
        try:
            client = self.hook.get_conn()
        except Exception as exc:
            user = getattr(self.__dict__.get("hook"), "username", None)
            how = f"as {user!r} with ssh_conn_id {self.target.ssh_conn_id!r}: {describe_error(exc)}"
            raise HostStepError(self.label, f"{step} (ssh connect)", how) from exc
        try:
            code, out, err = run_to_eof(client, command, timeout, self.hook.log, ready)
        except Exception as exc:
            raise HostStepError(self.label, step, f"ssh: {describe_error(exc)}") from exc
        return code, out.decode("utf-8", "replace"), tail_text(err.decode("utf-8", "replace"))

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
        self._staged: dict[_Host, _StagedThaw] | None = None
        self._go = threading.Event()
        self._go_value = False

    def __enter__(self) -> QuiesceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every SSH connection this session opened (a thaw started ahead by
        :meth:`prepare_release` and never released ends first, touching nothing)."""
        self._end_staged(False, 10)
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
        # Every host's login and guardian start before the first freeze: the arms wait for
        # each other (all at once, so only up to max_parallel hosts), then all go together.
        gate = None
        if 1 < len(ready) <= spec.max_parallel:
            gate = _Gate(len(ready), all_or_none=spec.failure_policy == "fail")
        try:
            frozen = self._each(ready, lambda h: self._arm(h, records[h.gid], gate))
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

    def _arm(self, host: _Host, record: HostReport, gate: _Gate | None = None) -> Answer:
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
            staged=gate is not None,
        )
        # Staged: up to step_timeout + 60 s until every host is ready, as long again to freeze.
        timeout = (2 if gate else 1) * (spec.step_timeout + 60) + SSH_SLACK
        arrived = False

        def ready() -> bool:
            nonlocal arrived
            arrived = True
            assert gate is not None
            return gate.arrive(True, spec.step_timeout + 60)

        try:
            answer = host.run("freeze", "arm", args, timeout=timeout, ready=ready if gate else None)
        except HostStepError as exc:
            if exc.answer is not None:
                _arm_fields(record, exc.answer)
            raise
        finally:
            if gate is not None and not arrived:
                gate.arrive(False, 0)  # failed before it was ready: the others need not wait
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

    def prepare_release(self) -> None:
        """Start each armed host's thaw now, over the held connections, waiting for the go:
        :meth:`release` then sends one line per host instead of starting a command on each,
        so the thaw comes one round trip after the copy. Call it after :meth:`freeze` when this
        session releases after the copy; :meth:`close` ends the waiting thaws untouched."""
        spec = self.spec
        with self._lock:
            if self._staged is not None or not self._armed:
                return
            hosts = list(dict.fromkeys(self._armed))
            self._staged = staged = {host: _StagedThaw(host) for host in hosts}
        self._go.clear()
        # The release may come any time before the guardians' deadline (and after it).
        extra = 2 * (spec.max_seconds or 0)
        for holder in staged.values():
            holder.start(lambda h: self._thaw(h, "thaw", ready=self._wait_go, extra=extra))

    def _wait_go(self) -> bool:
        self._go.wait()
        return self._go_value

    def _end_staged(self, go: bool, timeout: float) -> dict[_Host, Answer | Exception]:
        """Tell the thaws started ahead to go (or stop); their outcomes, once ended."""
        with self._lock:
            staged, self._staged = self._staged, None
        if not staged:
            return {}
        self._go_value = go
        self._go.set()
        deadline = time.monotonic() + timeout
        return {host: holder.wait(deadline) for host, holder in staged.items()}

    def release_armed(self, reason: str, hosts: Sequence[_Host] | None = None) -> list[_Host]:
        """Release the hosts this session armed (or ``hosts``) over the open connections;
        errors are logged, not raised. Answers the hosts released.

        :param reason: ``rollback`` (a failed freeze) or ``kill`` (the task is being killed)
        :param hosts: only these (default: every host armed so far)
        """
        self._end_staged(False, 10)
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
        spec = self.spec
        wait = spec.guardian_wait + spec.probe_timeout * max(
            (len(h.mounts) for h in self.hosts), default=1
        )
        ahead = self._end_staged(True, wait + SSH_SLACK)
        done: dict[_Host, Answer | Exception] = {
            h: a
            for h, a in ahead.items()
            if isinstance(a, Answer) and a.report.get("status") != "not-started"
        }
        # Not started ahead, or that failed: a thaw now (idempotent: it finds what is left).
        rest = [h for h in self.hosts[::-1] if h not in done]
        done |= self._each(rest, lambda h: self._thaw(h, "thaw"))
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
        # A thaw after an earlier task's (the freeze task releases right after the copy) finds
        # every guardian finished: its summary says so, and its host lines are DEBUG.
        earlier_release = bool(records) and all(r.guardian == "finished" for r in records)
        self.log.info(
            "%s %d host(s); freeze window %s s (%s clock; longest single host %s s); "
            "consistency %s",
            "Checked, thawed already:" if earlier_release else "Thawed",
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

    def _thaw(
        self,
        host: _Host,
        reason: str,
        *,
        ready: Callable[[], bool] | None = None,
        extra: float = 0,
    ) -> Answer:
        spec = self.spec
        args = qc.thaw_args(
            host.gid,
            host.mounts,
            reason=reason,
            probe_timeout=spec.probe_timeout,
            wait=spec.guardian_wait,
            profile=spec.profile,
            staged=ready is not None,
        )
        timeout = spec.guardian_wait + spec.probe_timeout * len(host.mounts) + SSH_SLACK + extra
        return host.run("thaw", "thaw", args, timeout=timeout, ready=ready)

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
            quiet = record.guardian == "finished" and not record.guardian_fired
            (self.log.debug if quiet else self.log.info)(
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


class _StagedThaw:
    """One host's thaw started ahead of the release (a thread waiting for the go)."""

    def __init__(self, host: _Host) -> None:
        self.host = host
        self.outcome: Answer | Exception | None = None
        self.thread: threading.Thread | None = None

    def start(self, work: Callable[[_Host], Answer]) -> None:
        def run() -> None:
            try:
                self.outcome = work(self.host)
            except Exception as exc:  # a result, as in _each
                self.outcome = exc

        # A daemon: a task that exits without releasing must not wait for it.
        self.thread = threading.Thread(target=run, name="quiesce-thaw-ahead", daemon=True)
        self.thread.start()

    def wait(self, deadline: float) -> Answer | Exception:
        assert self.thread is not None
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive() or self.outcome is None:
            return TimeoutError(f"{self.host.label}: the thaw started ahead did not end in time")
        return self.outcome


class _Gate:
    """Where the staged arms wait for each other: every host ready (or failed) before any goes.

    :param hosts: how many arms arrive
    :param all_or_none: policy ``fail``: one host failing stops every host (nothing frozen)
    """

    def __init__(self, hosts: int, *, all_or_none: bool) -> None:
        self.hosts = hosts
        self.all_or_none = all_or_none
        self.arrived = 0
        self.failed = False
        self.cond = threading.Condition()

    def arrive(self, ok: bool, timeout: float) -> bool:
        """One arm arrives (``ok``: its guardian is ready); waits for the others (at most
        ``timeout`` s) and answers whether this host goes."""
        with self.cond:
            self.arrived += 1
            self.failed = self.failed or not ok
            self.cond.notify_all()
            everyone = self.cond.wait_for(lambda: self.arrived >= self.hosts, timeout)
            if not ok:
                return False
            if not everyone:
                self.failed = True  # a host never got ready: nobody waits any longer
                self.cond.notify_all()
                return not self.all_or_none
            return not (self.all_or_none and self.failed)


# After the exit status, how long the output's end (EOF) may still take to arrive.
EOF_GRACE = 5.0


def run_to_eof(
    client: Any,
    command: str,
    timeout: float,
    logger: Any,
    ready: Callable[[], bool] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``command`` on a paramiko client and read stdout and stderr to their end.

    ``SSHHook.exec_ssh_client_command`` stops reading once the exit status has come and no
    data is waiting at that instant; sshd may send the exit status before the last of the
    output, so the end of a report went missing now and then. Here the output is read up to
    its EOF (at most :data:`EOF_GRACE` seconds after the exit status, in case a process the
    command left behind holds the pipe open). The output is logged, one event per stream.
    With ``ready`` (``arm --staged``) the input stays open until the command says
    :data:`commands.READY_LINE`; then ``ready()`` decides: go (True) or stop (False).
    """
    logger.debug("Running command: %s", command)
    _stdin, stdout, _stderr = client.exec_command(command, timeout=timeout)
    channel = stdout.channel
    if ready is None:
        channel.shutdown_write()
    marker = qc.READY_LINE.encode() + b"\n"
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
            if ready is not None and (out.startswith(marker) or b"\n" + marker in out):
                go = ready()
                ready = None
                channel.sendall(b"go\n" if go else b"stop\n")
                channel.shutdown_write()
                continue
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
    # One log event per stream, a line each inside it: with many hosts, a log event per report
    # line was most of the controller's CPU between the first freeze and the last thaw. The
    # records (@@sq) and the command are protocol: DEBUG. At INFO the session logs one line
    # per host per step; a failure's stderr travels in its HostStepError.
    if getattr(logger, "isEnabledFor", lambda _level: True)(logging.DEBUG):
        text = bytes(out).decode("utf-8", "replace").rstrip("\n")
        if text:
            logger.debug("%s", text)
        text = bytes(err).decode("utf-8", "replace").rstrip("\n")
        if text:
            logger.debug("stderr: %s", text)
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


def tail_text(text: str, limit: int = 1500) -> str:
    """``text`` on one line (whitespace squeezed), its last ``limit`` characters at most.

    :param text: command output, an error
    :param limit: the most characters kept
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def quiet_paramiko() -> None:
    """paramiko's transport says "Connected (version 2.0, ...)" and "Authentication
    (publickey) successful!" at INFO for every connection: two lines per host per task, noise
    beside the one line per host per step. Its logger goes to WARNING, unless the deployment
    set a level of its own (then that is kept)."""
    transport = logging.getLogger("paramiko.transport")
    if transport.level == logging.NOTSET:
        transport.setLevel(logging.WARNING)


def describe_error(exc: BaseException) -> str:
    """An exception for a log line or an error: its class name and its message, if any.

    :param exc: the exception
    """
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
