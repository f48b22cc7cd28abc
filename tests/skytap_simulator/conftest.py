"""Fixtures of the simulator's contract tests."""

from __future__ import annotations

import pytest

from tests.conftest import Sim
from tests.skytap_simulator.helpers import Api


@pytest.fixture
def api(sim: Sim) -> Api:
    """requests against the reset simulator as the default user."""
    return Api(sim.url, sim.auth)
