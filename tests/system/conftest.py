"""The lab's VMs for the example DAGs' system tests (``demo.lab``), and the simulator seeded
with them: environment 1001's three VMs are the lab's sshds and disk images."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo import lab
from skytap_simulator.seed import default_seed
from tests.conftest import Sim

ENV = "1001"


@pytest.fixture(scope="session")
def vms() -> Iterator[lab.Lab]:
    reason = lab.unavailable()
    if reason:
        pytest.skip(f"the example DAGs freeze real VMs: {reason}")
    with lab.Lab() as started:
        yield started


@pytest.fixture
def lab_sim(sim: Sim, vms: lab.Lab) -> Iterator[Sim]:
    """The simulator with environment 1001 on the lab; after the test no VM may be frozen."""
    sim.admin.reset(vms.seed(default_seed(), ENV))
    sim.admin.config(copy_seconds=1, region_copy_seconds=1, delete_seconds=0.2)
    yield sim
    frozen = vms.frozen()
    vms.thaw_all()
    assert frozen == [], f"left frozen after the test: {frozen}"


def skytap_conn(sim: Sim) -> dict[str, object]:
    """The skytap_default connection to the simulator (a short retry deadline: faults end
    the try quickly)."""
    return {
        "conn_type": "skytap",
        "host": sim.url,
        "login": sim.username,
        "password": sim.token,
        "extra": {"retry_deadline": 5},
    }
