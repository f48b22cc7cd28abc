"""The VM side of a restore drill: is each restored VM reachable, is each frozen mount's
filesystem clean, and does the application's own check pass. Over SSH, read-only.

One command per VM (every value through :func:`shlex.quote`)::

    spec = VerifySpec.build(mounts=["/srv/data"], app_check="pg_isready && psql -c 'select 1'")
    report = verify_targets(spec, targets)      # VerifyReport; .ok, .to_xcom()

For each mount it finds the device (``findmnt``) and runs ``e2fsck -f -n`` on it: read-only
(``-n`` answers no to every question and opens the device read-only), so a check never changes
the restored disk. A filesystem other than ext2/3/4 fails the check, naming its type: this
package only knows how to check ext4. Then the application's check command runs in
``sh -c``; exit 0 passes. What the VM answers is parsed line by line; a line that breaks the
protocol fails that VM, naming it.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_skytap import checks
from airflow_provider_skytap.progress import Progress, ago
from airflow_provider_skytap.quiesce import commands as qc
from airflow_provider_skytap.quiesce.session import (
    describe_error,
    run_to_eof,
    tail_text,
    wants_sudo,
)
from airflow_provider_skytap.quiesce.spec import QuiesceTarget

PREFIX = "@@sv "
# e2fsck's exit codes: 0 clean, 1/2 errors corrected (never with -n), 4 errors left uncorrected,
# 8 operational error. Only 0 is clean.
EXT_TYPES = ("ext2", "ext3", "ext4")
_SCRIPT = r"""
for m in "$@"; do
  src=$(findmnt -n -o SOURCE --mountpoint "$m" 2>/dev/null | head -n 1)
  fs=$(findmnt -n -o FSTYPE --mountpoint "$m" 2>/dev/null | head -n 1)
  if [ -z "$src" ]; then printf '@@sv mount=%s|missing||\n' "$m"; continue; fi
  case "$fs" in
    ext2|ext3|ext4)
      out=$(e2fsck -f -n "$src" 2>&1); rc=$?
      last=$(printf '%s' "$out" | grep -v '^e2fsck [0-9]' | tail -n 3 | tr '\n|' '  ' \
        | tr -d '\000-\037')
      printf '@@sv mount=%s|%s|%s|%s\n' "$m" "$fs" "$rc" "$last";;
    *) printf '@@sv mount=%s|%s|unsupported|\n' "$m" "$fs";;
  esac
done
"""


@dataclass(frozen=True)
class VerifySpec:
    """What to check on each restored VM; build one with :meth:`build`.

    :param mounts: the filesystems to check (the ones the backup froze), per VM name or ``*``
    :param app_check: the application's own check command (None: none), e.g. ``pg_isready``
    :param use_sudo: run through ``sudo -n`` (None: for users other than root)
    :param boot_timeout: seconds to wait for each VM's SSH server to answer
    :param step_timeout: seconds each VM's checks may take
    :param max_parallel: VMs checked at once
    """

    mounts: dict[str, list[str]]
    app_check: str | None = None
    use_sudo: bool | None = None
    boot_timeout: int = 300
    step_timeout: int = 600
    max_parallel: int = 16

    @classmethod
    def build(
        cls,
        *,
        mounts: Any,
        app_check: Any = None,
        use_sudo: Any = None,
        boot_timeout: Any = 300,
        step_timeout: Any = 600,
        max_parallel: Any = 16,
    ) -> VerifySpec:
        """Check every value (each error names the field and the value)."""
        if mounts is None or mounts == [] or mounts == {}:
            mount_map: dict[str, list[str]] = {"*": []}
        else:
            mount_map = qc.validate_mount_map(mounts, allow_root_fs=True)
        if app_check is not None:
            if not isinstance(app_check, str) or not app_check.strip():
                raise ValueError(f"app_check must be a shell command, got {app_check!r}")
            bad = qc.bad_character(app_check.replace("\n", " "))
            if bad is not None:
                raise ValueError(f"app_check contains the control character {bad}")
        return cls(
            mounts=mount_map,
            app_check=app_check,
            use_sudo=None if use_sudo is None else checks.flag("use_sudo", use_sudo),
            boot_timeout=checks.whole_seconds("boot_timeout", boot_timeout),
            step_timeout=checks.whole_seconds("step_timeout", step_timeout),
            max_parallel=checks.positive_int("max_parallel", max_parallel),
        )

    def mounts_of(self, target: QuiesceTarget) -> list[str]:
        """The mounts to check on ``target``: its own entry, else ``*``, else none."""
        return list(self.mounts.get(target.name, self.mounts.get("*", [])))


@dataclass
class MountCheck:
    """One filesystem: its type, e2fsck's exit code and its last lines."""

    mount: str
    fstype: str
    exit_code: int | None
    summary: str

    @property
    def clean(self) -> bool:
        return self.fstype in EXT_TYPES and self.exit_code == 0

    def problem(self) -> str | None:
        if self.fstype == "missing":
            return f"{self.mount} is not mounted"
        if self.fstype not in EXT_TYPES:
            return f"{self.mount} is {self.fstype or 'of an unknown type'}, not ext2/3/4"
        if self.exit_code != 0:
            return f"{self.mount}: e2fsck -n exit {self.exit_code}: {self.summary}"
        return None


@dataclass
class VmCheck:
    """Everything checked on one VM."""

    label: str
    address: str = ""
    reachable: bool = False
    reached_after: float | None = None
    mounts: list[MountCheck] = field(default_factory=list)
    app_exit: int | None = None
    app_output: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.reachable
            and self.error is None
            and all(m.clean for m in self.mounts)
            and self.app_exit in (None, 0)
        )

    def problems(self) -> list[str]:
        found = [self.error] if self.error else []
        found += [p for p in (m.problem() for m in self.mounts) if p]
        if self.app_exit not in (None, 0):
            found.append(f"app_check exit {self.app_exit}: {self.app_output}")
        return found

    def to_xcom(self) -> dict[str, Any]:
        return {
            "host": self.label,
            "address": self.address,
            "reachable": self.reachable,
            "reached_after": self.reached_after,
            "mounts": [
                {
                    "mount": m.mount,
                    "fstype": m.fstype,
                    "fsck_exit": m.exit_code,
                    "clean": m.clean,
                    "summary": m.summary,
                }
                for m in self.mounts
            ],
            "app_exit": self.app_exit,
            "app_output": self.app_output,
            "ok": self.ok,
            "problems": self.problems(),
        }


@dataclass
class VerifyReport:
    """Every VM's checks; ``ok`` only when every VM passed every check."""

    vms: list[VmCheck]
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.vms) and all(vm.ok for vm in self.vms)

    def problems(self) -> list[str]:
        return [f"{vm.label}: {p}" for vm in self.vms for p in vm.problems()]

    def to_xcom(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "finished_at": self.finished_at,
            "vms": [vm.to_xcom() for vm in self.vms],
            "problems": self.problems(),
        }


def check_command(mounts: Sequence[str], app_check: str | None, *, sudo: bool) -> str:
    """The one shell command run on a VM: the mounts' fsck, then the application's check."""
    parts = []
    if mounts:
        run = "sudo -n sh -c" if sudo else "sh -c"
        parts.append(f"{run} {shlex.quote(_SCRIPT)} verify {shlex.join(mounts)}")
    if app_check:
        # stdout and stderr of the check (its tail is reported), then its exit code.
        parts.append(
            f"out=$(sh -c {shlex.quote(app_check)} 2>&1); rc=$?; "
            "printf '%s\\n' \"$out\" | tail -n 5 | sed 's/^/@@sv app_out=/'; "
            "printf '@@sv app_exit=%s\\n' \"$rc\""
        )
    parts.append("printf '@@sv done=1\\n'")
    return "; ".join(parts)


def parse_answer(record: VmCheck, stdout: str) -> None:
    """Fill ``record`` from a VM's answer; a line breaking the protocol is an error."""
    output: list[str] = []
    done = False
    for line in stdout.splitlines():
        if not line.startswith(PREFIX):
            continue
        key, _, value = line[len(PREFIX) :].partition("=")
        if key == "mount":
            fields = value.rsplit("|", 3)
            if len(fields) != 4:
                record.error = f"unreadable mount report {line[:200]!r}"
                return
            mount, fstype, code, summary = fields
            exit_code = int(code) if code.isdigit() else None
            record.mounts.append(MountCheck(mount, fstype, exit_code, summary.strip()[:300]))
        elif key == "app_out":
            output.append(value)
        elif key == "app_exit":
            record.app_exit = int(value) if value.strip().isdigit() else -1
        elif key == "done":
            done = True
    record.app_output = tail_text(" / ".join(output), 500)
    if not done:
        record.error = "the checks did not finish (no end line in the answer)"


class _Vm:
    """One VM's SSH connection and its checks."""

    def __init__(self, target: QuiesceTarget, spec: VerifySpec, logger: Any) -> None:
        self.target = target
        self.spec = spec
        self.log = logger
        self.record = VmCheck(target.label)
        self.hook: Any = None

    def _connect(self) -> Any:
        from airflow.providers.ssh.hooks.ssh import SSHHook

        start = time.monotonic()
        progress = Progress()
        while True:
            self.hook = SSHHook(
                ssh_conn_id=self.target.ssh_conn_id,
                remote_host=self.target.host or "",
                port=self.target.port,
                conn_retry_attempts=1,
                conn_timeout=10,
            )
            try:
                client = self.hook.get_conn()
            except Exception as exc:
                spent = time.monotonic() - start
                if spent >= self.spec.boot_timeout:
                    raise TimeoutError(
                        f"not reachable over SSH after {spent:.0f} s "
                        f"(boot_timeout {self.spec.boot_timeout} s): {describe_error(exc)}"
                    ) from exc
                if progress.due(spent, 1.0):
                    self.log.info(
                        "%s: SSH not answering yet after %s (%s); trying every 1 s",
                        self.target.label,
                        ago(spent),
                        describe_error(exc),
                    )
                time.sleep(1.0)
                continue
            self.record.reachable = True
            self.record.reached_after = round(time.monotonic() - start, 3)
            self.record.address = f"{self.hook.username}@{self.hook.remote_host}:{self.hook.port}"
            return client

    def run(self) -> VmCheck:
        try:
            client = self._connect()
        except Exception as exc:
            self.record.error = str(exc) if isinstance(exc, TimeoutError) else describe_error(exc)
            return self.record
        try:
            sudo = wants_sudo(self.spec.use_sudo, self.hook.username, "fsfreeze")
            command = check_command(self.target_mounts, self.spec.app_check, sudo=sudo)
            code, out, err = run_to_eof(client, command, self.spec.step_timeout, self.log)
            parse_answer(self.record, out.decode("utf-8", "replace"))
            if code != 0 and self.record.error is None:
                stderr = tail_text(err.decode("utf-8", "replace"))
                self.record.error = f"the check command exited {code}: {stderr}"
        except Exception as exc:
            self.record.error = f"ssh: {describe_error(exc)}"
        finally:
            client.close()
        return self.record

    @property
    def target_mounts(self) -> list[str]:
        return self.spec.mounts_of(self.target)


def verify_targets(
    spec: VerifySpec, targets: Sequence[QuiesceTarget], *, logger: Any = None
) -> VerifyReport:
    """Check every target (at most ``spec.max_parallel`` at once); never raises for a VM's
    failure: the report says which VM failed which check."""
    import logging

    log = logger or logging.getLogger(__name__)
    if not targets:
        raise ValueError("no VMs to check")
    vms = [_Vm(t, spec, log) for t in targets]
    lock = threading.Lock()
    results: dict[str, VmCheck] = {}

    def work(vm: _Vm) -> None:
        record = vm.run()
        with lock:
            results[vm.target.key] = record
        state = "passed" if record.ok else "FAILED: " + "; ".join(record.problems())
        log.info("%s: checks %s", vm.target.label, state)

    with ThreadPoolExecutor(max_workers=min(spec.max_parallel, len(vms))) as pool:
        list(pool.map(work, vms))
    report = VerifyReport([results[t.key] for t in targets], finished_at=time.time())
    return report


def targets_from_endpoints(
    endpoints: Sequence[Mapping[str, Any]], ssh_conn_id: str
) -> list[QuiesceTarget]:
    """The targets of a restored environment from its SSH endpoints (``vm_id``, ``vm_name``,
    ``host``, ``port``), all logged in to with one SSH connection."""
    return [
        QuiesceTarget(
            key=str(e["vm_id"]),
            name=str(e["vm_name"]),
            label=f"{e['vm_name']} ({e['host']}:{e['port']})",
            ssh_conn_id=ssh_conn_id,
            host=str(e["host"]),
            port=int(e["port"]),
        )
        for e in endpoints
    ]
