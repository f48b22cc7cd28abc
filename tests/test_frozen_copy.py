"""The freeze-copy-release chain against the simulator and real VMs, without root.

The VMs are ``demo.lab``'s rootless kind: an sshd run as this user per VM, a plain directory
with a raw "disk" file and a writer appending checksummed records; the DAG author's preset
``app-pidfile`` (profile ``app``) pauses each writer instead of freezing a filesystem. The
simulator's environment 1001 has its VMs on them, so a copy is a copy of those files, read
progressively while Skytap copies: a release before the copy is complete shows as torn.

The four tasks run in this process one after another, as a DAG run runs them, with a small
task-instance stand-in (XCom push and pull, the try number); the DAG runs under Airflow
itself in tests/system/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_skytap.consistency import FreezeWindow, marked_token
from airflow_provider_skytap.copies import CopySpec
from airflow_provider_skytap.exceptions import InvalidValueError, SkytapRefusedError, is_final
from airflow_provider_skytap.frozen_copy import QuiesceChoice, QuiescePreset, frozen_copy
from airflow_provider_skytap.hooks.skytap import SkytapHook
from demo import lab
from skytap_simulator.seed import default_seed
from tests.conftest import set_connection
from tests.helpers import api_requests

ENV = "1001"
DAG_ID = "chain_test"
DATE = datetime(2026, 11, 24, tzinfo=timezone.utc)
BASE = f"{DAG_ID}-environment-{ENV}-20261124T000000Z"
PAUSE = 'for m in $SKYTAP_QUIESCE_MOUNTS; do kill -STOP "$(cat "$m/writer.pid")" || exit 1; done'
RESUME = 'for m in $SKYTAP_QUIESCE_MOUNTS; do kill -CONT "$(cat "$m/writer.pid")" || exit 1; done'
PRESETS = {"app-pidfile": QuiescePreset("app", PAUSE, RESUME, description="the lab's writer")}


@dataclass
class TI:
    """What the chain's tasks use of a task instance: XComs, the try number."""

    store: dict[tuple[str, str], Any]
    task_id: str
    try_number: int = 1

    def xcom_push(self, key: str, value: Any) -> None:
        self.store[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.store.get((task_ids, key))


@dataclass
class Run:
    """One DAG run of the chain: runs its tasks in order, keeping their XComs."""

    dag: Any
    run_id: str = "scheduled__2026-11-24T00:00:00+00:00"
    store: dict[tuple[str, str], Any] = field(default_factory=dict)
    date: datetime = DATE

    def context(self, task_id: str, try_number: int = 1) -> dict[str, Any]:
        return {
            "ti": TI(self.store, task_id, try_number),
            "run_id": self.run_id,
            "logical_date": self.date,
            "dag_run": SimpleNamespace(run_after=self.date, conf={}),
            "dag": self.dag,
        }

    def run(self, task: Any, try_number: int = 1) -> Any:
        result = task.execute(self.context(task.task_id, try_number))
        self.store[(task.task_id, "return_value")] = result
        return result


@pytest.fixture(scope="module")
def rootless() -> Iterator[lab.Lab]:
    reason = lab.unavailable(rootless=True)
    if reason:
        pytest.skip(f"the rootless lab: {reason}")
    with lab.Lab(rootless=True) as started:
        yield started


@pytest.fixture
def on_lab(sim: Any, rootless: lab.Lab, monkeypatch: pytest.MonkeyPatch) -> lab.Lab:
    """The simulator seeded with the lab's VMs; skytap_default and skytap_vm_ssh defined."""
    sim.admin.reset(rootless.seed(default_seed(), ENV))
    sim.admin.config(copy_seconds=1.5, region_copy_seconds=0.5, delete_seconds=0.2)
    set_connection(monkeypatch, "skytap_default", sim.url, sim.username, sim.token)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SKYTAP_VM_SSH", __import__("json").dumps(rootless.ssh_connection())
    )
    yield rootless
    rootless.thaw_all()


def chain(group_id: str = "backup", **choice: Any) -> tuple[Any, Any]:
    mounts = choice.pop("mounts")
    with DAG(DAG_ID, schedule=None) as dag:
        group = frozen_copy(
            group_id=group_id,
            copy=CopySpec(environment_id=ENV, target="template"),
            quiesce=QuiesceChoice(
                environment_id=ENV,
                mounts=mounts,
                max_freeze_seconds=choice.pop("max_freeze_seconds", 60),
                preset=choice.pop("preset", "app-pidfile"),
                ssh_conn_id=choice.pop("ssh_conn_id", "skytap_vm_ssh"),
                presets=PRESETS,
                ssh_conn_ids=("skytap_vm_ssh",),
                **choice,
            ),
        )
    return dag, group


def mounts_of(vms: lab.Lab) -> dict[str, list[str]]:
    return {vm.name: [str(vm.directory)] for vm in vms.vms}


def template(sim: Any, rid: str) -> dict[str, Any]:
    return next(t for t in sim.admin.state()["templates"] if t["id"] == rid)


def test_the_freeze_task_requests_the_copy_and_releases_the_moment_it_is_complete(
    sim: Any, on_lab: lab.Lab
) -> None:
    dag, group = chain(mounts=mounts_of(on_lab))
    run = Run(dag)
    frozen = run.run(group.freeze)
    # The freeze task itself released the VMs over its own connections, after the copy.
    assert frozen["copy"]["released"] and frozen["copy"]["complete_before_release"]
    assert frozen["release"]["consistency"] == "application-consistent"
    assert on_lab.frozen() == [], "the writers run again once the freeze task returns"
    made = run.run(group.copy)
    thaw = run.run(group.thaw)
    assert thaw["copy"]["consistency"] == "application-consistent"
    window = FreezeWindow(DAG_ID, run.run_id, 1, "backup")
    copy = template(sim, made["id"])
    assert copy["name"] == window.mark(BASE) and marked_token(copy["name"], BASE) == window.token
    assert window.tag in {t["value"] for t in copy["tags"]}
    assert made["created"] is True
    job = next(j for j in sim.admin.state()["jobs"] if j["target_id"] == made["id"])
    last_thaw = max(
        datetime.fromisoformat(h["thawed_at"].replace("Z", "+00:00")).timestamp()
        for h in frozen["release"]["hosts"]
    )
    assert job["ready_at"] <= last_thaw, "released before Skytap had read the disks"
    for vm in copy["vms"]:
        check = lab.check_image(vm["disk_image"])
        assert not check.filesystem and check.consistent, f"{vm['name']}: {check.verdict()}"
    posts = [r for r in api_requests(sim) if r["method"] == "POST"]
    assert len(posts) == 1


def test_a_failure_before_the_copy_is_requested_releases_the_vms_and_fails_the_task(
    sim: Any, on_lab: lab.Lab
) -> None:
    sim.admin.faults(
        rules=[{"method": "POST", "path": "/templates", "action": "error", "status": 400}]
    )
    dag, group = chain(mounts=mounts_of(on_lab))
    with pytest.raises(SkytapRefusedError) as err:
        Run(dag).run(group.freeze)
    assert is_final(err.value)  # Skytap refused it: the same request is refused again
    assert on_lab.frozen() == [], "a freeze whose copy was not requested releases the VMs"
    assert [t["id"] for t in sim.admin.state()["templates"]] == ["5001"]


def test_a_killed_freeze_then_a_cleared_run_does_not_vouch_for_the_old_copy(
    sim: Any, on_lab: lab.Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: the freeze task is killed mid-copy (Airflow calls on_kill, which releases
    the VMs with reason "kill", then the task dies); the run is cleared. The re-run must not
    tag the old copy application-consistent: it was requested in another freeze window, and
    nothing shows the VMs stayed frozen until it was complete."""
    sim.admin.config(copy_seconds=4)
    dag, group = chain(mounts=mounts_of(on_lab))
    first = Run(dag)
    freeze = group.freeze

    def killed(*args: Any, **kwargs: Any) -> Any:
        freeze.on_kill()
        raise SystemExit("SIGTERM")  # the task dies: no return value

    monkeypatch.setattr("airflow_provider_skytap.copies.CopyService.wait", killed)
    with pytest.raises(SystemExit):
        first.run(freeze)
    monkeypatch.undo()
    set_connection(monkeypatch, "skytap_default", sim.url, sim.username, sim.token)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SKYTAP_VM_SSH", __import__("json").dumps(on_lab.ssh_connection())
    )
    assert on_lab.frozen() == []
    first.run(group.thaw)  # all_done: the copy task never ran, nothing is tagged
    (old,) = [t for t in sim.admin.state()["templates"] if t["id"] != "5001"]
    SkytapHook().wait_until_ready("template", old["id"], timeout=30, poll_interval=0.2)
    # Cleared: every task runs again, the freeze task with its next try.
    again = Run(dag)
    second = again.run(group.freeze, try_number=2)
    assert second["frozen"] is False and second["copy"]["id"] == old["id"]
    again.run(group.copy, try_number=2)
    thaw = again.run(group.thaw, try_number=2)
    assert thaw["copy"]["consistency"] != "application-consistent"
    assert "another freeze window" in thaw["copy"]["note"]
    tags = {t["value"] for t in template(sim, old["id"])["tags"]}
    assert "airflow-skytap-consistency/application-consistent" not in tags
    posts = [r for r in api_requests(sim) if r["method"] == "POST"]
    assert len(posts) == 1, "the re-run made no second copy"


@pytest.mark.parametrize(
    ("choice", "field", "value"),
    [
        ({"preset": "custom"}, "profile", "custom"),
        ({"ssh_conn_id": "skytap_other_ssh"}, "ssh_conn_id", "skytap_other_ssh"),
    ],
)
def test_a_run_cannot_choose_a_profile_or_connection_the_dag_does_not_list(
    sim: Any, on_lab: lab.Lab, choice: dict[str, Any], field: str, value: str
) -> None:
    """Finding 2, past the trigger form (an API trigger, an old run's conf): the freeze task
    refuses the value, naming the field and the value, before any VM is reached."""
    dag, group = chain(mounts=mounts_of(on_lab), **choice)
    sim.admin.clear_requests()
    with pytest.raises(InvalidValueError, match=rf"{field}: '{value}' is not one of") as err:
        Run(dag).run(group.freeze)
    assert is_final(err.value)
    assert api_requests(sim) == [], "nothing asked of Skytap, so no VM reached either"


@pytest.fixture
def task_log(tmp_path: Any) -> Iterator[Any]:
    """Airflow's task logging (structlog) as JSON lines in a file, at a level chosen per use;
    Airflow's default set back after. Answers ``start(level)``, then ``lines()``."""
    from airflow.sdk.log import configure_logging

    path = tmp_path / "task.log"
    opened: list[Any] = []

    class Log:
        def start(self, level: str) -> None:
            for handle in opened:
                handle.close()
            opened.append(path.open("wb"))
            configure_logging(
                json_output=True,
                log_level=level,
                output=opened[-1],
                cache_logger_on_first_use=False,
            )

        def lines(self) -> list[dict[str, Any]]:
            opened[-1].flush()
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    yield Log()
    configure_logging(cache_logger_on_first_use=False)
    for handle in opened:
        handle.close()


def test_at_info_each_host_gets_one_line_per_step_and_the_run_a_summary(
    sim: Any, on_lab: lab.Lab, task_log: Any
) -> None:
    """The protocol (the guardian's @@sq records, the sh -c commands) is DEBUG; no secret."""
    dag, group = chain(mounts=mounts_of(on_lab))
    secrets = [sim.token, *secret_values(on_lab.ssh_connection())]
    for day, level in enumerate(("INFO", "DEBUG")):
        task_log.start(level)
        run = Run(dag, run_id=f"manual__{level}", date=DATE + timedelta(days=day))
        run.run(group.freeze)
        run.run(group.copy)
        run.run(group.thaw)
        lines = task_log.lines()
        text = [str(line.get("event")) for line in lines]
        print(f"{level}: {len(lines)} lines")
        for line in lines:
            print(f"  [{line.get('level')}] {line.get('event')}")
        for secret in secrets:
            assert not any(secret in str(line) for line in lines), "a secret in the log"
        if level == "DEBUG":
            assert any("@@sq" in t for t in text) and any("sh -c" in t for t in text)
            continue
        assert not any("@@sq" in t for t in text)
        assert not any("sh -c" in t for t in text)
        assert not any(t.startswith(("Connected (", "Authentication (")) for t in text)
        assert {str(line.get("level")) for line in lines} <= {"info", "warning", "error"}
        for vm in on_lab.vms:
            for step in (": preflight ok", ": paused (", ": thawed ("):
                mine = [t for t in text if t.startswith(vm.name) and step in t]
                assert len(mine) == 1, (vm.name, step, mine)
        # The freeze task thawed (its summary); the thaw task found them thawed (the run's).
        hosts = len(on_lab.vms)
        window = rf"{hosts} host\(s\); freeze window [0-9.]+ s .*consistency application-consistent"
        thawed = [t for t in text if re.match(rf"Thawed {window}", t)]
        checked = [t for t in text if re.match(rf"Checked, thawed already: {window}", t)]
        assert len(thawed) == 1 and len(checked) == 1, text
        assert text.index(checked[0]) > text.index(thawed[0])


def secret_values(connection: dict[str, Any]) -> list[str]:
    """The secrets an SSH connection holds: its password and its key, whole and line by line."""
    extra = connection.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    found = [connection.get("password"), extra.get("private_key"), extra.get("passphrase")]
    if extra.get("key_file"):
        found.append(Path(extra["key_file"]).read_text())
    lines = [
        line
        for value in found
        if value
        for line in str(value).splitlines()
        if len(line) > 20 and "PRIVATE KEY" not in line
    ]
    return [str(v) for v in found if v] + lines
