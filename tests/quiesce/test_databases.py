"""The database profiles against real servers, when this machine has them."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_skytap.operators.quiesce import QuiesceError
from tests.quiesce.conftest import LoopMounts, quiesce

PG_USER = "skytappg"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        if (version / "bin" / name).exists():
            return str(version / "bin" / name)
    return None


@dataclass
class Postgres:
    sockets: Path
    port: int
    data: Path
    psql: str

    def sql(self, query: str, *, wait: bool = True) -> subprocess.Popen[str] | str:
        args = ["runuser", "-u", PG_USER, "--", self.psql, "-X", "-At", "-h", str(self.sockets)]
        args += ["-p", str(self.port), "-d", "postgres", "-c", query]
        if not wait:
            return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture
def postgres(loops: LoopMounts, workdir: Path) -> Iterator[Postgres]:
    """A throwaway cluster, run by its own user (postgres refuses root), data on a loop mount."""
    tools = {name: _pg_bin(name) for name in ("initdb", "pg_ctl", "postgres", "psql")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"postgres profile: no PostgreSQL here ({', '.join(missing)} not found)")
    created = not _run_ok("id", PG_USER)
    if created:
        subprocess.run(["useradd", "--system", "--shell", "/bin/sh", PG_USER], check=True)
    mount = loops.make("pgdata", size_mb=64)
    data = mount / "data"
    data.mkdir()
    sockets = workdir / "pg-sockets"
    sockets.mkdir(exist_ok=True)
    log = workdir / "pg.log"
    for path in (mount, data, sockets):
        shutil.chown(path, PG_USER)
    log.touch()
    shutil.chown(log, PG_USER)
    as_pg = ["runuser", "-u", PG_USER, "--"]
    subprocess.run(
        [*as_pg, tools["initdb"], "-D", str(data), "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = 55432
    options = f"-k {sockets} -p {port} -c listen_addresses=''"
    subprocess.run(
        [*as_pg, tools["pg_ctl"], "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield Postgres(sockets, port, data, str(tools["psql"]))
    finally:
        loops.thaw_all()
        subprocess.run(
            [*as_pg, tools["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if created:
            subprocess.run(["userdel", PG_USER], capture_output=True, check=False)


def _run_ok(*args: str) -> bool:
    return subprocess.run(args, capture_output=True, check=False).returncode == 0


def test_postgres_profile_checkpoints_then_holds_the_freeze(postgres, ssh_conns) -> None:
    conns = ssh_conns(1)
    postgres.sql("CREATE TABLE t (n int)")
    before = int(str(postgres.sql("SELECT checkpoints_req FROM pg_stat_bgwriter")))
    mount = str(postgres.data.parent)
    options = {
        "os_user": PG_USER,
        "host": str(postgres.sockets),
        "port": postgres.port,
        "database": "postgres",
    }
    frozen = quiesce(
        "freeze",
        ssh_conn_ids=conns,
        mounts=[mount],
        max_freeze_seconds=60,
        profile="postgres",
        profile_options=options,
    )
    assert frozen["hosts"][0]["exit_codes"]["pre_freeze"] == 0
    insert = postgres.sql("INSERT INTO t VALUES (1)", wait=False)
    assert isinstance(insert, subprocess.Popen)
    time.sleep(1)
    assert insert.poll() is None, "a commit finished while the data directory was frozen"
    thawed = quiesce("thaw", ssh_conn_ids=conns, mounts=[mount], profile="postgres")
    assert insert.wait(timeout=30) == 0
    after = int(str(postgres.sql("SELECT checkpoints_req FROM pg_stat_bgwriter")))
    assert after > before, "CHECKPOINT did not run"
    assert postgres.sql("SELECT count(*) FROM t").strip() == "1"
    assert thawed["consistency"] == "application-consistent"


def test_postgres_profile_failure_freezes_nothing(postgres, ssh_conns) -> None:
    conns = ssh_conns(1)
    mount = str(postgres.data.parent)
    with pytest.raises(QuiesceError, match="pre-freeze failed") as info:
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts=[mount],
            max_freeze_seconds=60,
            profile="postgres",
            profile_options={"os_user": PG_USER, "host": str(postgres.sockets), "port": 1},
        )
    assert "Is the server running" in str(info.value) or "No such file" in str(info.value)
    postgres.sql("CREATE TABLE after_failure (n int)")  # the data dir never froze


# A stand-in for the mysql client: it logs what the session receives, answers the profile's
# version query with the version in the file beside it, and answers the marker query unless a
# file "hang" is there (a lock that does not come). It shows the session's life, which a
# one-shot `mysql -e` gets wrong.
STAND_IN_MYSQL = """#!/bin/sh
here=$(dirname "$0")
log=$here/session.log
echo $$ >"$here/pid"
echo "start $*" >>"$log"
while IFS= read -r line; do
    echo "got $line" >>"$log"
    case $line in
    *skytap-quiesce-version*) echo "skytap-quiesce-version $(cat "$here/version")" ;;
    *skytap-quiesce-locked*) [ -f "$here/hang" ] || echo skytap-quiesce-locked ;;
    esac
done
echo "end of session" >>"$log"
"""
VERSION_QUERY = "got SELECT CONCAT('skytap-quiesce-version ', @@version);"
BACKUP_STAGE = ("BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT;", "BACKUP STAGE END;")
FTWRL = ("FLUSH TABLES WITH READ LOCK;", "UNLOCK TABLES;")


@pytest.fixture
def stand_in_mysql(workdir: Path) -> Callable[..., Path]:
    """The stand-in client in a fresh directory: its path; the session log lies beside it."""

    def make(version: str, *, hang: bool = False) -> Path:
        client_dir = workdir / "stand-in-mysql"
        shutil.rmtree(client_dir, ignore_errors=True)
        client_dir.mkdir()
        client = client_dir / "mysql"
        client.write_text(STAND_IN_MYSQL)
        client.chmod(0o755)
        (client_dir / "version").write_text(version)
        if hang:
            (client_dir / "hang").touch()
        return client

    return make


@pytest.mark.parametrize(
    ("version", "lock", "statements"),
    [
        ("10.11.6-MariaDB-0+deb12u1", None, BACKUP_STAGE),  # auto: MariaDB >= 10.4.1
        ("10.3.39-MariaDB-0+deb10u2", None, FTWRL),  # auto: before BACKUP STAGE
        ("10.11.6-MariaDB-0+deb12u1", "ftwrl", FTWRL),  # the DAG author's choice
    ],
)
def test_mysql_profile_holds_the_lock_session_until_after_the_thaw(
    loops, writers, ssh_conns, stand_in_mysql, version, lock, statements
) -> None:
    client = stand_in_mysql(version)
    log = client.parent / "session.log"
    conns = ssh_conns(1)
    mount = loops.make("mysqldata")
    writer = writers(mount)
    options = {"mysql": str(client), "defaults_file": "/etc/mysql/backup.cnf"}
    if lock is not None:
        options["lock"] = lock
    frozen = quiesce(
        "freeze",
        ssh_conn_ids=conns,
        mounts=[str(mount)],
        max_freeze_seconds=60,
        profile="mysql",
        profile_options=options,
    )
    assert frozen["hosts"][0]["status"] == "frozen"
    writer.assert_stalled(0.3)
    held = log.read_text().splitlines()
    assert held == [
        "start --defaults-extra-file=/etc/mysql/backup.cnf --batch --skip-column-names "
        "--unbuffered",
        VERSION_QUERY,
        f"got {statements[0]}",
        'got SELECT "skytap-quiesce-locked";',
    ]  # the session is still open while frozen
    quiesce("thaw", ssh_conn_ids=conns, mounts=[str(mount)], profile="mysql")
    writer.wait_progress()
    assert log.read_text().splitlines()[4:] == [f"got {statements[1]}", "end of session"]


def test_mysql_lock_timeout_names_the_statement_and_freezes_nothing(
    loops, writers, ssh_conns, stand_in_mysql
) -> None:
    client = stand_in_mysql("10.11.6-MariaDB-0+deb12u1", hang=True)
    conns = ssh_conns(1)
    mount = loops.make("mysqldata")
    writer = writers(mount)
    with pytest.raises(QuiesceError) as info:
        quiesce(
            "freeze",
            ssh_conn_ids=conns,
            mounts=[str(mount)],
            max_freeze_seconds=60,
            profile="mysql",
            profile_options={"mysql": str(client)},
            step_timeout=1,
        )
    assert "BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT did not finish within 1 s" in str(
        info.value
    )
    writer.wait_progress()  # nothing froze
    assert f"got {BACKUP_STAGE[0]}" in (client.parent / "session.log").read_text()
    # The session is over (its input closed, the client stopped): no lock session left behind.
    pid = int((client.parent / "pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and b"mysql" in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the mysql session outlived the failed freeze"
        time.sleep(0.05)
