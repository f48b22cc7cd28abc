"""The catalogue of bad inputs: what a user sees for each, and proof that nothing was created in
Skytap and nothing frozen.

Each input is run the way a user meets it:

- **trigger form**: the ``--conf`` of ``skytap_live_clone_backup`` (the same keys as the trigger
  form and the REST API's ``conf``). First the params' JSON schema, checked in-process exactly as
  Airflow checks it when the run is created (``ParamsDict``); an input the schema refuses never
  starts a run. Inputs marked for it are also run through ``airflow dags test --conf`` against
  the lab's VMs and the simulator, and the message read from its output.
- **operator**: what a user's own DAG passes straight to the operators (QuiesceOperator,
  LiveCloneOperator, CopyTemplateToRegionOperator, PruneBackupsOperator), run in-process with
  ``execute`` against the same VMs and simulator; also the example DAG's own first task.

After each run: the simulator's request log (``GET /_sim/requests``) must hold no POST, PUT or
DELETE, its resources (``GET /_sim/state``) must be unchanged, no lab VM may be frozen
(``demo.lab.Lab.frozen``), no guardian of the run may have left a record or a process, and a
shell metacharacter may not have run (the file it would create must not exist). Every message
is checked for the field and the value it must name, and for any secret (the API token, a wrong
token, the SSH key).

``python -m bench.bad_inputs [--all-dags-test] [--only KEY ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.common import Stopwatch, fmt, machine, summary, table, write_section

DAG_ID = "skytap_live_clone_backup"
DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / f"{DAG_ID}.py"
ENV = "1001"
DAG_START = datetime(2026, 11, 1, tzinfo=timezone.utc)
EMPTY_ENV = "1003"  # added to the seed: an environment with no VMs
WRITES = ("POST", "PUT", "DELETE")
# A metacharacter that ran would create this file (on the VMs, which share this machine's /tmp).
PWNED = "/tmp/skytap-bad-inputs-pwned"
WRONG_TOKEN = "wrong-token-5c1d0e9a77"
STATE_DIR = Path("/run/skytap-quiesce")
GUARDIAN = re.compile(rb"/skytap-quiesce(-[0-9]+)?/lib/[0-9a-f]+\.sh$")
COMMAND = "make bench BENCH=bad_inputs"


@dataclass
class Case:
    """One bad input.

    :param key: a short id (``--only``)
    :param what: the input as the table shows it
    :param names: strings the message must contain: the field, then the value
    :param conf: the trigger form's ``--conf`` (None: not a trigger-form input)
    :param op: runs the operators in-process; raises what a user would see
    :param op_names: what the operator's message must name, when its field is named
        differently from the trigger form's (default: ``names``)
    :param dags_test: also run ``airflow dags test`` in the default run (else only with
        ``--all-dags-test``)
    :param fixed: the change that made this message right (a commit subject), if any
    :param note: what the table's reader should know
    """

    key: str
    what: str
    names: tuple[str, ...]
    conf: dict[str, Any] | None = None
    op: Callable[[World], Any] | None = None
    op_names: tuple[str, ...] = ()
    dags_test: bool = False
    fixed: str = ""
    note: str = ""


@dataclass
class Outcome:
    """One run of one case in one place."""

    key: str
    where: str  # "trigger form (schema)", "trigger form (dags test)", "operator"
    message: str
    seconds: float = 0.0
    writes: list[str] = field(default_factory=list)
    state_changed: bool = False
    frozen: list[str] = field(default_factory=list)
    guardians: list[str] = field(default_factory=list)
    pwned: bool = False
    secret: bool = False
    names_ok: bool = False
    refused: bool = True

    @property
    def created_nothing(self) -> bool:
        """Skytap's resources unchanged, and no write it carried out (a refused one may be)."""
        return not self.state_changed and not any(_carried_out(w) for w in self.writes)

    @property
    def frozen_nothing(self) -> bool:
        return not self.frozen and not self.guardians


def _carried_out(write: str) -> bool:
    status = write.split()[-1]
    return status.isdigit() and int(status) < 400


class World:
    """The lab's VMs, the simulator seeded with them, and the Airflow connections to both."""

    def __init__(self, vms: Any, sim: Any, home: Path) -> None:
        from demo import airflow_cli
        from skytap_simulator.seed import default_seed

        self.vms = vms
        self.sim = sim
        seed = vms.seed(default_seed(), ENV)
        seed["environments"].append(
            {"id": EMPTY_ENV, "name": "empty", "region": "US-West", "runstate": "stopped"}
        )
        sim.admin.reset(seed)
        sim.admin.config(copy_seconds=4, region_copy_seconds=1, delete_seconds=0.2)
        user = default_seed()["users"][0]
        self.token = str(user["token"])
        self.key_text = Path(vms.client_key).read_text()
        skytap = {
            "conn_type": "skytap",
            "host": sim.url,
            "login": user["username"],
            "password": self.token,
            "extra": {"retry_deadline": 5},
        }
        closed = _closed_port()
        self.unreachable_url = f"http://127.0.0.1:{closed}"
        self.connections = {
            "skytap_default": skytap,
            "skytap_bad_token": skytap | {"password": WRONG_TOKEN},
            "skytap_unreachable": skytap
            | {"host": self.unreachable_url, "extra": {"retry_deadline": 2, "timeout": 2}},
            "skytap_vm_ssh": vms.ssh_connection(),
            "wrong_user_ssh": vms.ssh_connection() | {"login": "nobody"},
        }
        for conn_id, doc in self.connections.items():
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(doc)
        self.airflow_env = airflow_cli.airflow_env(home, self.connections)
        airflow_cli.migrate(self.airflow_env)
        self.dates = iter(range(10_000))
        self.logs: Path | None = None

    def secrets(self) -> list[str]:
        key_lines = [ln for ln in self.key_text.splitlines() if ln and "PRIVATE KEY" not in ln]
        return [self.token, WRONG_TOKEN, *key_lines[:2]]

    def snapshot(self) -> list[tuple[Any, ...]]:
        state = self.sim.admin.state()
        return [
            (kind, r["id"], r["name"], r.get("region"), bool(r.get("deleted")), str(r.get("tags")))
            for kind in ("environments", "templates")
            for r in state[kind]
        ]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the operators, in-process


class _TaskInstance:
    """What the operators use of a running task instance: pushing XComs."""

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def task_context(run_id: str | None = None) -> Any:
    """A task's context as the operators read it (a manual run of today)."""
    from types import SimpleNamespace

    now = datetime.now(timezone.utc)
    return {
        "ti": _TaskInstance(),
        "logical_date": now,
        "run_id": run_id or _run_id("task"),
        "dag_run": SimpleNamespace(run_after=now),
    }


def _run_id(case: str) -> str:
    return f"manual__bad_inputs_{case}_{uuid.uuid4().hex[:8]}"


RUN_IDS: list[tuple[str, str]] = []  # (dag_id, run_id) of every in-process run: guardian ids


def quiesce(action: Any = "freeze", **kwargs: Any) -> Callable[[World], Any]:
    """A QuiesceOperator of the lab's environment with ``kwargs`` over good settings."""

    def run(world: World) -> Any:
        from airflow.sdk import DAG

        from airflow_provider_skytap.operators.quiesce import QuiesceOperator

        settings: dict[str, Any] = {
            "environment_id": ENV,
            "ssh_conn_id": "skytap_vm_ssh",
            "mounts": ["/srv/data"],
            "max_freeze_seconds": 60,
        }
        settings.update(kwargs)
        settings = {k: v for k, v in settings.items() if v is not _DROP}
        run_id = _run_id(action)
        RUN_IDS.append(("bad_inputs", run_id))
        with DAG("bad_inputs", schedule=None):
            op = QuiesceOperator(task_id=action, action=action, **settings)
        return op.execute(task_context(run_id))

    return run


_DROP = object()  # leave the keyword out


def clone(**kwargs: Any) -> Callable[[World], Any]:
    def run(world: World) -> Any:
        from airflow_provider_skytap.operators.clone import LiveCloneOperator

        op = LiveCloneOperator(task_id="clone", **({"environment_id": ENV} | kwargs))
        return op.execute(task_context())

    return run


def copy_to_region(**kwargs: Any) -> Callable[[World], Any]:
    def run(world: World) -> Any:
        from airflow_provider_skytap.operators.clone import CopyTemplateToRegionOperator

        settings: dict[str, Any] = {"template_id": "5001", "target_region": "EMEA"}
        settings |= {"deferrable": False} | kwargs
        op = CopyTemplateToRegionOperator(task_id="copy_to_dr", **settings)
        return op.execute(task_context())

    return run


def prune(**kwargs: Any) -> Callable[[World], Any]:
    def run(world: World) -> Any:
        from airflow_provider_skytap.operators.retention import PruneBackupsOperator

        op = PruneBackupsOperator(task_id="prune", **({"environment_id": ENV} | kwargs))
        return op.execute(task_context())

    return run


def dag_first_task(**conf: Any) -> Callable[[World], Any]:
    """The example DAG's first task (``dr_regions``) for a run with this conf."""

    def run(world: World) -> Any:
        from types import SimpleNamespace

        dag = load_dag()
        values = {"environment_id": ENV, "dr_regions": ["EMEA"]} | conf
        run = SimpleNamespace(conf=conf)
        return dag.get_task("dr_regions").python_callable(params=values, dag=dag, dag_run=run)

    return run


def freeze_too_short(world: World) -> Any:
    """A freeze shorter than the copy: freeze (2 s), save the template (4 s), wait, thaw."""
    from airflow.sdk import DAG

    from airflow_provider_skytap.operators.clone import LiveCloneOperator
    from airflow_provider_skytap.operators.quiesce import QuiesceOperator

    run_id = _run_id("too_short")
    RUN_IDS.append(("bad_inputs", run_id))
    targets: dict[str, Any] = {
        "environment_id": ENV,
        "ssh_conn_id": "skytap_vm_ssh",
        "mounts": ["/srv/data"],
    }
    with DAG("bad_inputs", schedule=None):
        freeze = QuiesceOperator(task_id="freeze", action="freeze", max_freeze_seconds=2, **targets)
        thaw = QuiesceOperator(task_id="thaw", action="thaw", **targets)
    ctx = task_context(run_id)
    freeze.execute(ctx)
    try:
        LiveCloneOperator(
            task_id="clone", environment_id=ENV, name=f"bad-inputs-{run_id}", poll_interval=1
        ).execute(ctx)
    finally:
        thaw.execute(ctx)


# ---------------------------------------------------------------- the catalogue


def catalogue() -> list[Case]:
    metachar_mount = f"/srv/data/$(touch {PWNED})"
    return [
        Case(
            "unknown_env",
            "environment that does not exist (`999999`)",
            ("environment 999999", "HTTP 404", "request id"),
            conf={"environment_id": "999999"},
            op=quiesce(environment_id="999999"),
            fixed="notfound",
        ),
        Case(
            "nonnumeric_env",
            "environment id not a number (`erp-prod`)",
            ("environment", "erp-prod"),
            conf={"environment_id": "erp-prod"},
            op=clone(environment_id="erp-prod"),
        ),
        Case(
            "env_metachar",
            "environment id with a metacharacter (`1001; reboot`)",
            ("environment", "1001; reboot"),
            conf={"environment_id": "1001; reboot"},
            op=quiesce(environment_id="1001; reboot"),
        ),
        Case(
            "bad_token",
            "wrong API token in the `skytap` connection",
            ("HTTP 401", "API security token", "request id"),
            op=quiesce(skytap_conn_id="skytap_bad_token"),
        ),
        Case(
            "unreachable",
            "Skytap host unreachable (API URL with nothing listening)",
            ("could not connect to http://127.0.0.1:",),
            op=quiesce(skytap_conn_id="skytap_unreachable"),
            fixed="hook",
        ),
        Case(
            "dr_unknown",
            "DR region that does not exist (`Mars-1`)",
            ("dr_regions", "Mars-1"),
            conf={"dr_regions": ["Mars-1"]},
            op=dag_first_task(dr_regions=["Mars-1"]),
            fixed="dr",
            dags_test=True,
        ),
        Case(
            "dr_bad_name",
            "DR region that is not a region name (`EMEA west`)",
            ("dr_regions", "EMEA west"),
            conf={"dr_regions": ["EMEA west"]},
            op=dag_first_task(dr_regions=["EMEA west"]),
            fixed="dr",
        ),
        Case(
            "dr_twice",
            "DR region listed twice (`EMEA`, `EMEA`)",
            ("dr_regions", "EMEA"),
            conf={"dr_regions": ["EMEA", "EMEA"]},
            op=dag_first_task(dr_regions=["EMEA", "EMEA"]),
            fixed="dr",
        ),
        Case(
            "dr_source",
            "DR region equal to the environment's region (`US-West`)",
            ("dr_regions", "US-West"),
            conf={"dr_regions": ["US-West"]},
            op=dag_first_task(dr_regions=["US-West"]),
            fixed="dr",
        ),
        Case(
            "copy_unknown_region",
            "CopyTemplateToRegionOperator to a region that does not exist (`Mars-1`)",
            ("Mars-1", "HTTP 422", "request id"),
            op=copy_to_region(target_region="Mars-1"),
            note="the operator leaves region names to Skytap (a region added later still "
            "works): one POST, refused with 422, nothing made",
        ),
        Case(
            "copy_same_region",
            "CopyTemplateToRegionOperator to the template's own region (`US-West`)",
            ("target_region", "US-West"),
            op=copy_to_region(target_region="US-West"),
        ),
        Case(
            "empty_vm_names",
            "empty host list (`vm_names=[]`; in the form `[]` means every VM)",
            ("vm_names", "[]"),
            op=quiesce(vm_names=[]),
        ),
        Case(
            "no_vms",
            "environment with no VMs (`1003`)",
            ("environment", EMPTY_ENV, "no VMs"),
            conf={"environment_id": EMPTY_ENV, "dr_regions": []},
            op=quiesce(environment_id=EMPTY_ENV),
        ),
        Case(
            "unknown_vm",
            "VM name not in the environment (`web-9`)",
            ("vm_names", "web-9"),
            conf={"vm_names": ["web-9"]},
            op=quiesce(vm_names=["web-9"]),
        ),
        Case(
            "vm_metachar",
            "shell metacharacters in a VM name (`app-1; touch …`)",
            ("vm_names", "app-1; touch"),
            conf={"vm_names": [f"app-1; touch {PWNED}"]},
            op=quiesce(vm_names=[f"app-1; touch {PWNED}"]),
        ),
        Case(
            "vm_twice",
            "VM name listed twice",
            ("vm_names", "app-1"),
            op=quiesce(vm_names=["app-1", "app-1"]),
        ),
        Case(
            "not_a_mount",
            "a directory that is not a mount (`/srv/data/lost+found`)",
            ("/srv/data/lost+found", "not a mount point"),
            conf={"mounts": ["/srv/data/lost+found"]},
            op=quiesce(mounts=["/srv/data/lost+found"]),
            dags_test=True,
        ),
        Case(
            "no_such_mount",
            "a mount that does not exist (`/srv/nothere`)",
            ("/srv/nothere", "does not exist"),
            op=quiesce(mounts=["/srv/nothere"]),
        ),
        Case(
            "tmpfs_mount",
            "a mount that cannot be frozen (`/srv`, a tmpfs), after a good one",
            ("/srv", "tmpfs", "cannot be frozen"),
            op=quiesce(mounts=["/srv/data", "/srv"]),
            fixed="tmpfs",
        ),
        Case(
            "root_fs",
            "`/` without `allow_root_fs`",
            ("mounts", "'/'", "allow_root_fs"),
            conf={"mounts": ["/"]},
            op=quiesce(mounts=["/"]),
        ),
        Case(
            "mount_metachar",
            "shell metacharacters in a mount (`/srv/data/$(touch …)`)",
            ("/srv/data/$(touch",),
            conf={"mounts": [metachar_mount]},
            op=quiesce(mounts=[metachar_mount]),
        ),
        Case(
            "mount_twice",
            "a mount listed twice",
            ("mounts", "/srv/data", "twice"),
            conf={"mounts": ["/srv/data", "/srv/data"]},
            op=quiesce(mounts=["/srv/data", "/srv/data"]),
        ),
        Case(
            "mount_relative",
            "a relative mount (`srv/data`)",
            ("mounts", "srv/data"),
            conf={"mounts": ["srv/data"]},
            op=quiesce(mounts=["srv/data"]),
            dags_test=True,
        ),
        Case(
            "mounts_empty",
            "no mounts (`[]`)",
            ("mounts", "[]"),
            conf={"mounts": []},
            op=quiesce(mounts=[]),
            fixed="mounts",
        ),
        Case(
            "mount_map_unknown_vm",
            'mounts keyed by a VM that is not in the environment (`{"web-9": …}`)',
            ("mounts", "web-9"),
            conf={"mounts": {"web-9": ["/srv/data"]}},
            op=quiesce(mounts={"web-9": ["/srv/data"]}),
        ),
        Case(
            "max_negative",
            "negative `max_freeze_seconds` (`-5`)",
            ("max_freeze_seconds", "-5"),
            conf={"max_freeze_seconds": -5},
            op=quiesce(max_freeze_seconds=-5),
        ),
        Case(
            "max_text",
            "`max_freeze_seconds` not a number (`'ten'`)",
            ("max_freeze_seconds", "ten"),
            conf={"max_freeze_seconds": "ten"},
            op=quiesce(max_freeze_seconds="ten"),
        ),
        Case(
            "max_missing",
            "missing `max_freeze_seconds` (form: cleared, `null`; operator: left out)",
            ("max_freeze_seconds",),
            conf={"max_freeze_seconds": None},
            op=quiesce(max_freeze_seconds=_DROP),
            note="the operator refuses it when the DAG is parsed (an import error)",
        ),
        Case(
            "max_too_small",
            "`max_freeze_seconds` too small for the copy (form: 5; operator: 2 s for a 4 s copy)",
            ("max_freeze_seconds",),
            conf={"max_freeze_seconds": 5},
            op=freeze_too_short,
            fixed="deadline",
            note="the copy's duration is not known in advance: the guardian thaws at the "
            "deadline and the thaw task fails saying the copy is not application-consistent",
        ),
        Case(
            "unknown_profile",
            "unknown profile (`zfs`)",
            ("profile", "zfs"),
            conf={"profile": "zfs"},
            op=quiesce(profile="zfs"),
        ),
        Case(
            "app_no_commands",
            "profile `app` without its pause and resume commands",
            ("profile='app'", "pre_freeze_command"),
            conf={"profile": "app"},
            op=quiesce(profile="app"),
        ),
        Case(
            "keep_zero",
            "`keep` 0",
            ("keep", "0"),
            conf={"keep": 0},
            op=prune(keep=0),
        ),
        Case(
            "keep_negative",
            "`keep` negative (`-1`)",
            ("keep", "-1"),
            conf={"keep": -1},
            op=prune(keep=-1),
        ),
        Case(
            "unknown_ssh_conn",
            "SSH connection id that does not exist (`no_such_ssh`)",
            ("ssh_conn_id", "no_such_ssh"),
            conf={"ssh_conn_id": "no_such_ssh"},
            op=quiesce(ssh_conn_id="no_such_ssh"),
            fixed="ssh",
        ),
        Case(
            "ssh_auth",
            "SSH login refused (user `nobody`)",
            ("ssh_conn_id 'wrong_user_ssh'", "'nobody'", "Authentication"),
            op=quiesce(ssh_conn_id="wrong_user_ssh", ssh_connect_attempts=1),
            fixed="ssh",
        ),
        Case(
            "conf_typo",
            "a misspelt key in the conf (`max_freeze_second`)",
            ("max_freeze_second", "max_freeze_seconds"),
            conf={"max_freeze_second": 30},
            op=dag_first_task(max_freeze_second=30),
            fixed="conf",
            note="Airflow adds an unknown conf key as a new param: before the check, the run "
            "went on with the default (600 s here; with a misspelt `environment_id`, the "
            "default environment)",
        ),
        Case(
            "poll_zero",
            "`dr_poll_seconds` 0",
            ("dr_poll_seconds", "0"),
            conf={"dr_poll_seconds": 0},
            op=copy_to_region(poll_interval=0),
            op_names=("poll_interval", "0"),
        ),
    ]


# ---------------------------------------------------------------- running a case


_DAG: list[Any] = []


def load_dag() -> Any:
    """The backup DAG, parsed in-process from dags/ (as the dag processor would)."""
    if not _DAG:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_backup_dag", DAG_FILE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _DAG.append(module.dag)
    return _DAG[0]


def schema_message(conf: dict[str, Any]) -> str | None:
    """What the params' schema says about ``conf`` (None: it accepts it)."""
    params = copy.deepcopy(load_dag().params)
    try:
        for key, value in conf.items():
            params[key] = value
        params.validate()
    except Exception as exc:  # ParamValidationError
        return str(exc).splitlines()[0]
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def guardian_ids(dag_run_ids: list[tuple[str, str]]) -> set[str]:
    from airflow_provider_skytap.quiesce.commands import guardian_id

    keys = [f"env{ENV}-vm{vm}" for vm in ("2001", "2002", "2003")]
    return {guardian_id(d, r, k) for d, r in dag_run_ids for k in keys}


def guardians_left(world: World, ids: set[str]) -> list[str]:
    """Guardian records of these ids, and guardian processes in the lab's VMs."""
    found = [p.name for p in STATE_DIR.iterdir() if p.name in ids] if STATE_DIR.is_dir() else []
    for vm in world.vms.vms:
        for pid in vm.namespace_pids():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if len(argv) > 2 and GUARDIAN.search(argv[1]) and argv[2] in (b"run", b"backstop"):
                    found.append(f"{vm.name}: guardian process {pid}")
    return found


@contextlib.contextmanager
def watched(world: World, outcome: Outcome) -> Iterator[None]:
    """Fill ``outcome`` with what the run left: requests, state, frozen VMs, guardians."""
    world.sim.admin.clear_requests()
    before = world.snapshot()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(PWNED)
    start = len(RUN_IDS)
    with Stopwatch() as sw:
        yield
    outcome.seconds = round(sw.seconds, 2)
    requests = [r for r in world.sim.admin.requests() if not r["path"].startswith("/_sim")]
    outcome.writes = [
        f"{r['method']} {r['path']} {r['status']}" for r in requests if r["method"] in WRITES
    ]
    outcome.state_changed = world.snapshot() != before
    outcome.frozen = world.vms.frozen()
    ids = guardian_ids(RUN_IDS[start:])
    outcome.guardians = guardians_left(world, ids)
    outcome.pwned = os.path.exists(PWNED)
    if outcome.frozen:
        world.vms.thaw_all()


def judge(world: World, case: Case, outcome: Outcome, output: str = "") -> Outcome:
    text = outcome.message
    names = case.op_names if outcome.where == "operator" and case.op_names else case.names
    outcome.names_ok = all(n in text for n in names)
    outcome.secret = any(s and (s in text or s in output) for s in world.secrets())
    return outcome


def run_schema(world: World, case: Case) -> Outcome:
    assert case.conf is not None
    outcome = Outcome(case.key, "trigger form (schema)", "")
    with watched(world, outcome):
        message = schema_message(case.conf)
    outcome.refused = message is not None
    outcome.message = message or "accepted by the schema (a task refuses it: the next row)"
    return judge(world, case, outcome)


def run_operator(world: World, case: Case) -> Outcome:
    assert case.op is not None
    outcome = Outcome(case.key, "operator", "")
    with watched(world, outcome):
        try:
            case.op(world)
        except Exception as exc:
            outcome.message = _describe(exc)
        else:
            outcome.refused = False
            outcome.message = "NOT REFUSED"
    return judge(world, case, outcome)


# A traceback's last line: "ValueError: ..." or "airflow_provider_skytap.hooks.api.X: ...".
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?P<type>\w+(?:Error|Exception)): (?P<text>.*)$")


def dags_test_message(output: str) -> str:
    """The first error a task raised in ``airflow dags test``'s output (or the schema's)."""
    for line in output.splitlines():
        match = _ERROR_LINE.match(line)
        if match:
            return f"{match.group('type')}: {match.group('text').strip()}"
    return "(no error found in the output)"


def run_dags_test(world: World, case: Case) -> Outcome:
    from demo import airflow_cli

    assert case.conf is not None
    outcome = Outcome(case.key, "trigger form (dags test)", "")
    # One run per date, on or after the DAG's start date (before it, a run has no tasks).
    date = (DAG_START + timedelta(days=next(world.dates))).strftime("%Y-%m-%d")
    output = ""
    with watched(world, outcome):
        done = airflow_cli.dags_test(world.airflow_env, DAG_ID, date, case.conf, timeout=420)
        output = done.stdout + done.stderr
        outcome.refused = not airflow_cli.succeeded(done)
        with contextlib.suppress(Exception):
            record = airflow_cli.run_record(world.airflow_env, DAG_ID)
            runs = {t["run_id"] for t in record["task_instances"] if t["logical_date"] == date}
            RUN_IDS.extend((DAG_ID, r) for r in runs)
            failed = sorted(
                t["task_id"]
                for t in record["task_instances"]
                if t["logical_date"] == date and t["state"] == "failed"
            )
            if failed:
                outcome.where += f"; failed: {', '.join(failed)}"
    outcome.message = dags_test_message(output)
    if world.logs is not None:
        world.logs.mkdir(parents=True, exist_ok=True)
        (world.logs / f"{case.key}.log").write_text(output)
    return judge(world, case, outcome, output)


# ---------------------------------------------------------------- the section


# The commits that fixed a message or moved a check earlier: key -> the start of the subject.
FIX_TEXT = {
    "dr": "a DR region that is not Skytap's, listed twice, or the environment's own was found "
    "by `copy_to_dr`, after the freeze and the backup; the DAG's first task checks them now",
    "conf": "a misspelt conf key was added as a new param and ignored; refused now, naming the "
    "closest param",
    "hook": "'could not connect (ConnectionRefusedError)' did not say where",
    "ssh": "an undefined `ssh_conn_id` failed once per VM with Airflow's text; a refused login "
    "named neither the connection nor the user",
    "tmpfs": "a tmpfs passed the preflight: every host froze its other mounts, then fsfreeze "
    "-f failed ('Operation not supported') and all were thawed again",
    "deadline": "the thaw's 'guardian thawed by itself' did not say that max_freeze_seconds "
    "was too short",
    "mounts": "an empty list was refused without showing it",
    "notfound": "the thaw retried an environment that does not exist (and a refused token) "
    "three times",
}
FIXES = {
    "dr": "Backup DAG: check the DR regions before the freeze",
    "conf": "Backup DAG: refuse a conf key that is no param",
    "hook": "Hook: an unreachable Skytap is named by its API URL",
    "ssh": "QuiesceOperator: name the SSH connection",
    "tmpfs": "Preflight refuses a filesystem that cannot be frozen",
    "deadline": "Thaw: a guardian that fired at its deadline",
    "mounts": "Quiesce: an empty mounts list is named with its value",
    "notfound": "QuiesceOperator: no such environment, or the token refused, fails without",
}


def fix_commits() -> dict[str, str]:
    """``{fix key: "abc1234"}`` for the fixes found in this checkout's history."""
    import subprocess

    from bench.common import ROOT

    found = {}
    for key, subject in FIXES.items():
        done = subprocess.run(
            ["git", "log", "--format=%h", "-F", f"--grep={subject}", "-n", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.stdout.strip():
            found[key] = f"{done.stdout.strip()} ({subject.split(': ', 1)[-1]})"
    return found


def _cell(text: str, limit: int = 230) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def render(cases: list[Case], outcomes: list[Outcome], fixes: dict[str, str]) -> str:
    by_key = {c.key: c for c in cases}
    rows = []
    for o in outcomes:
        case = by_key[o.key]
        message = _cell(o.message)
        if not o.names_ok and o.refused:
            message += " *(does not name all of: " + ", ".join(f"`{n}`" for n in case.names) + ")*"
        rows.append(
            (
                case.what,
                o.where,
                f"`{message}`" if "`" not in message else message,
                _yes(o.created_nothing)
                + (f" ({'; '.join(o.writes)}: refused)" if o.writes and o.created_nothing else ""),
                _yes(o.frozen_nothing),
                fixes.get(case.fixed, ""),
            )
        )
    refused = [o for o in outcomes if o.refused]
    clean = [o for o in outcomes if o.created_nothing and o.frozen_nothing and not o.pwned]
    named = [o for o in refused if o.names_ok]
    leaks = [o for o in outcomes if o.secret]
    keys = {o.key for o in outcomes}
    notes = [
        f"- **{by_key[k].what}**: {by_key[k].note}" for k in by_key if k in keys and by_key[k].note
    ]
    dags_tests = [o.seconds for o in outcomes if "dags test" in o.where]
    marked = sorted(
        {by_key[o.key].what for o in outcomes if not (o.created_nothing and o.frozen_nothing)}
    )
    fixed_lines = [f"- {fixes[k]}: {FIX_TEXT[k]}" for k in FIXES if k in fixes]
    body = f"""
{len(keys)} bad inputs, {len(outcomes)} runs: {len(refused)} refused, {len(named)} of them
with a message naming the field and the value; {len(clean)} runs created nothing in Skytap
(no POST, PUT or DELETE carried out in the simulator's request log; resources unchanged) and
froze nothing (no lab VM frozen, no guardian record or process of the run);
{len(leaks)} messages or outputs held a secret (the API token, a wrong token, the SSH key); a
shell metacharacter ran in {sum(o.pwned for o in outcomes)} runs.
`airflow dags test` runs: {fmt(summary(dags_tests))} each on this loaded machine.

**Goal**: every bad input refused before anything is frozen or created, naming the field and
the value (and Skytap's message and request id where the error is Skytap's), with no secret.
**Met** for every input but {len(marked)}{": " if marked else ""}{"; ".join(marked)}{
        " (see the notes)" if marked else ""
    }.

*Where*: *trigger form (schema)* is the params' JSON schema, checked in-process as Airflow
checks a run's conf (a refused conf never starts a run; `airflow dags test --conf` prints the
same line at the end of a traceback, and the UI's form the same text); "accepted by the
schema" means a task refuses it: the next row says how. *trigger form (dags test)* ran
`airflow dags test {DAG_ID} --conf ...` on the lab's 3 VMs and the simulator (the failed
tasks named); *operator* ran the operator's `execute` in-process, as a user's own DAG passes
the value (for the DAG's own checks, its first task `dr_regions`).
`.venv/bin/python -m bench.bad_inputs --all-dags-test` runs every trigger-form input through
`airflow dags test` (about a minute each here).

{table(("input", "where", "message", "created nothing", "frozen nothing", "fixed in"), rows)}

Found and fixed (each with a test in `tests/`: `tests/system/test_bad_inputs.py`,
`tests/hooks/test_bad_inputs.py`, `tests/test_checks.py`):
{chr(10).join(fixed_lines)}

Notes, and what was left as it is:
{chr(10).join(notes)}
- A Skytap that cannot be reached is retried until the connection's `retry_deadline` (600 s
  by default; 2 s here) before the message: a refused connection may be an outage.
- After a refused input the backup DAG's `thaw` (`all_done`) still runs and logs in to each
  VM (outcome `not-armed`: nothing thawed); a value error or an unknown environment fails it
  once, not three times.
- `LiveCloneOperator`, `CopyTemplateToRegionOperator` and `PruneBackupsOperator` raise a plain
  `ValueError` for a bad value, which Airflow retries (`retries` of the task) though it fails
  the same way each time; `QuiesceOperator` and the DAG's `dr_regions` fail at once.
- Skytap has no call that lists regions: `hooks.api.REGIONS` is the list of 16 from its help
  topic "understanding-regions"; a region Skytap adds later goes in the connection extra
  `extra_regions`, which the example DAG's `dr_regions` task reads.
"""
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bad_inputs", description=__doc__)
    parser.add_argument(
        "--all-dags-test",
        action="store_true",
        help="run every trigger-form input through airflow dags test (slow: a minute or more each "
        "on a loaded machine); default: the inputs marked for it",
    )
    parser.add_argument("--only", nargs="*", help="only these cases (keys)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the section")
    parser.add_argument("--logs", type=Path, help="keep each airflow dags test's output here")
    args = parser.parse_args(argv)

    from demo import lab
    from skytap_simulator.control import SimulatorProcess

    started = machine()
    reason = lab.unavailable()
    if reason:
        print(f"bad_inputs needs the lab's VMs: {reason}", file=sys.stderr)
        return 2
    cases = [c for c in catalogue() if not args.only or c.key in args.only]
    fixes = fix_commits()
    outcomes: list[Outcome] = []
    with (
        Stopwatch() as total,
        tempfile.TemporaryDirectory(prefix="bench-bad-inputs-") as tmp,
        lab.Lab() as vms,
        SimulatorProcess(data_dir=Path(tmp) / "sim", time_scale=1.0) as sim,
    ):
        world = World(vms, sim, Path(tmp) / "airflow")
        world.logs = args.logs
        for case in cases:
            if case.conf is not None:
                outcomes.append(run_schema(world, case))
                print(_line(outcomes[-1]), file=sys.stderr, flush=True)
                if case.dags_test or args.all_dags_test:
                    outcomes.append(run_dags_test(world, case))
                    print(_line(outcomes[-1]), file=sys.stderr, flush=True)
            if case.op is not None:
                outcomes.append(run_operator(world, case))
                print(_line(outcomes[-1]), file=sys.stderr, flush=True)
    data = {
        "seconds": round(total.seconds, 1),
        "all_dags_test": args.all_dags_test,
        "outcomes": [
            o.__dict__ | {"created_nothing": o.created_nothing, "frozen_nothing": o.frozen_nothing}
            for o in outcomes
        ],
    }
    body = render(cases, outcomes, fixes)
    body += f"\nThe run took {total.seconds:.0f} s.\n"
    if args.no_write or args.only:
        print(body)
        return 0
    command = (
        ".venv/bin/python -m bench.bad_inputs --all-dags-test" if args.all_dags_test else COMMAND
    )
    write_section("bad_inputs", "The catalogue of bad inputs", command, body, data, started=started)
    return 0


def _line(o: Outcome) -> str:
    return (
        f"{o.key:22} {o.where:28} {o.seconds:6.1f}s created-nothing={o.created_nothing} "
        f"frozen-nothing={o.frozen_nothing} names={o.names_ok} secret={o.secret} | "
        f"{o.message[:300]}"
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
