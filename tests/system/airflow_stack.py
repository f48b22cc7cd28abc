"""Airflow 3's components on a temporary AIRFLOW_HOME, driven through the REST API.

``AirflowStack`` is what a user's deployment is, minus the machines: ``airflow db migrate``,
then ``api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer`` as
subprocesses of the test, configured only through environment variables, on SQLite (what
``airflow standalone`` runs: Airflow 3 has no SequentialExecutor and accepts LocalExecutor
with SQLite, because tasks reach the database through the api-server's execution API).
The test then does what a user does: it triggers a run through the REST API with a conf (the
body the UI's *Trigger* button posts), watches it and reads task instances and XComs back::

    with AirflowStack(tmp_path / "home", DAGS, env, dag_ids=["my_dag"], secrets=[token]) as af:
        run_id = af.trigger("my_dag", {"note": "by hand"})
        assert af.wait_for_run("my_dag", run_id, timeout=120) == "success"
        af.task_instances("my_dag", run_id)         # mapped ones too: state, try_number, ...
        af.xcom("my_dag", run_id, "clone")          # the return value, as stored
        af.deferrals("my_dag", run_id)              # deferred tasks seen on a triggerer
        af.log("triggerer")                         # a component's log, secrets redacted

Each component logs to ``<home>/logs/components/<name>.log`` (``stack.log_path(name)``); when
the ``with`` block raises, the tail of each component log and of each task log is printed,
with every secret the stack knows replaced by ``***``: its own (admin password, JWT secret,
Fernet key, tokens it received), the passwords in ``AIRFLOW_CONN_*`` values of ``env``, and
``secrets``. On exit every component's process group gets SIGTERM, then SIGKILL after
``stop_timeout``: no scheduler, worker, task or trigger outlives the block.

The admin user is ``admin`` with a random password written to the simple auth manager's
password file; ``token()`` gets a JWT from ``POST /auth/token`` as Airflow 3's REST API
requires. Scheduled runs are off unless ``scheduled_runs=True`` (``[scheduler]
use_job_schedule``), so unpausing a DAG to run a manual trigger makes no run of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as pysecrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

AIRFLOW = Path(sys.executable).with_name("airflow")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"
FINISHED = frozenset({"success", "failed"})
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)

# Short loops for a test: the defaults (5 s heartbeats, 30 s re-parse) are for production.
# Every name is checked against 3.2.2's config.yml.
FAST_SETTINGS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
    # A task's supervisor notices its process has exited only at its next select() timeout,
    # this many seconds: 5 by default, so every task ends 5 s late, and the executor's
    # success event of a task that deferred can arrive after the trigger has fired and the
    # task is running again, which fails it (apache/airflow#71580, #72716; open in 3.2.2).
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
}


class _WriterFirstCursor(sqlite3.Cursor):
    """Opens a transaction that starts with a SAVEPOINT as a writer (``BEGIN IMMEDIATE``).

    pysqlite begins a transaction only before an INSERT, UPDATE or DELETE, so a transaction
    normally takes the write lock first and waits for it (the busy timeout). A SAVEPOINT
    outside a transaction (SQLAlchemy's ``begin_nested()``, which Airflow's backfill creation
    uses per run) opens a deferred one instead: it reads, then asks for the write lock, and
    SQLite answers "database is locked" at once, without waiting, if another process is
    writing, since waiting could deadlock. Taking the lock first makes it wait like the rest.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> _WriterFirstCursor:
        if not self.connection.in_transaction and sql.lstrip()[:9].upper() == "SAVEPOINT":
            super().execute("BEGIN IMMEDIATE")
        super().execute(sql, parameters)
        return self


class WriterFirstConnection(sqlite3.Connection):
    """The sqlite3 connection of every component: cursors are :class:`_WriterFirstCursor`."""

    def cursor(self, factory: Any = _WriterFirstCursor) -> Any:
        return super().cursor(factory)


# [database] sql_alchemy_connect_args for every component (imported by its dotted path):
# wait up to 60 s for SQLite's lock (pysqlite's default is 5 s), and take it first.
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 60, "factory": WriterFirstConnection}


class AirflowStackError(RuntimeError):
    """The stack could not start, or the REST API answered with an error."""


class SQLiteLockedError(AirflowStackError):
    """The api-server answered 500 because SQLite refused it the write lock."""


@dataclass
class Component:
    """One Airflow component: its command line, log file and process (None until started)."""

    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class Sighting:
    """A task instance as one poll of ``wait_for_run`` saw it (only changes are recorded)."""

    at: float  # seconds since the poll began
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    trigger: str | None = None  # the classpath of the trigger it waits on, while deferred
    triggerer_job: int | None = None  # the id of the triggerer job running that trigger
    triggerer_job_type: str | None = None  # "TriggererJob" when a triggerer has it


@dataclass
class _Poll:
    sightings: list[Sighting] = field(default_factory=list)
    last: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    max_deferred: int = 0  # the most task instances one poll saw deferred together


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


def _conn_passwords(env: Mapping[str, str]) -> list[str]:
    """The passwords inside ``AIRFLOW_CONN_*`` values (JSON or URI form)."""
    found = []
    for key, value in env.items():
        if not key.startswith("AIRFLOW_CONN_") or not value:
            continue
        password: str | None
        try:
            password = json.loads(value).get("password")
        except (ValueError, AttributeError):
            password = urlsplit(value).password
        if password:
            found.append(str(password))
    return found


class AirflowStack:
    """api-server, scheduler, dag-processor and triggerer on a temporary AIRFLOW_HOME.

    :param home: the AIRFLOW_HOME to make (SQLite database, logs, password file); may exist
    :param dags_folder: the folder the dag-processor parses
    :param env: extra environment for every component (``AIRFLOW_CONN_*``, ``PYTHONPATH``,
        ``AIRFLOW__SECTION__KEY`` settings, which win over the stack's own)
    :param dag_ids: DAGs to wait for at start, until the REST API shows each one parsed
    :param secrets: values to redact from anything the stack prints, besides its own
    :param start_timeout: seconds for the api-server to answer, every component to report
        healthy and every DAG of ``dag_ids`` to be parsed
    :param stop_timeout: seconds between SIGTERM and SIGKILL on exit
    :param scheduled_runs: let the scheduler create runs from DAG schedules
    :param fast: use ``FAST_SETTINGS`` (short heartbeats and parse intervals)
    :param components: the components to start (all four by default)
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        *,
        dag_ids: Sequence[str] = (),
        secrets: Iterable[str] = (),
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        scheduled_runs: bool = False,
        fast: bool = True,
        components: Sequence[str] = COMPONENTS,
    ) -> None:
        self.home = Path(home)
        self.dags_folder = Path(dags_folder)
        self.dag_ids = list(dag_ids)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port, log_port, trigger_log_port = free_ports(3)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._password = pysecrets.token_urlsafe(24)
        self._token: str | None = None
        self._polls: dict[tuple[str, str], _Poll] = {}
        jwt_secret = pysecrets.token_urlsafe(32)
        fernet_key = _fernet_key()
        self.env = self._environment(
            env or {},
            scheduled_runs=scheduled_runs,
            fast=fast,
            ports=(log_port, trigger_log_port),
            jwt_secret=jwt_secret,
            fernet_key=fernet_key,
        )
        self._secrets = {self._password, jwt_secret, fernet_key, *secrets}
        self._secrets |= set(_conn_passwords(self.env))
        self._secrets.discard("")
        logs = self.home / "logs" / "components"
        args = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }
        self.components = {
            name: Component(name, [str(AIRFLOW), *args[name]], logs / f"{name}.log")
            for name in components
        }
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0)

    # -- configuration ------------------------------------------------------------------

    def _environment(
        self,
        extra: Mapping[str, str],
        *,
        scheduled_runs: bool,
        fast: bool,
        ports: tuple[int, int],
        jwt_secret: str,
        fernet_key: str,
    ) -> dict[str, str]:
        # Nothing of the caller's own Airflow set-up leaks in: the stack is its env alone.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        }
        env |= {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            # Four components and the tasks write to one SQLite file: wait for its lock up to
            # 60 s instead of pysqlite's 5 s.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            # One secret for every component: the scheduler signs the tokens tasks present
            # to the api-server's execution API, and the api-server checks them.
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            # Tasks reach the metadata through this URL; the default is localhost:8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._password_file),
            # The log servers of the scheduler and the triggerer would take 8793 and 8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports[1]),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
        }
        if fast:
            env |= FAST_SETTINGS
        env |= extra
        # Every component imports SQLITE_CONNECT_ARGS from this module.
        repo = str(Path(__file__).resolve().parents[2])
        paths = env.get("PYTHONPATH", "").split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join([repo, *(p for p in paths if p and p != repo)])
        return env

    @property
    def _password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.print_logs()
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.print_logs()
        self.stop()

    def start(self) -> None:
        """Migrate the database, start every component, wait until all are up."""
        began = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self._password_file.write_text(json.dumps({ADMIN: self._password}))
        self._password_file.chmod(0o600)
        migrate_log = self.home / "logs" / "components" / "db-migrate.log"
        migrate_log.parent.mkdir(parents=True, exist_ok=True)
        with migrate_log.open("wb") as out:
            done = subprocess.run(
                [str(AIRFLOW), "db", "migrate"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout,
                check=False,
            )
        if done.returncode != 0:
            raise AirflowStackError(
                f"airflow db migrate exited {done.returncode}:\n"
                + self.redact(_tail(migrate_log, 40))
            )
        print(f"airflow: database migrated in {time.monotonic() - began:.1f}s")
        for component in self.components.values():
            with component.log_path.open("ab") as out:
                component.proc = subprocess.Popen(
                    component.args,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.home,
                    start_new_session=True,  # its own process group: stop() ends its children
                )
        deadline = began + self.start_timeout
        self._wait_healthy(deadline)
        for dag_id in self.dag_ids:
            self.wait_for_dag(dag_id, timeout=max(1.0, deadline - time.monotonic()))
        print(f"airflow: {', '.join(self.components)} up in {time.monotonic() - began:.1f}s")

    def stop(self) -> None:
        """SIGTERM every component's process group, SIGKILL what is left after the timeout."""
        started = [c for c in self.components.values() if c.proc is not None]
        began = time.monotonic()
        for component in started:
            _signal_group(component, signal.SIGTERM)
        deadline = began + self.stop_timeout
        for component in started:
            assert component.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for component in started:
            # The leader may be gone while its workers, tasks or trigger runner are not.
            _signal_group(component, signal.SIGKILL)
            assert component.proc is not None
            if component.proc.poll() is None:
                component.proc.wait(timeout=10)
        self._http.close()
        if started:
            print(f"airflow: stopped in {time.monotonic() - began:.1f}s")

    def leftovers(self) -> list[str]:
        """Components that still have a live process in their group (empty after stop)."""
        alive = []
        for component in self.components.values():
            if component.proc is None:
                continue
            try:
                os.killpg(component.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            alive.append(component.name)
        return alive

    def kill_task_worker(self, ti_id: str) -> list[int]:
        """SIGKILL the LocalExecutor worker running task instance ``ti_id`` and everything it
        started (the task process): what a worker machine's crash or the OOM killer does. No
        process reports the task's end; the scheduler finds it by its missing heartbeat
        (``[scheduler] task_instance_heartbeat_timeout``).

        :param ti_id: the task instance's ``id`` (REST API), which the worker names in its
            process title
        :return: the pids killed, the worker first (empty: no worker runs it now)
        """
        title = f"LocalExecutor: {ti_id}".encode()
        scheduler = self.components["scheduler"].proc
        if scheduler is None:
            return []
        group = os.getpgid(scheduler.pid)
        workers, parents = [], {}
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text()
                ppid, pgid = (int(x) for x in stat.rsplit(")", 1)[1].split()[1:3])
                cmdline = (proc / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            parents[int(proc.name)] = ppid
            if pgid == group and title in cmdline:  # a worker of this stack's scheduler
                workers.append(int(proc.name))
        doomed = list(workers)
        for pid in doomed:  # every descendant, breadth first
            doomed += [child for child, ppid in parents.items() if ppid == pid]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return doomed

    def _wait_healthy(self, deadline: float) -> None:
        """Until ``/api/v2/monitor/health`` reports every started component healthy."""
        wanted = {"scheduler", "triggerer", "dag_processor"} & {
            name.replace("-", "_") for name in self.components
        }
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = self._http.get("/api/v2/monitor/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if answer.status_code == 200:
                health = answer.json()
                if all((health.get(name) or {}).get("status") == "healthy" for name in wanted):
                    return
            time.sleep(0.5)
        raise AirflowStackError(f"components not healthy in time: {health or 'no answer'}")

    def _check_alive(self) -> None:
        for component in self.components.values():
            if component.proc is not None and component.proc.poll() is not None:
                raise AirflowStackError(
                    f"airflow {component.name} exited {component.proc.returncode}:\n"
                    + self.redact(_tail(component.log_path, 40))
                )

    # -- logs -----------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every secret the stack knows replaced by ``***``."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def log_path(self, component: str) -> Path:
        """The file a component writes its stdout and stderr to."""
        return self.components[component].log_path

    def log(self, component: str) -> str:
        """A component's whole log so far, secrets redacted."""
        path = self.log_path(component)
        return self.redact(path.read_text(errors="replace")) if path.exists() else ""

    def task_log_files(self) -> list[Path]:
        """Every task log file written under the home (worker and triggerer parts)."""
        return sorted(p for p in (self.home / "logs").glob("dag_id=*/**/*.log") if p.is_file())

    @property
    def known_secrets(self) -> frozenset[str]:
        """Every secret the stack redacts: its own (admin password, JWT secret, Fernet key,
        tokens), the ``AIRFLOW_CONN_*`` passwords of ``env`` and the ``secrets`` it was given."""
        return frozenset(self._secrets)

    def files_with_secrets(self) -> list[Path]:
        """Log files under the home (components' and tasks') that hold a secret, unredacted."""
        leaks = []
        for path in sorted(p for p in (self.home / "logs").rglob("*") if p.is_file()):
            text = path.read_text(errors="replace")
            if any(secret in text for secret in self._secrets):
                leaks.append(path)
        return leaks

    def print_logs(self, lines: int = 60) -> None:
        """Print the tail of each component log and each task log, secrets redacted."""
        paths = [c.log_path for c in self.components.values()] + self.task_log_files()
        for path in paths:
            if path.exists():
                shown = path.relative_to(self.home)
                print(f"\n===== {shown} (last {lines} lines) =====")
                print(self.redact(_tail(path, lines)))

    # -- REST API -------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the admin user from ``POST /auth/token`` (cached; renewed after a 401)."""
        if self._token is None:
            answer = self._http.post(
                "/auth/token", json={"username": ADMIN, "password": self._password}
            )
            if answer.status_code != 201:
                raise AirflowStackError(
                    f"POST /auth/token answered {answer.status_code}: "
                    + self.redact(answer.text[:500])
                )
            self._token = str(answer.json()["access_token"])
            self._secrets.add(self._token)
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One authenticated REST call; the decoded JSON answer, or AirflowStackError.

        A 500 from SQLite's "database is locked" is asked again (at most 3 times, each said):
        :class:`WriterFirstConnection` makes it rare, but with four components writing one
        SQLite file it can still happen, and for most endpoints the request was rolled back.
        An endpoint that commits part of its work first (``POST /backfills``) passes
        ``ask_again_if_locked=False`` and gets :class:`SQLiteLockedError` to clean up after.
        """
        extra_headers = kwargs.pop("headers", {})
        ask_again_if_locked = kwargs.pop("ask_again_if_locked", True)
        renewed, locked = False, 0
        while True:
            headers = {**extra_headers, "Authorization": f"Bearer {self.token()}"}
            log_size = self._log_size("api-server")
            answer = self._http.request(method, path, headers=headers, **kwargs)
            if answer.status_code == 401 and not renewed:
                self._token, renewed = None, True
                continue
            if answer.is_success:
                return answer.json() if answer.content else None
            detail = ""
            if answer.status_code >= 500:  # the api-server's traceback says why
                new_log = self._log_since("api-server", log_size)
                if "database is locked" in new_log and not ask_again_if_locked:
                    raise SQLiteLockedError(f"{method} {path} answered 500: database is locked")
                if "database is locked" in new_log and locked < 3:
                    locked += 1
                    print(f"airflow: {method} {path}: SQLite was locked; asking again ({locked})")
                    time.sleep(1)
                    continue
                detail = "\napi-server log:\n" + "\n".join(new_log.splitlines()[-40:])
            raise AirflowStackError(
                f"{method} {path} answered {answer.status_code}: "
                + self.redact(answer.text[:2000] + detail)
            )

    def _log_size(self, component: str) -> int:
        path = self.log_path(component)
        return path.stat().st_size if path.exists() else 0

    def _log_since(self, component: str, offset: int) -> str:
        """What ``component`` logged after ``offset`` (given a moment to flush)."""
        time.sleep(0.2)
        path = self.log_path(component)
        if not path.exists():
            return ""
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def wait_for_dag(self, dag_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Until the dag-processor has parsed ``dag_id``; fails at once on its import error."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            answer = self._http.get(
                f"/api/v2/dags/{dag_id}", headers={"Authorization": f"Bearer {self.token()}"}
            )
            if answer.status_code == 200:
                return dict(answer.json())
            errors = self.request("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                text = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise AirflowStackError(
                    f"import errors in {self.dags_folder}:\n{self.redact(text)}"
                )
            if time.monotonic() > deadline:
                raise AirflowStackError(f"DAG {dag_id} not parsed within {timeout:.0f}s")
            time.sleep(0.5)

    def unpause(self, dag_id: str) -> None:
        """``PATCH /api/v2/dags/{dag_id}`` with ``is_paused: false`` (DAGs start paused)."""
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        logical_date: datetime | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
        unpause: bool = True,
    ) -> str:
        """Unpause ``dag_id`` and trigger a run with the body the UI's Trigger button posts.

        :param conf: the run's conf (the UI's JSON box; checked against the DAG's params)
        :param logical_date: an aware datetime, or None for a run without one (the default)
        :param run_id: the run id to ask for (Airflow makes one otherwise)
        :param note: the run's note
        :param unpause: unpause the DAG first (a paused DAG's runs stay queued)
        :return: the run id
        """
        if unpause:
            self.unpause(dag_id)
        body: dict[str, Any] = {
            "conf": dict(conf or {}),
            "logical_date": logical_date.isoformat() if logical_date else None,
            "data_interval_start": None,
            "data_interval_end": None,
            "partition_key": None,
        }
        if run_id is not None:
            body["dag_run_id"] = run_id
        if note is not None:
            body["note"] = note
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        print(f"airflow: triggered {dag_id} run {run['dag_run_id']} ({run['state']})")
        return str(run["dag_run_id"])

    def backfill(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/v2/backfills`` with ``body``; the backfill made.

        Airflow commits the backfill's row before it makes its runs, so a request that SQLite
        refused half way leaves a backfill with no runs, and asking again answers 409 ("There
        is already a running backfill") until the scheduler drops it two minutes later. So a
        locked request is followed by cancelling the backfills it left, then asked again.
        """
        dag_id = str(body["dag_id"])

        def running() -> set[int]:
            made = self.request("GET", "/api/v2/backfills", params={"dag_id": dag_id})
            return {b["id"] for b in made["backfills"] if b["completed_at"] is None}

        before = running()
        for attempt in range(1, 4):
            try:
                return dict(
                    self.request("POST", "/api/v2/backfills", json=body, ask_again_if_locked=False)
                )
            except SQLiteLockedError:
                if attempt == 3:
                    raise
            for orphan in sorted(running() - before):
                self.request("PUT", f"/api/v2/backfills/{orphan}/cancel")
                print(f"airflow: cancelled backfill {orphan}, left by the locked request")
            print(f"airflow: POST /api/v2/backfills: SQLite was locked; asking again ({attempt})")
        raise AssertionError("unreachable")

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """``GET /api/v2/dags/{dag_id}/dagRuns/{run_id}``: state, conf, dates, note, ..."""
        return dict(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones included (``map_index`` >= 0), as the
        REST API gives them: ``task_id``, ``map_index``, ``state``, ``try_number``,
        ``trigger`` (while deferred), ``triggerer_job`` (the job running that trigger), ...
        """
        found: list[dict[str, Any]] = []
        while True:
            page = self.request(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "map_index"},
            )
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """An XCom's value as stored (JSON), from the REST API."""
        entry = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index},
        )
        return entry["value"]

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> str:
        """A task try's log as the UI shows it (worker and triggerer parts), redacted."""
        answer = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        lines = []
        for item in answer.get("content") or []:
            if isinstance(item, dict):
                lines.append(" ".join(str(item.get(k, "")) for k in ("timestamp", "event")))
            else:
                lines.append(str(item))
        return self.redact("\n".join(lines))

    # -- waiting ----------------------------------------------------------------------------

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 300.0, poll: float = 0.25
    ) -> str:
        """Poll the run and its task instances until it finishes; print every change.

        Each change of a task instance (state, try, trigger, triggerer) is kept as a
        ``Sighting`` for ``sightings()`` and ``deferrals()``.

        :return: the run's final state (``success`` or ``failed``), or its state at the
            timeout (the caller asserts)
        """
        record = self._polls.setdefault((dag_id, run_id), _Poll())
        began = time.monotonic()
        state = None
        while time.monotonic() - began < timeout:
            self._check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            tis = self.task_instances(dag_id, run_id)
            for ti in tis:
                self._record(record, time.monotonic() - began, ti)
            deferred = sum(1 for ti in tis if ti["state"] == "deferred")
            record.max_deferred = max(record.max_deferred, deferred)
            if state in FINISHED:
                break
            time.sleep(poll)
        print(f"airflow: run {run_id} {state} after {time.monotonic() - began:.1f}s")
        return str(state)

    @staticmethod
    def _record(record: _Poll, at: float, ti: Mapping[str, Any]) -> None:
        trigger = ti.get("trigger") or {}
        job = ti.get("triggerer_job") or {}
        seen = Sighting(
            at=round(at, 2),
            task_id=ti["task_id"],
            map_index=ti["map_index"],
            state=ti["state"],
            try_number=ti["try_number"],
            trigger=trigger.get("classpath"),
            triggerer_job=job.get("id") if job.get("job_type") == "TriggererJob" else None,
            triggerer_job_type=job.get("job_type"),
        )
        key = (seen.task_id, seen.map_index)
        what = (seen.state, seen.try_number, seen.trigger, seen.triggerer_job)
        if record.last.get(key) == what:
            return
        record.last[key] = what
        record.sightings.append(seen)
        label = seen.task_id if seen.map_index < 0 else f"{seen.task_id}[{seen.map_index}]"
        extra = ""
        if seen.trigger:
            extra = f" on {seen.trigger.rsplit('.', 1)[-1]}"
            extra += f", triggerer job {seen.triggerer_job}" if seen.triggerer_job else ""
        print(f"  {seen.at:6.1f}s {label}: {seen.state} (try {seen.try_number}){extra}")

    def sightings(self, dag_id: str, run_id: str) -> list[Sighting]:
        """Every task instance change ``wait_for_run`` saw for this run, in order."""
        return list(self._polls.get((dag_id, run_id), _Poll()).sightings)

    def deferrals(self, dag_id: str, run_id: str) -> dict[tuple[str, int], set[str]]:
        """``(task_id, map_index)`` -> trigger classpaths seen running on a triggerer job.

        A task instance counts only when a poll saw it ``deferred`` with its trigger assigned
        to a job of type ``TriggererJob``: the wait ran on the triggerer, not in a worker.
        """
        found: dict[tuple[str, int], set[str]] = {}
        for seen in self.sightings(dag_id, run_id):
            if seen.state == "deferred" and seen.trigger and seen.triggerer_job is not None:
                found.setdefault((seen.task_id, seen.map_index), set()).add(seen.trigger)
        return found

    def max_deferred_at_once(self, dag_id: str, run_id: str) -> int:
        """The most task instances of the run that one poll saw deferred together."""
        return self._polls.get((dag_id, run_id), _Poll()).max_deferred


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _signal_group(component: Component, sig: signal.Signals) -> None:
    if component.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(component.proc.pid, sig)


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
