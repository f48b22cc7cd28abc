"""A distributed Airflow 3 on one machine, driven through the REST API.

``AirflowStack`` is docker-compose.yaml's deployment, minus the containers: a private
PostgreSQL cluster as the metadata database and a private Redis as Celery's broker
(``stack_services.LocalServices``, Debian's packages, on free loopback ports), ``airflow db
migrate`` (what ``airflow-init`` does), then the api-server, the scheduler (CeleryExecutor),
the dag-processor, two triggerers and two Celery workers as subprocesses of the caller, each in
its own process group and configured only through environment variables. The settings are the
compose file's own (``x-airflow-common``'s environment, read from docker-compose.yaml), with
container addresses moved to this machine's (:data:`LOCAL_ADDRESSES`); the few settings a
stack on one machine adds are :data:`STACK_SETTINGS`, each with its reason. tests/deploy
checks that the two stay the same deployment.

The caller does what a user does: it sets connections and triggers a run through the REST API
with a conf (the body the UI's *Trigger* button posts), watches it and reads task instances
and XComs back::

    with AirflowStack(tmp_path / "home", DAGS, dag_ids=["my_dag"], secrets=[token]) as af:
        af.set_connection("skytap_default", {"conn_type": "skytap", "host": url, ...})
        run_id = af.trigger("my_dag", {"note": "by hand"})
        assert af.wait_for_run("my_dag", run_id, timeout=120) == "success"
        af.task_instances("my_dag", run_id)         # mapped ones too: state, try_number, ...
        af.xcom("my_dag", run_id, "clone")          # the return value, as stored
        af.deferrals("my_dag", run_id)              # deferred tasks seen on a triggerer
        af.log("triggerer-1")                       # a component's log, secrets redacted

Each component has a name (``api-server``, ``scheduler``, ``dag-processor``, ``triggerer-1``,
``triggerer-2``, ``worker-1``, ``worker-2``) that is also its hostname in Airflow (``[core]
hostname_callable``): a task instance's ``hostname`` names the worker that ran it, a triggerer
job's ``hostname`` the triggerer. ``kill(name)`` SIGKILLs a component and every process it
started (a machine's crash), ``restart(name)`` is ``docker compose restart``; with
``restart_always=True`` a component that exits is started again, as the compose file's
``restart: always`` does. ``services.restart_postgres()`` / ``restart_redis()`` restart the
others.

Each component logs to ``<home>/logs/components/<name>.log``; when the ``with`` block raises,
the tail of each component log and of each task log is printed, with every secret the stack
knows replaced by ``***``: its own (admin password, database password, JWT secret, Fernet key,
tokens it received), the passwords of the connections it was given, and ``secrets``. On exit
every component's process group gets SIGTERM, then SIGKILL after ``stop_timeout``: no
scheduler, worker, task or trigger outlives the block; then the services it started stop.

The admin user is the compose file's (``airflow``) with a random password written to the
simple auth manager's password file; ``token()`` gets a JWT from ``POST /auth/token``.
Scheduled runs are off unless ``scheduled_runs=True`` (``[scheduler] use_job_schedule``).

``python -m tests.system.airflow_stack [DAGS_FOLDER]`` (``make stack``) starts one and keeps it
up until Ctrl-C, printing the UI's address and login.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from tests.system.stack_services import LocalServices, free_ports

AIRFLOW = Path(sys.executable).with_name("airflow")
ROOT = Path(__file__).resolve().parents[2]
# Where docker-compose.yaml mounts demo/skytap_backups.yaml (SKYTAP_BACKUPS_CONFIG).
CONTAINER_BACKUPS_CONFIG = "/opt/airflow/skytap_backups.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yaml"
FINISHED = frozenset({"success", "failed"})
COMPONENT_ENV = "SKYTAP_STACK_COMPONENT"  # a component's name, which is its hostname

# The compose file's Airflow services -> the stack's components of that kind. The stack runs
# `deploy.replicas` of each (default 1), named <kind>-1, <kind>-2 when more than one.
COMPOSE_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "worker",
}
# ...and the rest of the compose file: what stands in for each here.
COMPOSE_OTHERS = {
    "postgres": "stack_services.LocalServices: a private PostgreSQL cluster",
    "redis": "stack_services.LocalServices: a private redis-server",
    "airflow-init": "AirflowStack.start(): airflow db migrate, secrets and the password file",
    "skytap-simulator": "the caller's SimulatorProcess",
    "demo-vm-app-1": "the caller's demo.lab VMs",
    "demo-vm-app-2": "the caller's demo.lab VMs",
    "demo-vm-db-1": "the caller's demo.lab VMs",
}

# Settings of the compose file that only mean something in its containers: airflow-init
# writes AIRFLOW_CONFIG with the shared secrets (the stack passes them in the environment),
# and the connections name container hosts (the caller gives its own).
CONTAINER_ONLY = ("AIRFLOW_CONFIG", "AIRFLOW_CONN_")

# Short loops for a test: the defaults (5 s heartbeats, 30 s re-parse) are for production.
# Every name is checked against 3.2.2's config.yml.
FAST_SETTINGS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    # A triggerer that has not heartbeaten for this long is dead: the other one takes over its
    # triggers (default 30 s).
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
    # A task's supervisor notices its process has exited only at its next select() timeout,
    # this many seconds: 5 by default, so every task ends 5 s late, and the executor's
    # success event of a task that deferred can arrive after the trigger has fired and the
    # task is running again, which fails it (apache/airflow#71580, #72716; open in 3.2.2).
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
}

# What the stack sets that the compose file does not, and why (tests/deploy checks that
# nothing else differs). Values depend on the stack; FAST_SETTINGS come on top with fast=True.
STACK_SETTINGS = {
    "AIRFLOW__CORE__DAGS_FOLDER": "the compose file mounts ./dags at the image's default",
    "AIRFLOW__CORE__FERNET_KEY": "airflow-init writes it to the shared airflow.cfg",
    "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-init writes it to the shared airflow.cfg",
    "AIRFLOW__API__HOST": "the api-server listens on loopback, not in a container",
    "AIRFLOW__API__PORT": "a free port, not the container's 8080",
    "AIRFLOW__API__BASE_URL": "the api-server's address on this machine",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "one free port per worker (8793 in a container)",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "one free port per triggerer (8794)",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "a free port (8974)",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "each component's name as its hostname (containers "
    "have their own)",
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "tests trigger their runs; no scheduled ones",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "one slot per worker: two in all, so three waits "
    "deferred at once prove a wait holds no slot; and less memory on 2 cores",
}
WORKER_CONCURRENCY = 1


def component_hostname() -> str:
    """``[core] hostname_callable`` of every component: its name (``worker-1``, ...)."""
    import socket

    return os.environ.get(COMPONENT_ENV) or socket.getfqdn()


def compose_settings() -> dict[str, str]:
    """The Airflow settings every Airflow service of docker-compose.yaml shares
    (``x-airflow-common``'s environment), ``${VAR:-default}`` as a fresh checkout sees it."""
    import re

    common = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["x-airflow-common"]
    pattern = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
    return {
        key: pattern.sub(lambda m: m.group(2) or "", str(value))
        for key, value in common["environment"].items()
    }


def compose_replicas() -> dict[str, int]:
    """Compose service -> how many containers it runs (``deploy.replicas``, default 1)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    return {
        name: int((services[name].get("deploy") or {}).get("replicas", 1))
        for name in COMPOSE_SERVICES
    }


def compose_commands() -> dict[str, list[str]]:
    """Compose service -> its command (argv)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    return {name: [str(a) for a in services[name]["command"]] for name in COMPOSE_SERVICES}


class AirflowStackError(RuntimeError):
    """The stack could not start, or the REST API answered with an error."""


@dataclass
class Component:
    """One Airflow component: its command line, own settings, log file and process."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0  # how often it was started (restarts included)


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
    triggerer: str | None = None  # that job's hostname: the triggerer component's name


@dataclass
class _Poll:
    sightings: list[Sighting] = field(default_factory=list)
    last: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    max_deferred: int = 0  # the most task instances one poll saw deferred together
    began: float = field(default_factory=time.monotonic)  # the first poll


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
    """docker-compose.yaml's Airflow on this machine: PostgreSQL, Redis, Celery.

    :param home: the AIRFLOW_HOME to make (logs, password file); may exist
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
    :param services: PostgreSQL and Redis to use (started); None starts a private pair
    :param replicas: compose service -> how many to run (the compose file's by default)
    :param restart_always: start a component again when it exits (``restart: always``)
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        *,
        dag_ids: Sequence[str] = (),
        secrets: Iterable[str] = (),
        start_timeout: float = 180.0,
        stop_timeout: float = 20.0,
        scheduled_runs: bool = False,
        fast: bool = True,
        services: LocalServices | None = None,
        replicas: Mapping[str, int] | None = None,
        restart_always: bool = False,
    ) -> None:
        self.home = Path(home)
        self.dags_folder = Path(dags_folder)
        self.dag_ids = list(dag_ids)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.restart_always = restart_always
        self._own_services = services is None
        self.services = services or LocalServices()
        self.replicas = compose_replicas() | dict(replicas or {})
        counts = {kind: self.replicas[name] for name, kind in COMPOSE_SERVICES.items()}
        names = {
            kind: [kind] if n == 1 else [f"{kind}-{i}" for i in range(1, n + 1)]
            for kind, n in counts.items()
        }
        ports = iter(free_ports(2 + counts["worker"] + counts["triggerer"]))
        self.port = next(ports)
        health_port = next(ports)
        self.base_url = f"http://127.0.0.1:{self.port}"
        settings = compose_settings()
        self.admin = settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0]
        self._password = pysecrets.token_urlsafe(24)
        self._token: str | None = None
        self._polls: dict[tuple[str, str], _Poll] = {}
        self._stopping: set[str] = set()
        self._supervisor: threading.Thread | None = None
        self._stop_supervisor = threading.Event()
        self.restarts: list[tuple[float, str, int | None]] = []  # (time, name, exit code)
        jwt_secret = pysecrets.token_urlsafe(32)
        fernet_key = _fernet_key()
        self.env = self._environment(
            settings,
            env or {},
            scheduled_runs=scheduled_runs,
            fast=fast,
            jwt_secret=jwt_secret,
            fernet_key=fernet_key,
            health_port=health_port,
        )
        self._secrets = {self._password, jwt_secret, fernet_key, *secrets}
        self._secrets |= set(_conn_passwords(self.env)) | set(self.services.secrets)
        self._secrets.discard("")
        logs = self.home / "logs" / "components"
        commands = compose_commands()
        self.components: dict[str, Component] = {}
        for service, kind in COMPOSE_SERVICES.items():
            for name in names[kind]:
                argv = [str(AIRFLOW), *commands[service][1:]]  # the compose file's command
                own = {COMPONENT_ENV: name}
                if kind == "api-server":
                    argv += ["--host", "127.0.0.1", "--port", str(self.port)]
                elif kind == "worker":
                    argv += ["--celery-hostname", f"{name}@%h"]
                    own["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(next(ports))
                elif kind == "triggerer":
                    own["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(next(ports))
                self.components[name] = Component(name, argv, logs / f"{name}.log", own)
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0)

    # -- configuration ------------------------------------------------------------------

    def _environment(
        self,
        settings: Mapping[str, str],
        extra: Mapping[str, str],
        *,
        scheduled_runs: bool,
        fast: bool,
        jwt_secret: str,
        fernet_key: str,
        health_port: int,
    ) -> dict[str, str]:
        # Nothing of the caller's own Airflow set-up leaks in: the stack is its env alone.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW_CONFIG"))
        }
        env["AIRFLOW_HOME"] = str(self.home)
        for key, value in settings.items():
            if not key.startswith(CONTAINER_ONLY):
                env[key] = self.local(value)
        env |= {
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            # One secret for every component: the scheduler signs the tokens tasks present
            # to the api-server's execution API, and the api-server checks them.
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health_port),
            # By its module's name, also when this file runs as __main__ (make stack).
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.system.airflow_stack.component_hostname",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        }
        if fast:
            env |= FAST_SETTINGS
        env |= extra
        # Every component imports component_hostname from this module.
        paths = env.get("PYTHONPATH", "").split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *(p for p in paths if p and p != str(ROOT))]
        )
        return env

    def local(self, value: str) -> str:
        """A compose setting's value with container addresses moved to this machine's
        (:data:`LOCAL_ADDRESSES`): the database, the broker, the api-server, config files."""
        if value.startswith("/opt/airflow/config/"):
            return str(self.home / Path(value).name)
        if value == CONTAINER_BACKUPS_CONFIG:  # compose mounts the demo's config there
            return str(ROOT / "demo" / "skytap_backups.yaml")
        parts = urlsplit(value)
        if not parts.scheme or not parts.hostname:
            return value
        if parts.hostname == "postgres":
            scheme = parts.scheme
            local = urlsplit(self.services.sql_alchemy_conn(scheme))
            if parts.username != local.username or parts.path != local.path:
                raise AirflowStackError(f"compose's database {value!r} is not user and db airflow")
            return urlunsplit(local)
        if parts.hostname == "redis":
            return self.services.broker_url(int(parts.path.strip("/") or 0))
        if parts.hostname == "airflow-apiserver":
            return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
        return value

    @property
    def _password_file(self) -> Path:
        return Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])

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
        """Start the services (if its own), migrate the database, start every component,
        wait until all are up; print how long each part took."""
        began = time.monotonic()
        if self._own_services:
            self.services.start()
        self.home.mkdir(parents=True, exist_ok=True)
        self._password_file.write_text(json.dumps({self.admin: self._password}))
        self._password_file.chmod(0o600)
        migrate_log = self.home / "logs" / "components" / "db-migrate.log"
        migrate_log.parent.mkdir(parents=True, exist_ok=True)
        migrating = time.monotonic()
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
        print(f"airflow: database migrated in {time.monotonic() - migrating:.1f}s")
        for component in self.components.values():
            self._start_component(component)
        deadline = began + self.start_timeout
        self._wait_healthy(deadline)
        for dag_id in self.dag_ids:
            self.wait_for_dag(dag_id, timeout=max(1.0, deadline - time.monotonic()))
        self.startup_seconds = time.monotonic() - began
        print(
            f"airflow: {', '.join(self.components)} up in {self.startup_seconds:.1f}s "
            f"(load average {', '.join(f'{x:.2f}' for x in os.getloadavg())})"
        )
        if self.restart_always:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()

    def _start_component(self, component: Component) -> None:
        component.log_path.parent.mkdir(parents=True, exist_ok=True)
        with component.log_path.open("ab") as out:
            component.proc = subprocess.Popen(
                component.args,
                env=self.env | component.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # its own process group: stop() ends its children
            )
        component.starts += 1

    def _supervise(self) -> None:
        """``restart: always``: start again every component that exited (1 s apart)."""
        while not self._stop_supervisor.wait(1.0):
            for component in self.components.values():
                proc = component.proc
                if proc is None or component.name in self._stopping or proc.poll() is None:
                    continue
                print(f"airflow: {component.name} exited {proc.returncode}; starting it again")
                self.restarts.append((time.time(), component.name, proc.returncode))
                self._kill_tree(component)
                self._start_component(component)

    def stop(self) -> None:
        """SIGTERM every component's process group, SIGKILL what is left after the timeout;
        then stop the services if the stack started them."""
        self._stop_supervisor.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        started = [c for c in self.components.values() if c.proc is not None]
        began = time.monotonic()
        self._stopping |= {c.name for c in started}
        for component in started:
            _signal_group(component, signal.SIGTERM)
        deadline = began + self.stop_timeout
        for component in started:
            assert component.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for component in started:
            # The leader may be gone while its workers, tasks or trigger runner are not.
            self._kill_tree(component)
        self._http.close()
        if started:
            print(f"airflow: stopped in {time.monotonic() - began:.1f}s")
        if self._own_services:
            self.services.stop()

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

    # -- faults ---------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        """The components of one kind (``worker``, ``triggerer``, ...), by name."""
        return [n for n in self.components if n == kind or n.startswith(f"{kind}-")]

    def pids(self, name: str) -> list[int]:
        """Every live process of a component: its process group and their descendants."""
        component = self.components[name]
        if component.proc is None:
            return []
        group = component.proc.pid
        parents: dict[int, int] = {}
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError):
                stat = (proc / "stat").read_text()
                ppid, pgid = (int(x) for x in stat.rsplit(")", 1)[1].split()[1:3])
                parents[int(proc.name)] = ppid
                if pgid == group:
                    found.append(int(proc.name))
        for pid in found:  # breadth first: a task that left the group is still a descendant
            found += [c for c, p in parents.items() if p == pid and c not in found]
        return found

    def kill(self, name: str, *, keep_down: bool = False) -> list[int]:
        """SIGKILL a component and every process it started (a machine's crash, the OOM
        killer): nothing reports its end. With ``restart_always`` the supervisor starts it
        again within a second, unless ``keep_down`` (a machine that stays down): then
        ``start_again(name)`` does.

        :return: the pids killed
        """
        if keep_down or not self.restart_always:
            self._stopping.add(name)
        pids = self.pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        component = self.components[name]
        if component.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=10)
        print(f"airflow: SIGKILLed {name} ({len(pids)} processes)")
        return pids

    def restart(self, name: str) -> float:
        """``docker compose restart``: SIGTERM, SIGKILL after ``stop_timeout``, start again.

        :return: seconds until it was started again
        """
        component = self.components[name]
        began = time.monotonic()
        self._stopping.add(name)
        try:
            _signal_group(component, signal.SIGTERM)
            if component.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.proc.wait(timeout=self.stop_timeout)
            self._kill_tree(component)
            self._start_component(component)
        finally:
            self._stopping.discard(name)
        print(f"airflow: restarted {name} in {time.monotonic() - began:.1f}s")
        return time.monotonic() - began

    def start_again(self, name: str) -> None:
        """Start a component that ``kill`` left down."""
        component = self.components[name]
        if component.proc is not None and component.proc.poll() is None:
            raise AirflowStackError(f"{name} is running")
        self._kill_tree(component)
        self._start_component(component)
        self._stopping.discard(name)

    def worker_running(self, ti: Mapping[str, Any]) -> str | None:
        """The worker component a task instance (REST API) runs on: its ``hostname``."""
        host = ti.get("hostname")
        return host if host in self.components else None

    def _kill_tree(self, component: Component) -> None:
        if component.proc is None:
            return
        for pid in self.pids(component.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _signal_group(component, signal.SIGKILL)
        if component.proc.poll() is None:
            component.proc.wait(timeout=10)

    def _wait_healthy(self, deadline: float) -> None:
        """Until ``/api/v2/monitor/health`` reports the scheduler, a triggerer and the
        dag-processor healthy, every triggerer has a live job and every Celery worker said
        it is ready."""
        health: dict[str, Any] = {}
        triggerers = set(self.names("triggerer"))
        workers = self.names("worker")
        waiting: object = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = self._http.get("/api/v2/monitor/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if answer.status_code == 200:
                health = answer.json()
                wanted = ("scheduler", "triggerer", "dag_processor")
                states = {n: (health.get(n) or {}).get("status") for n in wanted}
                waiting = states
                if all(v == "healthy" for v in states.values()):
                    alive = self.alive_triggerers()
                    ready = [w for w in workers if " ready." in self.log(w)]
                    waiting = {"triggerers": sorted(triggerers - alive), "workers": ready}
                    if alive >= triggerers and len(ready) == len(workers):
                        return
            time.sleep(0.5)
        raise AirflowStackError(f"components not up in time: {waiting}")

    def alive_triggerers(self) -> set[str]:
        """The triggerer components with a live TriggererJob (``GET /api/v2/jobs``)."""
        jobs = self.request(
            "GET",
            "/api/v2/jobs",
            params={"job_type": "TriggererJob", "is_alive": True, "limit": 100},
        )["jobs"]
        return {j["hostname"] for j in jobs}

    def _check_alive(self) -> None:
        if self.restart_always:
            return
        for component in self.components.values():
            if component.name in self._stopping:
                continue  # killed on purpose
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
                "/auth/token", json={"username": self.admin, "password": self._password}
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
        """One authenticated REST call; the decoded JSON answer, or AirflowStackError (with
        the api-server's log since the call, when it answered 5xx)."""
        extra_headers = kwargs.pop("headers", {})
        renewed = False
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
                detail = "\napi-server log:\n" + "\n".join(new_log.splitlines()[-40:])
            raise AirflowStackError(
                f"{method} {path} answered {answer.status_code}: "
                + self.redact(answer.text[:2000] + detail)
            )

    def add_secret(self, value: str) -> None:
        """One more value to redact from what the stack prints and to look for in its logs."""
        if value:
            self._secrets.add(value)

    def set_connection(self, conn_id: str, conn: Mapping[str, Any]) -> None:
        """Create or replace a connection through the REST API, as a user does in the UI.

        :param conn_id: the connection id
        :param conn: its JSON form (``conn_type``, ``host``, ``login``, ``password``,
            ``port``, ``schema``, ``extra`` as a dict)
        """
        body = {k: v for k, v in conn.items() if k != "extra"}
        body["connection_id"] = conn_id
        if "extra" in conn:
            extra = conn["extra"]
            body["extra"] = extra if isinstance(extra, str) else json.dumps(extra)
        if conn.get("password"):
            self.add_secret(str(conn["password"]))
        existing = self.request("GET", "/api/v2/connections", params={"limit": 1000})
        if conn_id in {c["connection_id"] for c in existing["connections"]}:
            self.request("DELETE", f"/api/v2/connections/{conn_id}")
        self.request("POST", "/api/v2/connections", json=body)

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
        """``POST /api/v2/backfills`` with ``body``; the backfill made."""
        return dict(self.request("POST", "/api/v2/backfills", json=body))

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
        began = time.monotonic()
        state = None
        while time.monotonic() - began < timeout:
            state = self.poll_run(dag_id, run_id)
            if state in FINISHED:
                break
            time.sleep(poll)
        print(f"airflow: run {run_id} {state} after {time.monotonic() - began:.1f}s")
        return str(state)

    def poll_run(self, dag_id: str, run_id: str) -> str:
        """One poll of ``wait_for_run``: the run's state now; task instance changes recorded."""
        record = self._polls.setdefault((dag_id, run_id), _Poll())
        self._check_alive()
        state = self.dag_run(dag_id, run_id)["state"]
        tis = self.task_instances(dag_id, run_id)
        for ti in tis:
            self._record(record, time.monotonic() - record.began, ti)
        deferred = sum(1 for ti in tis if ti["state"] == "deferred")
        record.max_deferred = max(record.max_deferred, deferred)
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
            triggerer=job.get("hostname") if job.get("job_type") == "TriggererJob" else None,
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
            extra += f", {seen.triggerer} (job {seen.triggerer_job})" if seen.triggerer_job else ""
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


def main(argv: Sequence[str] | None = None) -> int:
    """``make stack``: the stack on a DAGs folder until Ctrl-C (the UI's address printed).

    :param argv: ``[DAGS_FOLDER]`` (the repository's dags/ by default)
    """
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="tests.system.airflow_stack", description=main.__doc__)
    parser.add_argument("dags_folder", nargs="?", type=Path, default=ROOT / "dags")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="skytap-stack-"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # also when started with SIGINT ignored
        signal.signal(sig, lambda *_: stop.set())
    with AirflowStack(home, args.dags_folder.resolve(), stop_timeout=30) as stack:
        print(
            f"\nAirflow UI: {stack.base_url}  user {stack.admin}, password in "
            f"{stack._password_file}\nAIRFLOW_HOME {home}; component logs in "
            f"{home / 'logs' / 'components'}. Ctrl-C stops it."
        )
        stop.wait()
    print(f"stopped; its logs are kept in {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
