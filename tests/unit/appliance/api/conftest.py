"""The world of the policy matrix (matrix_world.py), made once per test module that asks."""
from __future__ import annotations

import pytest

from tests.unit.appliance.api import matrix_world


@pytest.fixture(scope="module")
def policy_world(tmp_path_factory, demo_image) -> matrix_world.World:
    return matrix_world.build(tmp_path_factory.mktemp("matrix"), demo_image)


@pytest.fixture(scope="module")
def policy_app(policy_world):
    """(service, app) over the world, for requests that change nothing: reads, and refusals."""
    return policy_world.app()
