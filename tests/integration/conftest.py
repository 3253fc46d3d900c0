"""Integration fixtures: a real `vmctl serve` on the real libvirtd, TCG guests."""
from __future__ import annotations

import pytest

from tests.appliance_process import Appliance, require_demo_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session", autouse=True)
def _demo_image():
    require_demo_image()


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    app = Appliance(tmp_path_factory.mktemp("home"))
    try:
        yield app.start()
    finally:
        app.cleanup()


@pytest.fixture(scope="module")
def unmounted_appliance(tmp_path_factory):
    """`vmctl serve --no-mount` (REST, consoles), one per module: for the modules that
    never read the mount (the broker is serve's child either way)."""
    app = Appliance(tmp_path_factory.mktemp("home"), extra_args=["--no-mount"])
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
