"""Session-wide fixtures (the simulator, a Skytap connection to it, the hooks) and the tiers.

Subdirectories add their own fixtures in their conftests. tests/README.md maps the folders to
the package and says what each tier marker means.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# Set before anything imports Airflow (the provider's modules below do): Airflow in the test
# process reads its configuration (and, if a test needs one, its metadata database) from a home
# of this session's own, never from ~/airflow: two test runs at once (the floor's Airflow beside
# the newest, or two checkouts) must not share a config or a database.
_HOME = tempfile.mkdtemp(prefix="skytap-tests-airflow-home-")
os.environ["AIRFLOW_HOME"] = _HOME
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
# Airflow's example DAGs stay out of every DagBag the tests parse. Airflow 3.3 removed
# DagBag(include_examples=...) (apache/airflow#66161): the [core] load_examples setting alone
# decides, and 3.2's DagBag reads the same setting when the argument is not given.
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

from airflow_provider_skytap.hooks.api import RetryPolicy  # noqa: E402
from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook  # noqa: E402
from skytap_simulator.control import SimulatorAdmin, SimulatorProcess  # noqa: E402
from skytap_simulator.seed import default_seed  # noqa: E402

SHORT_DURATIONS = {
    "copy_seconds": 0.5,
    "region_copy_seconds": 1.0,
    "delete_seconds": 0.2,
    "transition_seconds": 0.2,
}


@dataclass(frozen=True)
class Sim:
    """A reset simulator: its base URL, admin client and the default user's credentials."""

    url: str
    admin: SimulatorAdmin
    username: str
    token: str = field(repr=False)  # pytest prints a failed test's arguments

    @property
    def auth(self) -> tuple[str, str]:
        """``(username, token)`` for HTTP Basic auth."""
        return (self.username, self.token)


@pytest.fixture(scope="session")
def simulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    """One simulator subprocess for the whole session (time_scale 1, a temporary data dir)."""
    with SimulatorProcess(data_dir=tmp_path_factory.mktemp("sim-data"), time_scale=1.0) as proc:
        yield proc


# The tiers: what a test needs beyond this virtualenv. A test carries every tier it needs, so
# `-m unit` runs what needs nothing, `-m "not vm and not system"` what needs no root and no
# Airflow run. The marks (registered in pyproject.toml) come from what the test uses (below);
# a module that needs more than its fixtures show says so with `pytestmark`. tests/README.md
# has the table.
TIERS = ("unit", "integration", "vm", "system", "compose")  # meanings: pyproject.toml
# The fixtures that mean a tier: the simulator; the quiesce tests' sshd and freezable mounts,
# and the lab's VMs (demo.lab) the example DAGs freeze.
_TIER_FIXTURES = {
    "integration": {"sim", "simulator_process"},
    "vm": {"can_freeze", "sshd", "vms"},
}
_TIER_FOLDERS = {"system": "tests/system/", "compose": "tests/deploy/"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "suspends_vms(n): the test makes copies without live clone on purpose; the simulator's "
        "teardown expects exactly n VMs suspended instead of 0",
    )
    config.addinivalue_line(
        "markers",
        "leaves_environments(n): the test makes environments from templates and leaves n of "
        "them on purpose; the simulator's teardown expects n left instead of 0",
    )


def tiers_of(item: pytest.Item) -> set[str]:
    """The tiers a collected test needs: its folder, its fixtures and its own marks."""
    path = item.nodeid.split("::", 1)[0]
    found = {tier for tier, folder in _TIER_FOLDERS.items() if path.startswith(folder)}
    used = set(getattr(item, "fixturenames", ()))
    found |= {tier for tier, names in _TIER_FIXTURES.items() if used & names}
    found |= {m.name for m in item.iter_markers() if m.name in TIERS}
    return found or {"unit"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in sorted(tiers_of(item)):
            item.add_marker(tier)


@pytest.fixture
def sim(simulator_process: SimulatorProcess, request: pytest.FixtureRequest) -> Iterator[Sim]:
    """The session simulator reset to the default seed, short durations and no faults.

    After the test, no VM may have been suspended by a copy (one made without
    ``"live_copy": true``): a production backup that suspends the VMs is the downtime this
    package exists to avoid. Nor may an environment made from a template (a restore drill's)
    be left behind, neither deleted nor being deleted. Every test that uses the simulator is
    checked here, once.
    """
    admin = simulator_process.admin
    admin.reset()
    admin.config(**SHORT_DURATIONS)
    user = default_seed()["users"][0]
    yield Sim(simulator_process.url, admin, user["username"], user["token"])
    marker = request.node.get_closest_marker("suspends_vms")
    expected = int(marker.args[0]) if marker else 0
    suspended = admin.suspended()
    assert len(suspended) == expected, f"VMs suspended by a copy without live_copy: {suspended}"
    marker = request.node.get_closest_marker("leaves_environments")
    expected = int(marker.args[0]) if marker else 0
    left = admin.restored_left()
    assert len(left) == expected, f"environments made from templates left behind: {left}"


# A Skytap connection to the simulator, and the hooks on it (the tests of hooks, operators,
# sensors and the probe share these).
CONN_ID = "skytap_it"
# Fast retries for tests; the deadline still bounds every call.
FAST = RetryPolicy(deadline=60.0, base=0.05, cap=0.5)


def set_connection(
    monkeypatch: pytest.MonkeyPatch,
    conn_id: str,
    url: str,
    login: str,
    token: str,
    **extra: Any,
) -> None:
    """Define an Airflow connection the way users of env-var secrets do."""
    doc = {"conn_type": "skytap", "host": url, "login": login, "password": token, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))


@pytest.fixture
def skytap_conn(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> str:
    set_connection(monkeypatch, CONN_ID, sim.url, sim.username, sim.token, timeout=5)
    return CONN_ID


@pytest.fixture
def hook(skytap_conn: str) -> Iterator[SkytapHook]:
    with SkytapHook(skytap_conn, retry_policy=FAST) as h:
        yield h


@pytest.fixture
def async_hook(skytap_conn: str) -> SkytapAsyncHook:
    return SkytapAsyncHook(skytap_conn, retry_policy=FAST)


# make test runs the suite on two pytest-xdist workers (-n 2 --dist loadgroup). Tests that share
# a fixed resource of the machine stay on one worker, one after another, in file order:
# - tests/quiesce (its few `unit` modules ride along: seconds): a fixed sudo user (skytapq) and
#   its sudoers file, a fixed PostgreSQL user and port, the guardian records in
#   /run/skytap-quiesce;
# - tests/system: the Airflow stack the scheduler tests start, the lab's VMs, `airflow dags test`.
# Every other test has its own simulator (one per worker), Airflow home and temporary files, and
# goes to whichever worker is free.
XDIST_GROUPS = ("tests/quiesce/", "tests/system/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadgroup``, the groups above (the biggest group starts first).

    xdist's own loadgroup reads ``xdist_group`` marks into ``item._nodeid``, which pytest 9 no
    longer has, so the groups are made here from the test's path instead.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((g for g in XDIST_GROUPS if nodeid.startswith(g)), nodeid)

    return PathGroups(config, log)
