"""Session-wide simulator fixtures; subdirectories add their own fixtures in their conftests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from skytap_simulator.control import SimulatorAdmin, SimulatorProcess
from skytap_simulator.seed import default_seed

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "suspends_vms(n): the test makes copies without live clone on purpose; the simulator's "
        "teardown expects exactly n VMs suspended instead of 0",
    )


@pytest.fixture
def sim(simulator_process: SimulatorProcess, request: pytest.FixtureRequest) -> Iterator[Sim]:
    """The session simulator reset to the default seed, short durations and no faults.

    After the test, no VM may have been suspended by a copy (one made without
    ``"live_copy": true``): a production backup that suspends the VMs is the downtime this
    package exists to avoid. Every test that uses the simulator is checked here, once.
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
