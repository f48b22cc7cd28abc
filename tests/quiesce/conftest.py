"""Real parts for the quiesce tests: an OpenSSH sshd on loopback, loop-mounted ext4, writers.

Everything here needs root (fsfreeze, losetup, mount, useradd) and the programs that
``scripts/system-deps.sh`` installs; without them the tests skip and say why. Teardown always
thaws every image before it unmounts it, so a failing test never leaves the machine frozen.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SSHD = "/usr/sbin/sshd"
SESSION = uuid.uuid4().hex[:8]
SUDO_USER = "skytapq"
FREEZE_TOOLS = ("fsfreeze", "losetup", "mount", "umount", "mkfs.ext4", "mountpoint", "setsid")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _run(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60, **kwargs)


def set_connection(
    monkeypatch: pytest.MonkeyPatch, conn_id: str, conn_type: str, **fields: Any
) -> None:
    """Define an Airflow connection the way users of env-var secrets do (any type)."""
    doc = {"conn_type": conn_type, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))


# ---------------------------------------------------------------- what the machine can do


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A world-traversable scratch dir (sshd reads authorized keys as the user; postgres runs
    as its own user), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="skytap-quiesce-"))
    path.chmod(0o755)
    _SESSION_ROOT[:] = [path]
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def can_freeze(workdir: Path) -> str | None:
    """None when this machine can loop-mount and freeze ext4; else why not."""
    if os.geteuid() != 0:
        return "needs root (fsfreeze, losetup and mount)"
    missing = [t for t in FREEZE_TOOLS if _which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (make test installs them with apt as root)"
    img, mnt = workdir / "probe.img", workdir / "probe-mnt"
    mnt.mkdir()
    try:
        with img.open("wb") as f:
            f.truncate(16 << 20)
        _run("mkfs.ext4", "-q", "-F", str(img))
        _run("mount", "-o", "loop", str(img), str(mnt))
    except subprocess.CalledProcessError as exc:
        return f"cannot loop-mount an ext4 image here: {exc.stderr.strip()}"
    else:
        try:
            _run("fsfreeze", "-f", str(mnt))
            _run("fsfreeze", "-u", str(mnt))
        except subprocess.CalledProcessError as exc:
            return f"fsfreeze does not work here: {exc.stderr.strip()}"
        finally:
            _run("umount", str(mnt), check=False)
    finally:
        img.unlink(missing_ok=True)
    return None


@pytest.fixture
def freezable(can_freeze: str | None) -> None:
    if can_freeze:
        pytest.skip(f"real fsfreeze: {can_freeze}")


# ---------------------------------------------------------------- loop-mounted ext4


@dataclass
class LoopMounts:
    """ext4 images loop-mounted under one directory; ``cleanup`` thaws, unmounts, detaches."""

    root: Path
    mounts: list[Path] = field(default_factory=list)

    def make(self, name: str, size_mb: int = 16) -> Path:
        img = self.root / f"{name}.img"
        mnt = self.root / name
        mnt.mkdir(parents=True)
        with img.open("wb") as f:
            f.truncate(size_mb << 20)
        _run("mkfs.ext4", "-q", "-F", str(img))
        _run("mount", "-o", "loop", str(img), str(mnt))
        self.mounts.append(mnt)
        return mnt

    def bind(self, source: Path, name: str) -> Path:
        mnt = self.root / name
        mnt.mkdir(parents=True)
        _run("mount", "--bind", str(source), str(mnt))
        self.mounts.append(mnt)
        return mnt

    def thaw_all(self) -> None:
        for mnt in self.mounts:
            _run("fsfreeze", "-u", str(mnt), check=False)

    def cleanup(self) -> None:
        self.thaw_all()
        for mnt in reversed(self.mounts):
            if _run("umount", str(mnt), check=False).returncode != 0:
                _run("umount", "-l", str(mnt), check=False)
        for img in self.root.glob("*.img"):
            # mount -o loop detaches on umount; make sure of it.
            for line in _run("losetup", "-j", str(img), check=False).stdout.splitlines():
                _run("losetup", "-d", line.split(":", 1)[0], check=False)
            img.unlink(missing_ok=True)
        self.mounts.clear()


@pytest.fixture
def loops(freezable: None, workdir: Path, request: pytest.FixtureRequest) -> Iterator[LoopMounts]:
    root = Path(tempfile.mkdtemp(prefix="mnt-", dir=workdir))
    root.chmod(0o755)
    mounts = LoopMounts(root)
    try:
        yield mounts
    finally:
        mounts.cleanup()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- writers


WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
i = 0
while True:
    os.write(fd, b"%d\\n" % i)
    i += 1
    time.sleep(0.005)
"""


@dataclass
class Writer:
    """A process appending to a file on a mount; a frozen filesystem stops it in write()."""

    path: Path
    proc: subprocess.Popen[bytes]

    def size(self) -> int:
        return self.path.stat().st_size

    def assert_stalled(self, seconds: float = 0.5) -> None:
        before = self.size()
        time.sleep(seconds)
        assert self.size() == before, f"{self.path} grew while frozen"

    def wait_progress(self, timeout: float = 10.0) -> float:
        """Seconds until the file grows; fails after ``timeout``."""
        start = time.monotonic()
        before = self.size()
        while self.size() == before:
            assert time.monotonic() - start < timeout, f"{self.path} did not grow in {timeout} s"
            time.sleep(0.01)
        return time.monotonic() - start


def assert_all_stalled(feed: list[Writer], seconds: float = 0.3) -> None:
    """No writer makes progress over one common interval (the freeze holds on every host)."""
    before = [w.size() for w in feed]
    time.sleep(seconds)
    grew = [str(w.path) for w, size in zip(feed, before, strict=True) if w.size() != size]
    assert not grew, f"grew while frozen: {grew}"


@pytest.fixture
def writers(loops: LoopMounts) -> Iterator[Callable[[Path], Writer]]:
    started: list[Writer] = []

    def start(mount: Path) -> Writer:
        path = mount / "writer.log"
        path.touch()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        writer = Writer(path, proc)
        started.append(writer)
        writer.wait_progress()
        return writer

    try:
        yield start
    finally:
        loops.thaw_all()  # a writer stuck on a frozen filesystem cannot even be killed
        for writer in started:
            writer.proc.kill()
            writer.proc.wait(timeout=30)


def write_finishes(path: Path, timeout: float) -> bool:
    """Whether creating ``path`` finishes within ``timeout`` (a frozen fs blocks it)."""
    proc = subprocess.Popen([sys.executable, "-c", f"open({str(path)!r}, 'w').close()"])
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False  # left to finish when the filesystem thaws
    return proc.returncode == 0


# ---------------------------------------------------------------- sshd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    """A real OpenSSH sshd on 127.0.0.1 with its own host key; keys authorise root (and the
    sudo user, when made)."""

    port: int
    host_key: str  # "ssh-ed25519 AAAA..." as the SSH connection's host_key extra wants it
    client_key: Path
    keys_dir: Path

    def authorize(self, user: str) -> None:
        target = self.keys_dir / user
        shutil.copy(self.client_key.with_suffix(".pub"), target)
        target.chmod(0o644)

    def connect(self, monkeypatch: pytest.MonkeyPatch, conn_id: str, user: str = "root") -> str:
        """An SSH connection env var for ``user`` at this sshd; answers the conn id."""
        set_connection(
            monkeypatch,
            conn_id,
            "ssh",
            host="127.0.0.1",
            port=self.port,
            login=user,
            extra={
                "key_file": str(self.client_key),
                "host_key": self.host_key,
                "look_for_keys": False,
                "conn_timeout": 10,
            },
        )
        return conn_id


@pytest.fixture(scope="session")
def sshd(workdir: Path) -> Iterator[Sshd]:
    if os.geteuid() != 0:
        pytest.skip("real sshd: needs root (it logs users in)")
    for tool in (SSHD, "ssh-keygen"):
        if _which(tool) is None:
            pytest.skip(f"real sshd: {tool} is missing (make test installs openssh-server as root)")
    home = workdir / "sshd"
    keys = home / "keys"
    keys.mkdir(parents=True)
    home.chmod(0o755)
    keys.chmod(0o755)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f", str(home / "host"))
    client = home / "client"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-client", "-f", str(client))
    host_key = " ".join((home / "host.pub").read_text().split()[:2])
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    port = _free_port()
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host'}\n"
        f"PidFile {home / 'sshd.pid'}\nAuthorizedKeysFile {keys}/%u\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "MaxStartups 100\nMaxSessions 100\nLogLevel INFO\n"
    )
    log = (home / "sshd.log").open("w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
    server = Sshd(port, host_key, client, keys)
    server.authorize("root")
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            if s.recv(64).startswith(b"SSH-"):
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"sshd did not start: {(home / 'sshd.log').read_text()[-2000:]}")
        time.sleep(0.05)
    try:
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def sudo_user(sshd: Sshd) -> Iterator[str]:
    """A non-root login with passwordless sudo (NOPASSWD), made for the session and removed."""
    if _which("sudo") is None or _which("useradd") is None:
        pytest.skip("sudo test: sudo or useradd is missing (make test installs sudo as root)")
    existed = _run("id", SUDO_USER, check=False).returncode == 0
    if not existed:
        _run("useradd", "--create-home", "--shell", "/bin/sh", SUDO_USER)
    _run("usermod", "-p", "*", SUDO_USER)  # not locked: sshd (UsePAM no) refuses "!" accounts
    sudoers = Path(f"/etc/sudoers.d/{SUDO_USER}-test")
    sudoers.write_text(f"{SUDO_USER} ALL=(root) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    sshd.authorize(SUDO_USER)
    # Without sudo the user's guardian script and records live in a dir of its own.
    own_dir = Path(f"/tmp/skytap-quiesce-{pwd.getpwnam(SUDO_USER).pw_uid}")
    had_dir = own_dir.exists()
    try:
        yield SUDO_USER
    finally:
        sudoers.unlink(missing_ok=True)
        if not had_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
        if not existed:
            _run("userdel", "--remove", SUDO_USER, check=False)


@pytest.fixture
def ssh_conns(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """``ssh_conns(n, user="root")``: n SSH connection ids, all to the test sshd."""

    def make(n: int, user: str = "root", prefix: str = "quiesce_host") -> list[str]:
        return [sshd.connect(monkeypatch, f"{prefix}_{i}", user) for i in range(n)]

    return make


# Where this session keeps every mount and directory it quiesces (set by ``workdir``).
_SESSION_ROOT: list[Path] = []
# An installed guardian script: root's under /run/skytap-quiesce, another user's in its own dir.
_GUARDIAN_SCRIPT = re.compile(rb"/skytap-quiesce(-[0-9]+)?/lib/[0-9a-f]+\.sh$")


def guardian_pids() -> list[int]:
    """Processes running a guardian (``run`` or ``backstop``) of this test session.

    Other runs on this machine (the demo's lab VMs, another checkout's tests) have guardians of
    their own; they are not this session's to wait for or stop. A guardian is ours when the
    first mount in its record lies under this session's workdir.
    """
    if not _SESSION_ROOT:
        return []
    root = str(_SESSION_ROOT[0]) + "/"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if (
                len(argv) > 3
                and _GUARDIAN_SCRIPT.search(argv[1])
                and argv[2] in (b"run", b"backstop")
                and (Path(os.fsdecode(argv[3])) / "mount.1").read_text().startswith(root)
            ):
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def _guardian_records() -> Iterator[None]:
    """Remove the guardian records (in /run/skytap-quiesce) this session made, once done.

    Only this session's (first mount under its workdir): another run on this machine may be
    between its freeze and its thaw, and its thaw needs its record.
    """
    state = Path("/run/skytap-quiesce")
    before = set(state.iterdir()) if state.is_dir() else set()
    yield
    if state.is_dir() and _SESSION_ROOT:
        root = str(_SESSION_ROOT[0]) + "/"
        for path in set(state.iterdir()) - before:
            with contextlib.suppress(OSError):
                ours = (path / "mount.1").read_text().startswith(root)
                if path.name != "lib" and ours and (path / "result").exists():
                    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_guardian_left() -> Iterator[None]:
    """After each test no guardian may still run; one that does is stopped (it thaws)."""
    yield
    deadline = time.monotonic() + 3  # a backstop notices its guardian finished within 1 s
    while guardian_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = guardian_pids()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    assert not left, f"guardian processes were still running after the test: {left}"


def unique_run_id(name: str) -> str:
    """A run id no earlier test session used: guardian records in /run outlive a session."""
    return f"manual__{name}__{SESSION}"


def quiesce(action: str, *, run_id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run a QuiesceOperator's execute as a task of a DAG run would (the guardian id needs
    the DAG and the run; each test is its own run unless it names one)."""
    if run_id is None:
        run_id = unique_run_id(os.environ["PYTEST_CURRENT_TEST"].split(" ")[0])
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    with DAG("quiesce_test", schedule=None):
        op = QuiesceOperator(task_id=action, action=action, **kwargs)
    return op.execute({"run_id": run_id})  # type: ignore[arg-type]
