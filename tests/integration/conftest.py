"""Integration fixtures: a real `vmctl serve` on the real libvirtd, TCG guests."""
from __future__ import annotations

import pytest

from tests.appliance_process import DEMO_IMAGE, Appliance

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session", autouse=True)
def _demo_image():
    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: run `make image` (packaging/build-demo-image.sh)")


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    app = Appliance(tmp_path_factory.mktemp("home"))
    try:
        yield app.start()
    finally:
        app.cleanup()


@pytest.fixture
def fresh_appliance(tmp_path):
    """An appliance of the test's own, for tests that stop or kill it."""
    app = Appliance(tmp_path / "home")
    try:
        yield app
    finally:
        app.cleanup()
