"""The mysql profile against a real MariaDB: Debian's ``mariadb-server``, a private ``mariadbd``.

The server's data directory lies on a loop-mounted ext4 image. Writers commit all through the
freeze; while it holds, the test copies the image file (as a Skytap live clone copies the
disk), then starts a second server on the copy: InnoDB must recover cleanly and the copy must
hold every row whose commit a writer saw acknowledged before the copy began.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_provider_skytap.operators.quiesce import QuiesceError
from airflow_provider_skytap.quiesce.commands import STATE_DIR
from tests.quiesce.conftest import LoopMounts, quiesce

DB_USER = "mysql"  # Debian's mariadb-server package creates it; mariadbd refuses to run as root
TOOLS = ("mariadbd", "mariadb-install-db", "mariadb")
# Small enough for a 128 MiB image; the redo log still spans many commits.
SERVER_OPTIONS = ("--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@dataclass
class MariaDB:
    """A running ``mariadbd``; root logs in over its socket (unix_socket authentication)."""

    data: Path
    socket: Path
    log: Path
    proc: subprocess.Popen[bytes]
    client: str

    def client_args(self) -> list[str]:
        return [self.client, "--no-defaults", f"--socket={self.socket}", "--batch", "-N"]

    def sql(self, query: str) -> str:
        done = subprocess.run(
            [*self.client_args(), "-e", query],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{query!r} failed: {done.stderr.strip()}"
        return done.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a clean shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def start_mariadbd(data: Path, run: Path, name: str) -> MariaDB:
    """Start ``mariadbd`` on ``data`` with its socket, pid file and error log in ``run``."""
    socket, log = run / f"{name}.sock", run / f"{name}.err"
    args = [
        str(_which("mariadbd")),
        "--no-defaults",  # nothing from /etc/mysql: this server is the test's alone
        f"--user={DB_USER}",
        f"--datadir={data}",
        f"--socket={socket}",
        f"--pid-file={run / name}.pid",
        f"--log-error={log}",
        "--skip-networking",
        *SERVER_OPTIONS,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = MariaDB(data, socket, log, proc, str(_which("mariadb")))
    deadline = time.monotonic() + 60
    while True:
        ping = subprocess.run(
            [*server.client_args(), "-e", "SELECT 1"], capture_output=True, check=False
        )
        if ping.returncode == 0:
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            pytest.fail(f"mariadbd on {data} did not start: {tail}")
        time.sleep(0.1)


@pytest.fixture
def mariadb_run(workdir: Path) -> Path:
    """Sockets and logs of this test's servers: outside the image, so the freeze spares them."""
    for tool in TOOLS:
        if _which(tool) is None:
            pytest.skip(
                f"mysql profile against a real server: {tool} is missing "
                "(make test installs Debian's mariadb-server as root)"
            )
    if subprocess.run(["id", DB_USER], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"mysql profile against a real server: no {DB_USER!r} user (mariadb-server)")
    run = workdir / f"mariadb-{os.urandom(4).hex()}"
    run.mkdir()
    shutil.chown(run, DB_USER)
    return run


@pytest.fixture
def mariadb(loops: LoopMounts, mariadb_run: Path) -> Iterator[MariaDB]:
    """A fresh MariaDB whose data directory is on its own loop-mounted ext4 image."""
    mount = loops.make("mariadb", size_mb=128)
    data = mount / "data"
    data.mkdir()
    shutil.chown(mount, DB_USER)
    shutil.chown(data, DB_USER)
    subprocess.run(
        [
            str(_which("mariadb-install-db")),
            "--no-defaults",
            f"--user={DB_USER}",
            f"--datadir={data}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            *SERVER_OPTIONS,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = start_mariadbd(data, mariadb_run, "live")
    try:
        yield server
    finally:
        loops.thaw_all()  # a server blocked on a frozen disk cannot shut down
        server.stop()


@dataclass
class SqlWriter:
    """One client session committing ``INSERT``s one by one (autocommit) until stopped.

    ``acked`` holds each row whose commit the server acknowledged, with the time the writer
    saw it; the server answers the ``SELECT`` after the ``INSERT`` only once it committed.
    """

    number: int
    proc: subprocess.Popen[str]
    acked: list[tuple[int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def run(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                insert = f"INSERT INTO app.t VALUES ({self.number}, {n});\n"  # noqa: S608 (ints)
                self.proc.stdin.write(insert)
                self.proc.stdin.write(f"SELECT {n};\n")
                self.proc.stdin.flush()
                answer = self.proc.stdout.readline()
                if answer.strip() != str(n):
                    self.error = f"writer {self.number} got {answer!r} for row {n}"
                    return
                self.acked.append((n, time.monotonic()))
        except (BrokenPipeError, ValueError) as exc:
            self.error = f"writer {self.number}: {exc}"

    def count(self) -> int:
        return len(self.acked)


@pytest.fixture
def sql_writers(mariadb: MariaDB, loops: LoopMounts) -> Iterator[Callable[[int], list[SqlWriter]]]:
    started: list[tuple[SqlWriter, threading.Thread]] = []

    def start(n: int) -> list[SqlWriter]:
        for number in range(1, n + 1):
            proc = subprocess.Popen(
                [*mariadb.client_args(), "--unbuffered"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            writer = SqlWriter(number, proc)
            thread = threading.Thread(target=writer.run, daemon=True)
            thread.start()
            started.append((writer, thread))
        return [writer for writer, _ in started]

    try:
        yield start
    finally:
        loops.thaw_all()  # a writer waits for its commit, which waits for the thaw
        for writer, _ in started:
            writer.stop.set()
        for writer, thread in started:
            thread.join(timeout=30)
            with contextlib.suppress(OSError):
                writer.proc.stdin.close()  # type: ignore[union-attr]
            try:
                writer.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                writer.proc.kill()


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("lock", "used"),
    [
        (None, "backup_stage"),  # auto: Debian's MariaDB is 10.4.1 or later
        ("ftwrl", "ftwrl"),  # FLUSH TABLES WITH READ LOCK, as on older servers
    ],
)
def test_mariadb_copy_taken_while_frozen_holds_every_committed_row(
    mariadb, sql_writers, ssh_conns, loops, mariadb_run, lock, used
) -> None:
    mariadb.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (writer INT, n INT, PRIMARY KEY (writer, n))"
        " ENGINE=InnoDB"
    )
    writers = sql_writers(3)
    _wait_for("each writer commits 50 rows", lambda: all(w.count() >= 50 for w in writers))
    mount = mariadb.data.parent
    conns = ssh_conns(1)
    frozen = quiesce(
        "freeze",
        ssh_conn_ids=conns,
        mounts=[str(mount)],
        max_freeze_seconds=120,
        profile="mysql",
        profile_options={"mysql": mariadb.client, "socket": str(mariadb.socket)}
        | ({} if lock is None else {"lock": lock}),
    )
    assert frozen["hosts"][0]["status"] == "frozen"
    # The guardian's log on the VM names the server and the lock it took.
    guardian_log = Path(STATE_DIR, frozen["hosts"][0]["guardian_id"], "log").read_text()
    version = mariadb.sql("SELECT @@version").strip()
    assert f"mysql: server version {version}, lock {used} (option lock={lock or 'auto'})" in (
        guardian_log
    )
    try:
        # The lock holds every writer's next commit: no acknowledgement while frozen (the
        # first 0.3 s let an answer already on its way reach its writer).
        time.sleep(0.3)
        held = [w.count() for w in writers]
        time.sleep(1.0)
        assert [w.count() for w in writers] == held, "a commit was acknowledged while frozen"
        # The copy, as Skytap copies a running VM's disk: the image file, while frozen.
        acked = {(w.number, n) for w in writers for n, _ in list(w.acked)}
        image = loops.root / "mariadb.img"
        copy = loops.root / "copy.img"  # removed by the loops fixture
        subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True, timeout=120)
    finally:
        thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)], profile="mysql")
    assert thawed["consistency"] == "application-consistent"
    # The server took every statement of the lock session, its release (BACKUP STAGE END or
    # UNLOCK TABLES) included: the client's errors, which end the session, are empty.
    guardian_dir = Path(STATE_DIR, frozen["hosts"][0]["guardian_id"])
    assert (guardian_dir / "mysql.err").read_text() == ""
    # The writers were held, not broken: they commit again after the thaw.
    _wait_for(
        "writers commit after the thaw",
        lambda: all(w.count() > held[i] + 10 for i, w in enumerate(writers)),
    )
    assert not [w.error for w in writers if w.error]

    # The copy's filesystem is clean (the freeze flushed it) ...
    fsck = subprocess.run(["e2fsck", "-fn", str(copy)], capture_output=True, text=True)
    assert fsck.returncode == 0, f"the copy's ext4 is not clean: {fsck.stdout}{fsck.stderr}"
    # ... and a server started on it recovers InnoDB and has every acknowledged row.
    restored = loops.root / "restored"
    restored.mkdir()
    subprocess.run(["mount", "-o", "loop", str(copy), str(restored)], check=True, timeout=60)
    loops.mounts.append(restored)  # unmounted by the loops fixture
    server = start_mariadbd(restored / "data", mariadb_run, "restored")
    try:
        rows = {
            tuple(int(v) for v in line.split("\t"))
            for line in server.sql("SELECT writer, n FROM app.t").splitlines()
        }
        check = server.sql("CHECK TABLE app.t").split()
        log = server.log.read_text()
        engine_errors = [line for line in log.splitlines() if "[ERROR]" in line]
    finally:
        server.stop()
    missing = sorted(acked - rows)
    assert not missing, f"{len(missing)} acknowledged rows are not in the copy: {missing[:10]}"
    assert len(acked) >= 150
    # Nothing newer than the freeze: each writer's rows in the copy end where its commits did.
    for w, count in zip(writers, held, strict=True):
        assert max(n for number, n in rows if number == w.number) <= count + 1
    # A live disk's copy: InnoDB had to replay its redo log, and did so without an error.
    assert "InnoDB: Starting crash recovery" in log
    assert check[-1] == "OK", f"CHECK TABLE on the copy: {check}"
    assert not engine_errors, f"the copy's server logged errors: {engine_errors}"


def test_mariadb_freeze_during_another_backup_waits_without_blocking_writes(
    mariadb, sql_writers, ssh_conns
) -> None:
    # Another backup (mariadb-backup takes the same lock) holds BACKUP STAGE. This freeze's
    # BACKUP STAGE START waits for that one's END; writes go on meanwhile (FTWRL would block
    # them while it waits); at the step timeout it gives up, naming the statement and why, and
    # nothing is frozen.
    mariadb.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (writer INT, n INT, PRIMARY KEY (writer, n))"
        " ENGINE=InnoDB"
    )
    other = subprocess.Popen(
        [*mariadb.client_args(), "--unbuffered"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        other.stdin.write("BACKUP STAGE START;\nSELECT 'held';\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "held"
        [writer] = sql_writers(1)
        _wait_for("the writer commits", lambda: writer.count() >= 10)
        failure: list[BaseException] = []

        def freeze() -> None:
            try:
                quiesce(
                    "freeze",
                    ssh_conn_ids=conns,
                    mounts=[str(mariadb.data.parent)],
                    max_freeze_seconds=60,
                    profile="mysql",
                    profile_options={"mysql": mariadb.client, "socket": str(mariadb.socket)},
                    step_timeout=8,
                )
            except BaseException as exc:
                failure.append(exc)

        conns = ssh_conns(1)
        thread = threading.Thread(target=freeze, daemon=True)
        thread.start()
        waiting = (
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            " WHERE INFO LIKE 'BACKUP STAGE START%' AND STATE = 'Waiting for backup lock'"
        )
        _wait_for("the freeze waits for BACKUP STAGE", lambda: mariadb.sql(waiting).strip() == "1")
        before = writer.count()
        time.sleep(0.5)
        after = writer.count()
        assert mariadb.sql(waiting).strip() == "1"  # still waiting: the commits fell within
        assert after > before, "commits stopped while the freeze waited for the other backup"
        thread.join(timeout=60)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    assert len(failure) == 1 and isinstance(failure[0], QuiesceError), failure
    assert (
        "BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT did not finish within 8 s (another backup "
        "holds BACKUP STAGE, or a DDL statement runs)" in str(failure[0])
    )
    assert not writer.error
    mariadb.sql("CREATE DATABASE after_refusal")  # the data directory never froze
