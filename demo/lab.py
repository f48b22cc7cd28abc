"""The demo's VMs: each a real OpenSSH sshd in its own mount namespace, with its own disk.

A Skytap VM has its own disks, and every VM of an application usually mounts its data at
the same path. The lab makes that true on one Linux machine: each VM is an ``sshd`` started
in a private mount namespace (``unshare -m``) in which a loop-mounted ext4 image (the VM's
disk, a plain file the simulator copies) is mounted at :data:`MOUNT`. A writer process in
the same namespace appends checksummed records to the disk and ``fsync``s each one, as a
database commits. What the VM's SSH session sees, ``fsfreeze`` included, is that VM's disk.

:func:`check_image` reads a disk image (a copy the simulator made) without mounting it:
``e2fsck -n`` for the filesystem, ``debugfs`` for the records. Used by ``make demo`` and the
system tests; it needs root, ``unshare``, loop devices and OpenSSH (``scripts/system-deps.sh``
installs what is missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MOUNT = "/srv/data"
RECORDS = "records.log"
COMMITTED = "committed"
SSHD = "/usr/sbin/sshd"
TOOLS = (
    "unshare",
    "nsenter",
    "mount",
    "fsfreeze",
    "mkfs.ext4",
    "e2fsck",
    "debugfs",
    "dumpe2fs",
    "ssh-keygen",
)

# The application: each transaction appends a record (sequence number, wall-clock ns, filler,
# CRC-32 of what precedes it; 64 bytes) to RECORDS, fsyncs, then writes its sequence number
# over COMMITTED and fsyncs: two files that must agree, as a database's log and its
# control file must. A copy of one instant has COMMITTED at the last record or the one before.
RECORD_SIZE = 64
_BODY = RECORD_SIZE - 10  # body, space, 8 hex digits, newline

WRITER = """
import os, sys, time, zlib
path, state, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
st = os.open(state, os.O_WRONLY | os.O_CREAT, 0o644)
seq = os.fstat(fd).st_size // SIZE
while True:
    body = (b"%012d %020d " % (seq, time.time_ns())).ljust(BODY, b"x")
    os.write(fd, body + b" %08x\\n" % zlib.crc32(body))
    os.fsync(fd)
    os.pwrite(st, b"%012d\\n" % seq, 0)
    os.fsync(st)
    seq += 1
    time.sleep(0.002)
""".replace("SIZE", str(RECORD_SIZE)).replace("BODY", str(_BODY))

# Without root there is no filesystem to freeze: the application's "disk" is one preallocated
# file (what the simulator copies). A magic line, records from offset RECORD_SIZE on, and the
# commit point in the file's last RECORD_SIZE bytes (written after each record, each fsynced).
RAW_MAGIC = b"skytap-lab raw disk\n"
RAW_SIZE = 16 << 20
WRITER_RAW = (
    """
import os, sys, time, zlib
path, pidfile = sys.argv[1], sys.argv[2]
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, DISK)
os.pwrite(fd, MAGIC, 0)
os.fsync(fd)
seq = 0
while True:
    if seq < DISK // SIZE - 2:
        body = (b"%012d %020d " % (seq, time.time_ns())).ljust(BODY, b"x")
        os.pwrite(fd, body + b" %08x\\n" % zlib.crc32(body), SIZE * (seq + 1))
        os.fsync(fd)
        os.pwrite(fd, b"%012d\\n" % seq, DISK - SIZE)
        os.fsync(fd)
        seq += 1
    time.sleep(0.002)
""".replace("SIZE", str(RECORD_SIZE))
    .replace("BODY", str(_BODY))
    .replace("DISK", str(RAW_SIZE))
    .replace("MAGIC", repr(RAW_MAGIC))
)
# The application's pause and resume for QuiesceOperator's profile "app" (no root needed):
# SKYTAP_QUIESCE_MOUNTS is the VM's directory, where the writer keeps its pid.
PAUSE = 'kill -STOP "$(cat "$SKYTAP_QUIESCE_MOUNTS/writer.pid")"'
RESUME = 'kill -CONT "$(cat "$SKYTAP_QUIESCE_MOUNTS/writer.pid")"'

# The VM's "boot": its own /srv (a tmpfs, so the host's is untouched), its disk at MOUNT,
# the application writing to it, then sshd in the foreground.
BOOT = """set -e
mount -t tmpfs -o size=1m,mode=755 skytap-lab /srv
mkdir -p {mount}
mount -o loop "$1" {mount}
"$2" "$3" {mount}/{records} {mount}/{committed} "$4" </dev/null >/dev/null 2>&1 &
[ -z "$6" ] || mount --bind /dev/null "$6"
if [ -n "$7" ]; then mkdir -p "$7"; mount -t tmpfs -o size=16m,mode=700 skytap-lab-run "$7"; fi
exec {sshd} -D -e -f "$5"
"""


# A restored VM's "boot": its own /srv, its (copied) disk at MOUNT, then sshd. No application
# writes: the drill checks the disk as it was restored. A disk that does not mount leaves the
# VM up without it (as a VM whose data disk is damaged boots from its system disk), so the
# drill's check reports the mount, not an unreachable VM.
RESTORE_BOOT = """set -e
mount -t tmpfs -o size=1m,mode=755 skytap-lab /srv
mkdir -p {mount}
mount -o loop "$1" {mount} || echo "the data disk $1 did not mount" >&2
[ -z "$3" ] || mount --bind /dev/null "$3"
exec {sshd} -D -e -f "$2"
"""

# The application's own check in a restored VM: every record whole and in sequence, and the
# commit point at the last record (or the one before). Prints "verified N records".
CHECK_RECORDS = (
    """
import os, sys, zlib
d = sys.argv[1]
try:
    data = open(os.path.join(d, "RECORDS"), "rb").read()
    committed = int(open(os.path.join(d, "COMMITTED"), "rb").read().strip() or b"-1")
except (OSError, ValueError) as exc:
    sys.exit("records unreadable: %s" % exc)
good = torn = gaps = 0
expected = 0
for start in range(0, len(data) - len(data) % SIZE, SIZE):
    rec = data[start:start + SIZE]
    body, crc = rec[:BODY], rec[BODY + 1:BODY + 9]
    try:
        ok = rec[-1:] == b"\\n" and int(crc, 16) == zlib.crc32(body)
        seq = int(body[:12])
    except ValueError:
        ok = False
    if not ok:
        torn += 1
        continue
    good += 1
    gaps += max(0, seq - expected)
    expected = seq + 1
torn += 1 if len(data) % SIZE else 0
if torn or gaps or good - 1 - committed not in (0, 1):
    sys.exit("NOT consistent: %d records, %d torn, %d missing, commit point %d"
             % (good, torn, gaps, committed))
print("verified %d records" % good)
""".replace("SIZE", str(RECORD_SIZE))
    .replace("BODY", str(_BODY))
    .replace("RECORDS", RECORDS)
    .replace("COMMITTED", COMMITTED)
)


class LabUnavailable(RuntimeError):
    """This machine cannot run the lab; the message says why."""


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def unavailable(rootless: bool = False) -> str | None:
    """None when this machine can run the lab (``rootless``: the plain-directory kind); else
    why not."""
    if rootless:
        missing = [t for t in ("ssh-keygen", SSHD) if _which(t) is None]
        if missing:
            return f"missing {', '.join(missing)} (apt-get install openssh-server, as root)"
        return None
    if sys.platform != "linux":
        return "needs Linux (mount namespaces, loop devices, fsfreeze)"
    if os.geteuid() != 0:
        return "needs root (mount namespaces, loop devices, fsfreeze, sshd)"
    missing = [t for t in (*TOOLS, SSHD) if _which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (make installs them with apt when run as root)"
    probe = _run("unshare", "-m", "--propagation", "private", "true", check=False)
    if probe.returncode != 0:
        return f"cannot make a mount namespace here: {probe.stderr.strip()}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabVM:
    """One VM: its disk image, its sshd (port, pid) and its writer."""

    name: str
    image: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    writer_pidfile: Path | None = None
    directory: Path | None = None  # rootless: the VM's directory (its "mount")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def writer_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            assert self.writer_pidfile is not None
            return int(self.writer_pidfile.read_text())
        return None

    def records_path(self) -> Path:
        """The records file as seen inside the VM (through the sshd's mount namespace)."""
        return Path(f"/proc/{self.pid}/root{MOUNT}/{RECORDS}")

    def records(self) -> int:
        """Records written so far (complete ones)."""
        if self.directory is not None:
            with contextlib.suppress(OSError, ValueError), self.image.open("rb") as f:
                f.seek(-RECORD_SIZE, 2)
                return int(f.read(12) or b"-1") + 1
            return 0
        try:
            return self.records_path().stat().st_size // RECORD_SIZE
        except OSError:
            return 0

    def in_vm(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in this VM's mount namespace."""
        if self.directory is not None:
            return _run(*args, check=False, timeout=timeout)
        return _run("nsenter", "-t", str(self.pid), "-m", *args, check=False, timeout=timeout)

    def namespace_pids(self) -> list[int]:
        """Processes in this VM's mount namespace, other than its sshd."""
        if self.directory is not None:
            return []
        try:
            ns = os.readlink(f"/proc/{self.pid}/ns/mnt")
        except OSError:
            return []
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if int(proc.name) != self.pid and os.readlink(proc / "ns" / "mnt") == ns:
                    found.append(int(proc.name))
        return found


@dataclass
class Lab:
    """``vm_names`` VMs on this machine; a context manager that leaves nothing behind.

    ``rootless``: without root, each VM is a plain directory holding a raw "disk" file, and an
    sshd run as this user; the application is paused and resumed (profile ``app``) instead of
    its filesystem frozen. ``writer=False``: no application writes (benchmarks of many VMs on
    few cores measure SSH and the freeze, not the writers' fsyncs); the root kind only.
    ``plain_shell=True``: inside each VM, the login user's ``~/.bashrc`` reads as empty (bash
    sources it for every command sshd runs; this machine's may do slow work, such as ``pyenv
    init``, that a VM's would not); the root kind only. ``private_state=True``: each VM has
    its own ``/run/skytap-quiesce`` (a tmpfs in its namespace), as a real VM's /run is its own,
    rather than this machine's, where every lab and test leaves its records; the root kind only.
    """

    rootless: bool = False
    vm_names: tuple[str, ...] = ("app-1", "app-2", "db-1")
    size_mb: int = 32
    writer: bool = True
    plain_shell: bool = False
    private_state: bool = False
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="skytap-lab-")))
    vms: list[LabVM] = field(default_factory=list)
    host_key: str = ""
    client_key: Path = Path()
    restored: list[LabVM] = field(default_factory=list)

    def __enter__(self) -> Lab:
        reason = unavailable(self.rootless)
        if reason:
            raise LabUnavailable(reason)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- start

    def _start(self) -> None:
        self.root.chmod(0o755)  # sshd reads authorized keys as the user
        keys = self.root / "keys"
        keys.mkdir()
        keys.chmod(0o755)
        self.client_key = self.root / "client"
        for key in (self.root / "host", self.client_key):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f", str(key))
        self.host_key = " ".join((self.root / "host.pub").read_text().split()[:2])
        shutil.copy(self.client_key.with_suffix(".pub"), keys / self.user)
        (keys / self.user).chmod(0o644)
        if self.rootless:
            for name in self.vm_names:
                self.vms.append(self._start_rootless(name, keys))
            for vm in self.vms:
                self._wait_up(vm)
            return
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        Path("/srv").mkdir(exist_ok=True)  # the namespaces mount their own /srv over it
        writer = self.root / "writer.py"
        writer.write_text(WRITER)
        for name in self.vm_names:
            vm = LabVM(name, self.root / f"{name}.img", free_port())
            with vm.image.open("wb") as f:
                f.truncate(self.size_mb << 20)
            _run("mkfs.ext4", "-q", "-F", "-L", name[:16], str(vm.image))
            config = self._sshd_config(vm, keys)
            vm.writer_pidfile = self.root / f"{name}.writer.pid"
            boot = BOOT.format(mount=MOUNT, records=RECORDS, committed=COMMITTED, sshd=SSHD)
            with (self.root / f"{name}.log").open("wb") as log:
                vm.proc = subprocess.Popen(
                    [
                        "unshare",
                        "-m",
                        "--propagation",
                        "private",
                        "sh",
                        "-c",
                        boot,
                        "boot",
                        str(vm.image),
                        sys.executable if self.writer else "true",
                        str(writer),
                        str(vm.writer_pidfile),
                        str(config),
                        self._bashrc(),
                        "/run/skytap-quiesce" if self.private_state else "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.vms.append(vm)
        for vm in self.vms:
            self._wait_up(vm)

    def _bashrc(self) -> str:
        """The login user's ~/.bashrc to mask in each VM (``plain_shell``), or ""."""
        if not self.plain_shell:
            return ""
        bashrc = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".bashrc"
        return str(bashrc) if bashrc.is_file() else ""

    @property
    def user(self) -> str:
        """The user the VMs' sshds let in (root; rootless: whoever runs the lab)."""
        return pwd.getpwuid(os.geteuid()).pw_name

    def _sshd_config(self, vm: LabVM, keys: Path) -> Path:
        config = self.root / f"{vm.name}.sshd_config"
        config.write_text(
            f"Port {vm.port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'host'}\n"
            f"PidFile {self.root / vm.name}.pid\nAuthorizedKeysFile {keys}/%u\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            "MaxStartups 100\nMaxSessions 100\nLogLevel INFO\n"
        )
        return config

    def _start_rootless(self, name: str, keys: Path) -> LabVM:
        directory = self.root / name / "data"
        directory.mkdir(parents=True)
        vm = LabVM(name, directory / "disk.img", free_port(), directory=directory)
        vm.writer_pidfile = directory / "writer.pid"
        writer = self.root / "writer_raw.py"
        writer.write_text(WRITER_RAW)
        config = self._sshd_config(vm, keys)
        with (self.root / f"{name}.log").open("wb") as log:
            subprocess.Popen(
                [sys.executable, str(writer), str(vm.image), str(vm.writer_pidfile)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            vm.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return vm

    def backup_config(self) -> dict[str, Any]:
        """What the demo's backup config (demo/skytap_backups.yaml) must change for these VMs:
        nothing for the root kind; rootless: profile ``app`` pausing each VM's writer, and
        each VM's directory as its mount (``airflow_cli.write_config``)."""
        if not self.rootless:
            return {}
        # The backup DAG's preset "app-pidfile" pauses the writer by its writer.pid in each
        # directory (PAUSE and RESUME, for every directory): commands come from the DAG's
        # code, the choice from the config, never from a run's conf.
        return {
            "profile": "app-pidfile",
            "mounts": {vm.name: [str(vm.directory)] for vm in self.vms},
        }

    def _wait_up(self, vm: LabVM) -> None:
        deadline = time.monotonic() + 15
        while True:
            ssh_up, address = False, ("127.0.0.1", vm.port)
            with contextlib.suppress(OSError), socket.create_connection(address, 1) as s:
                ssh_up = s.recv(64).startswith(b"SSH-")
            if ssh_up and (vm.records() > 0 or not (self.writer or self.rootless)):
                return
            if (vm.proc and vm.proc.poll() is not None) or time.monotonic() > deadline:
                log = (self.root / f"{vm.name}.log").read_text(errors="replace")[-2000:]
                raise LabUnavailable(f"VM {vm.name} did not start: {log}")
            time.sleep(0.05)

    # ---------------------------------------------------------------- use

    def vm(self, name: str) -> LabVM:
        return next(vm for vm in self.vms if vm.name == name)

    def ssh_connection(self) -> dict[str, Any]:
        """The Airflow SSH connection (JSON form) that logs in on every lab VM; the
        host and port come from Skytap (each VM's published SSH service)."""
        return {
            "conn_type": "ssh",
            "login": self.user,
            "extra": {
                "key_file": str(self.client_key),
                "host_key": self.host_key,
                "look_for_keys": False,
                "conn_timeout": 10,
            },
        }

    def seed_vms(self, vms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Seed VMs (simulator format) pointed at the lab: each lab VM's disk image and SSH
        port go to the seed VM of the same name."""
        out = []
        for seed_vm in vms:
            vm = self.vm(seed_vm["name"])
            interfaces = [dict(i) for i in seed_vm.get("interfaces", [])] or [{}]
            interfaces[0]["services"] = [
                {"internal_port": 22, "external_ip": "127.0.0.1", "external_port": vm.port}
            ]
            out.append(seed_vm | {"interfaces": interfaces, "disk_image": str(vm.image)})
        return out

    def seed(self, seed: dict[str, Any], environment_id: str) -> dict[str, Any]:
        """A simulator seed whose environment ``environment_id`` has its VMs on the lab."""
        environments = [
            env | {"vms": self.seed_vms(env["vms"])} if env["id"] == environment_id else env
            for env in seed["environments"]
        ]
        return seed | {"environments": environments}

    def frozen(self) -> list[str]:
        """Names of the VMs whose writer is stalled right now (checked side by side)."""
        before = {vm.name: vm.records() for vm in self.vms}
        time.sleep(0.5)
        return [vm.name for vm in self.vms if vm.records() == before[vm.name]]

    def thaw_all(self) -> None:
        for vm in self.vms:
            if vm.directory is not None:
                pid = vm.writer_pid()
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                continue
            if vm.proc is not None and vm.proc.poll() is None:
                vm.in_vm("fsfreeze", "-u", MOUNT)

    # ---------------------------------------------------------------- restored VMs

    def app_check(self) -> str:
        """The application's check command in a VM (the restore drill's ``app_check``)."""
        script = self.root / "check_records.py"
        if not script.exists():
            script.write_text(CHECK_RECORDS)
            script.chmod(0o644)
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {MOUNT}"

    def boot_restored(self, name: str, image: Path | str) -> LabVM:
        """Boot a VM of a restored environment on its own (copied) disk image: an sshd in a
        mount namespace of its own with the image at :data:`MOUNT`, reachable with the lab's
        SSH connection. Root kind only."""
        if self.rootless:
            raise LabUnavailable("restored VMs need the root kind of lab (mount namespaces)")
        vm = LabVM(f"restored-{name}-{len(self.restored)}", Path(image), free_port())
        config = self._sshd_config(vm, self.root / "keys")
        boot = RESTORE_BOOT.format(mount=MOUNT, sshd=SSHD)
        log_path = self.root / f"{vm.name}.log"
        with log_path.open("wb") as log:
            vm.proc = subprocess.Popen(
                [
                    *("unshare", "-m", "--propagation", "private", "sh", "-c", boot, "boot"),
                    *(str(vm.image), str(config), self._bashrc()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.restored.append(vm)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", vm.port), 1):
                return vm
            if vm.proc.poll() is not None or time.monotonic() > deadline:
                raise LabUnavailable(
                    f"restored VM {vm.name} did not boot: {log_path.read_text()[-2000:]}"
                )
            time.sleep(0.05)

    def shut_down(self, vm: LabVM) -> None:
        """Stop one restored VM: its sshd, namespace, mount and loop device go with it."""
        if vm.proc is not None and vm.proc.poll() is None:
            for pid in vm.namespace_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            vm.proc.terminate()
            try:
                vm.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                vm.proc.kill()
                vm.proc.wait(timeout=10)
        _detach(vm.image)
        if vm in self.restored:
            self.restored.remove(vm)

    # ---------------------------------------------------------------- stop

    def stop(self) -> None:
        """Thaw, stop writers and sshds (the namespaces, their mounts and loop devices go
        with them), remove the images."""
        for vm in list(self.restored):
            self.shut_down(vm)
        self.thaw_all()
        for vm in self.vms:
            pid = vm.writer_pid()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if vm.proc is not None and vm.proc.poll() is None:
                # Guardians and their watchdogs in the namespace would keep it (and the disk)
                # alive; only this VM's: the machine's other processes are not ours.
                for pid in vm.namespace_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                vm.proc.terminate()
                try:
                    vm.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    vm.proc.kill()
                    vm.proc.wait(timeout=10)
        for vm in self.vms:
            if vm.directory is not None:
                continue
            _detach(vm.image)
        shutil.rmtree(self.root, ignore_errors=True)


def _detach(image: Path) -> None:
    """Wait for the loop device of ``image`` to go (it does with its mount); detach it if not."""
    for _ in range(50):
        attached = _run("losetup", "-j", str(image), check=False).stdout.strip()
        if not attached:
            return
        time.sleep(0.1)
    for line in attached.splitlines():
        _run("losetup", "-d", line.split(":", 1)[0], check=False)


class Hypervisor:
    """Runs the restored environments of a simulator on the lab, as Skytap runs VMs.

    While it runs, the simulator's ``hypervisor`` setting holds an environment made from a
    template in ``busy`` after it is asked to run, until this boots each of its VMs
    (:meth:`Lab.boot_restored` on the VM's own copied disk image) and reports their SSH ports
    (``POST /_sim/configurations/{id}/booted``): a service published for port 22 then answers
    that port. An environment that is deleted, or stops, has its VMs shut down.

    :param lab: the lab whose keys the VMs take (the root kind)
    :param admin: the simulator's admin client
    :param poll: seconds between looks at the simulator's state
    """

    def __init__(self, lab: Lab, admin: Any, poll: float = 0.1) -> None:
        self.lab = lab
        self.admin = admin
        self.poll = poll
        self.booted: dict[str, list[LabVM]] = {}
        self.errors: list[str] = []
        self.failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Hypervisor:
        self.admin.config(hypervisor=True)
        self._thread = threading.Thread(target=self._run, name="lab-hypervisor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for env_id in list(self.booted):
            self._shut(env_id)
        with contextlib.suppress(Exception):
            self.admin.config(hypervisor=False)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.step(self.admin.state())
            except Exception as exc:  # keep running: the next look may succeed
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def step(self, state: dict[str, Any]) -> None:
        """Boot what is asked to run, shut down what is gone or stopped."""
        for env in state["environments"]:
            eid = env["id"]
            if env.get("from_template") is None:
                continue
            gone = env["deleted"] or env.get("delete_until") is not None
            starting = env.get("transition_to") == "running"
            if eid in self.booted and (gone or (env["runstate"] != "running" and not starting)):
                self._shut(eid)
            elif eid not in self.booted and eid not in self.failed and starting and not gone:
                self.booted[eid] = []
                try:
                    for vm in env["vms"]:
                        self.booted[eid].append(
                            self.lab.boot_restored(vm["name"], vm["disk_image"])
                        )
                except LabUnavailable as exc:
                    self.failed.add(eid)  # it stays busy: the drill's start times out
                    self.errors.append(f"environment {eid}: {exc}")
                    self._shut(eid)
                    continue
                ports = {v["id"]: m.port for v, m in zip(env["vms"], self.booted[eid], strict=True)}
                self.admin.booted(eid, ports)

    def _shut(self, env_id: str) -> None:
        for vm in self.booted.pop(env_id, []):
            self.lab.shut_down(vm)


# ---------------------------------------------------------------- reading a copied disk


@dataclass
class ImageCheck:
    """What a copied disk holds: the filesystem's state and the application's records."""

    image: str
    fsck_exit: int
    fsck_summary: str
    needs_recovery: bool
    records: int = 0
    torn: int = 0
    gaps: int = 0
    committed: int | None = None  # the sequence number in COMMITTED; None: unreadable
    readable: bool = True
    filesystem: bool = True  # False: a rootless lab's raw disk (nothing for e2fsck)

    @property
    def agrees(self) -> bool:
        """COMMITTED names the last record or the one before (the writer was between the two)."""
        return self.committed is not None and self.records - 1 - self.committed in (0, 1)

    @property
    def consistent(self) -> bool:
        return (
            self.fsck_exit == 0
            and not self.needs_recovery
            and self.readable
            and self.torn == 0
            and self.gaps == 0
            and self.agrees
        )

    def verdict(self) -> str:
        if self.consistent:
            fsck = "fsck clean, " if self.filesystem else ""
            return f"consistent: {fsck}{self.records} records, none torn, commit point agrees"
        parts = []
        if self.fsck_exit != 0:
            parts.append(f"e2fsck -n exit {self.fsck_exit}: {self.fsck_summary}")
        if self.needs_recovery:
            parts.append("journal needs recovery")
        if not self.readable:
            parts.append("records unreadable")
        else:
            parts.append(f"{self.records} records, {self.torn} torn, {self.gaps} missing")
            if not self.agrees and self.committed is not None:
                lost = self.committed + 1 - self.records
                parts.append(
                    f"commit point says record {self.committed}: {lost} committed lost"
                    if lost > 0
                    else f"commit point says record {self.committed}: the log runs past it"
                )
            elif not self.agrees:
                parts.append("commit point unreadable")
        return "NOT consistent: " + "; ".join(parts)


def check_image(image: Path | str) -> ImageCheck:
    """Check a copied ext4 disk image without mounting it.

    A copy taken while the filesystem was frozen is clean (``e2fsck -n`` passes, no journal
    to replay), every record is whole and in sequence, and the commit point names the last
    record (or the one before). A copy taken under writes mixes moments: the journal needs
    recovery, and the log and the commit point disagree.
    """
    with open(image, "rb") as f:
        raw = f.read(len(RAW_MAGIC)) == RAW_MAGIC
    if raw:
        return _check_raw(Path(image))
    fsck = _run("e2fsck", "-f", "-n", str(image), check=False)
    lines = [ln for ln in (fsck.stdout + fsck.stderr).splitlines() if ln.strip()]
    header = _run("dumpe2fs", "-h", str(image), check=False).stdout
    features = next((ln for ln in header.splitlines() if ln.startswith("Filesystem features")), "")
    check = ImageCheck(
        image=str(image),
        fsck_exit=fsck.returncode,
        fsck_summary=" / ".join(lines[:3])[:300],
        needs_recovery="needs_recovery" in features,
    )
    data, committed = _debugfs_cat(image, RECORDS), _debugfs_cat(image, COMMITTED)
    if data is None:
        check.readable = False
        return check
    with contextlib.suppress(TypeError, ValueError):
        check.committed = int(committed or b"")
    _scan(check, data)
    return check


def _check_raw(image: Path) -> ImageCheck:
    """A rootless lab's raw disk: records from offset RECORD_SIZE up to the first empty slot,
    the commit point in the last RECORD_SIZE bytes."""
    data = image.read_bytes()
    check = ImageCheck(str(image), 0, "raw disk", needs_recovery=False, filesystem=False)
    with contextlib.suppress(ValueError):
        check.committed = int(data[-RECORD_SIZE:][:12])
    empty = bytes(RECORD_SIZE)
    end = RECORD_SIZE
    while end + RECORD_SIZE <= len(data) - RECORD_SIZE and data[end : end + RECORD_SIZE] != empty:
        end += RECORD_SIZE
    _scan(check, data[RECORD_SIZE:end])
    return check


def _scan(check: ImageCheck, data: bytes) -> None:
    """Count whole records, torn ones and gaps in the sequence."""
    expected = 0
    for start in range(0, len(data) - len(data) % RECORD_SIZE, RECORD_SIZE):
        record = data[start : start + RECORD_SIZE]
        body, crc = record[:_BODY], record[_BODY + 1 : _BODY + 9]
        try:
            good = record[-1:] == b"\n" and int(crc, 16) == zlib.crc32(body)
            seq = int(body[:12])
        except ValueError:
            good = False
        if not good:
            check.torn += 1
            continue
        check.records += 1
        check.gaps += seq - expected if seq > expected else 0
        expected = seq + 1
    if len(data) % RECORD_SIZE:
        check.torn += 1  # a partial record at the end


def _debugfs_cat(image: Path | str, name: str) -> bytes | None:
    dump = subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, check=False, timeout=60
    )
    if dump.returncode != 0 or b"File not found" in dump.stderr:
        return None
    return dump.stdout
