"""A private PostgreSQL cluster and Redis server for ``AirflowStack``, from Debian's packages.

``LocalServices()`` is what ``postgres`` and ``redis`` of docker-compose.yaml are, minus
the containers: a cluster made with ``initdb`` (database ``airflow``, user ``airflow`` with a
random password, scram-sha-256 on 127.0.0.1) and a ``redis-server``, each on a free loopback
port, their data, sockets and logs in a new temporary directory (``root``: in the system's
temporary directory, not pytest's, which the service user could not enter). Never the
machine's own services or their default ports. As root both run as the system user
``SERVICE_USER`` (postgres refuses root).

``scripts/services.sh`` installs the packages with apt when root and missing and makes the
user; :func:`unavailable` runs it and says why the services cannot run here (tests skip with
that reason). ``restart_postgres()`` and ``restart_redis()`` are the faults bench/faults.py
measures: what ``docker compose restart postgres`` (or ``redis``) does.
"""

from __future__ import annotations

import contextlib
import os
import secrets as pysecrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = ROOT / "scripts" / "services.sh"
SERVICE_USER = os.environ.get("SKYTAP_STACK_USER", "skytap-stack")
DB_NAME = DB_USER = "airflow"  # docker-compose.yaml's POSTGRES_DB and POSTGRES_USER


class ServicesError(RuntimeError):
    """PostgreSQL or Redis could not be installed, started or stopped."""


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian keeps one per major)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def unavailable() -> str | None:
    """Why PostgreSQL and Redis cannot run here (after ``scripts/services.sh`` has tried to
    install them), or None."""
    done = subprocess.run(
        ["bash", str(SERVICES_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["scripts/services.sh failed"])[-1]
    if pg_bin() is None or shutil.which("redis-server") is None:
        return "no PostgreSQL server or redis-server after scripts/services.sh"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalServices:
    """PostgreSQL and Redis on loopback, private to one stack.

    :param start_timeout: seconds for each to start
    :param keep: leave the data directory after ``stop()`` (for a look at the logs)
    """

    def __init__(self, start_timeout: float = 120.0, *, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="skytap-stack-services-"))
        self.keep = keep
        self.start_timeout = start_timeout
        self.pg_port, self.redis_port = free_ports(2)
        self.password = pysecrets.token_urlsafe(18)
        self.pg_data = self.root / "pgdata"
        self.pg_sockets = self.root / "pg-sockets"
        self.pg_log = self.root / "postgres.log"
        self.redis_dir = self.root / "redis"
        self.redis_log = self.root / "redis.log"
        self._redis: subprocess.Popen[bytes] | None = None
        self._bin = pg_bin()
        self._as_user = ["runuser", "-u", SERVICE_USER, "--"] if os.geteuid() == 0 else []
        self.restarts = {"postgres": 0, "redis": 0}

    # -- what Airflow's settings name -----------------------------------------------------

    def sql_alchemy_conn(self, scheme: str = "postgresql+psycopg2") -> str:
        """The metadata database's URL, with ``scheme`` (the compose file's)."""
        return f"{scheme}://{DB_USER}:{self.password}@127.0.0.1:{self.pg_port}/{DB_NAME}"

    def broker_url(self, db: int = 0) -> str:
        """Redis's URL for Celery (no password: loopback only, as the compose file's)."""
        return f"redis://:@127.0.0.1:{self.redis_port}/{db}"

    @property
    def secrets(self) -> list[str]:
        """The values to keep out of logs: the database password."""
        return [self.password]

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Make and start the cluster (database ``airflow``), then start Redis."""
        if self._bin is None or shutil.which("redis-server") is None:
            raise ServicesError("PostgreSQL or redis-server missing: run scripts/services.sh")
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        for path in (self.pg_data, self.pg_sockets, self.redis_dir):
            path.mkdir(exist_ok=True)
        pwfile = self.root / "pg-password"
        pwfile.write_text(self.password + "\n")
        for path in (self.root, self.pg_data, self.pg_sockets, self.redis_dir, pwfile):
            self._own(path)
        for log in (self.pg_log, self.redis_log):
            log.touch()
            self._own(log)
        self.pg_data.chmod(0o700)
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self.pg_data),
            "-U",
            DB_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        self._pg_ctl("start")
        self._psql(f"CREATE DATABASE {DB_NAME}")
        self._start_redis()
        print(
            f"services: PostgreSQL on 127.0.0.1:{self.pg_port}, Redis on "
            f"127.0.0.1:{self.redis_port}, up in {time.monotonic() - began:.1f}s"
        )

    def stop(self) -> None:
        """Stop both (fast shutdown; immediate if that hangs)."""
        if self._bin is not None and (self.pg_data / "postmaster.pid").exists():
            try:
                self._pg_ctl("stop", "-m", "fast", timeout=60)
            except (ServicesError, subprocess.TimeoutExpired):
                with contextlib.suppress(ServicesError, subprocess.TimeoutExpired):
                    self._pg_ctl("stop", "-m", "immediate", timeout=30)
        self._stop_redis()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart_postgres(self) -> float:
        """``pg_ctl restart -m fast``: every connection is cut; seconds it took."""
        began = time.monotonic()
        self._pg_ctl("restart", "-m", "fast")
        self.restarts["postgres"] += 1
        return time.monotonic() - began

    def restart_redis(self) -> float:
        """SIGTERM redis-server (it saves its dataset, as the image's does), start it again on
        the same port; seconds it took."""
        began = time.monotonic()
        self._stop_redis()
        self._start_redis()
        self.restarts["redis"] += 1
        return time.monotonic() - began

    def alive(self) -> list[str]:
        """The services running now (``postgres``, ``redis``)."""
        up = []
        pid_file = self.pg_data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), 0)
            up.append("postgres")
        if self._redis is not None and self._redis.poll() is None:
            up.append("redis")
        return up

    # -- helpers ------------------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        if self._as_user:
            shutil.chown(path, SERVICE_USER, SERVICE_USER)

    def _run(self, *args: str, timeout: float | None = None) -> str:
        done = subprocess.run(
            [*self._as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout or self.start_timeout,
            check=False,
            env={**os.environ, "PGPASSWORD": self.password},
            cwd=self.root,
        )
        if done.returncode != 0:
            text = (done.stdout + done.stderr).replace(self.password, "***")
            raise ServicesError(f"{Path(args[0]).name} exited {done.returncode}: {text[-2000:]}")
        return done.stdout

    def _pg_ctl(self, action: str, *extra: str, timeout: float | None = None) -> None:
        assert self._bin is not None
        # Durability is not what these tests check: no fsync, so the cluster is fast on a busy
        # disk (a restart is still a clean shutdown and restart; only an OS crash loses data).
        options = (
            f"-p {self.pg_port} -k {self.pg_sockets} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off"
        )
        self._run(
            str(self._bin / "pg_ctl"),
            action,
            "-D",
            str(self.pg_data),
            "-l",
            str(self.pg_log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(self.start_timeout)),
            *extra,
            timeout=timeout,
        )

    def _psql(self, sql: str) -> str:
        assert self._bin is not None
        psql = self._bin / "psql"
        return self._run(
            str(psql if psql.exists() else "psql"),
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.pg_port),
            "-U",
            DB_USER,
            "-d",
            "postgres",
            "-c",
            sql,
        )

    def _start_redis(self) -> None:
        with self.redis_log.open("ab") as out:
            self._redis = subprocess.Popen(
                [
                    *self._as_user,
                    str(shutil.which("redis-server")),
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.redis_dir),
                    "--daemonize",
                    "no",
                    # The image's defaults: RDB snapshots, saved on shutdown; no unix socket.
                    "--save",
                    "3600 1 300 100 60 10000",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._redis.poll() is not None:
                raise ServicesError(
                    f"redis-server exited {self._redis.returncode}: "
                    + self.redis_log.read_text(errors="replace")[-2000:]
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.1)
        raise ServicesError(f"redis-server did not answer on {self.redis_port} in time")

    def _stop_redis(self) -> None:
        proc, self._redis = self._redis, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
