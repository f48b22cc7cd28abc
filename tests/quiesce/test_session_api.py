"""The quiesce session layer: its API shape, its reports' XCom form, and its layering."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from airflow_provider_skytap.quiesce.report import FreezeReport, HostReport, ThawReport
from airflow_provider_skytap.quiesce.session import QuiesceSession
from airflow_provider_skytap.quiesce.spec import QuiesceSpec, QuiesceTarget

QUIESCE = Path(__file__).resolve().parents[2] / "airflow_provider_skytap" / "quiesce"


def test_nothing_under_quiesce_imports_the_operators_or_the_hooks() -> None:
    offenders = {}
    forbidden = ("airflow_provider_skytap.operators", "airflow_provider_skytap.hooks")
    for path in QUIESCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(forbidden):
                offenders[path.name] = node.module
    assert offenders == {}


def test_a_session_names_each_guardian_by_dag_run_and_target() -> None:
    spec = QuiesceSpec.build(mounts={"a": ["/data"], "*": ["/srv"]}, max_freeze_seconds=60)
    targets = [QuiesceTarget("a", "a", "a", "ssh_a"), QuiesceTarget("b", "b", "b", "ssh_b")]
    one = QuiesceSession(spec, targets, dag_id="d", run_id="r1")
    again = QuiesceSession(spec, targets, dag_id="d", run_id="r1")
    other = QuiesceSession(spec, targets, dag_id="d", run_id="r2")
    assert [h.mounts for h in one.hosts] == [["/data"], ["/srv"]]
    assert [h.gid for h in one.hosts] == [h.gid for h in again.hosts]  # a release reconnects
    assert {h.gid for h in one.hosts}.isdisjoint(h.gid for h in other.hosts)
    assert not one.armed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mounts": {"c": ["/data"]}}, "mounts names ['c'], which are not targets"),
        ({"mounts": ["/data"], "guardian_wait": 0}, "guardian_wait must be a positive number"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], message: str) -> None:
    targets = [QuiesceTarget("a", "a", "a", "ssh_a")]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        QuiesceSession(QuiesceSpec.build(**kwargs), targets, dag_id="d", run_id="r")  # type: ignore[arg-type]


def test_reports_are_json_for_xcom_and_keep_no_private_keys() -> None:
    host = HostReport("vm-1", "k", "g", "fsfreeze", status="thawed", frozen_at=10.0, thawed_at=12.5)
    host.consistency = "application-consistent"
    thaw = ThawReport([host]).to_xcom()
    assert json.loads(json.dumps(thaw)) == thaw
    assert thaw["hosts"][0]["seconds_frozen"] == 2.5
    assert thaw["freeze_window"] == {
        "seconds": 2.5,
        "clock": "per-host",
        "longest_host_seconds": 2.5,
    }
    assert not [k for h in thaw["hosts"] for k in h if k.startswith("_")]
    freeze = FreezeReport([host], 60).to_xcom()
    assert json.loads(json.dumps(freeze)) == freeze
    assert freeze["consistency"] == "application-consistent"
