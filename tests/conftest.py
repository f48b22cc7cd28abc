"""Session-wide simulator fixtures; subdirectories add their own fixtures in their conftests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from skytap_simulator.control import SimulatorAdmin, SimulatorProcess
from skytap_simulator.seed import default_seed

# Airflow's example DAGs stay out of every DagBag the tests parse. Airflow 3.3 removed
# DagBag(include_examples=...) (apache/airflow#66161): the [core] load_examples setting alone
# decides, and 3.2's DagBag reads the same setting when the argument is not given.
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

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


@pytest.fixture
def sim(simulator_process: SimulatorProcess) -> Sim:
    """The session simulator reset to the default seed, short durations and no faults."""
    admin = simulator_process.admin
    admin.reset()
    admin.config(**SHORT_DURATIONS)
    user = default_seed()["users"][0]
    return Sim(simulator_process.url, admin, user["username"], user["token"])
