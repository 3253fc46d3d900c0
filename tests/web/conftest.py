"""The web page in a real browser: a real `vmctl serve`, headless Chromium."""
from __future__ import annotations

import pytest

from appliance.api.web import WEB_DIR
from tests.appliance_process import require_demo_image
from tests.web import browser

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session", autouse=True)
def _demo_image_and_browser():
    require_demo_image()
    missing = browser.available()
    if missing:
        pytest.fail(missing)  # a machine set up by `make setup` has both
    if not (WEB_DIR / "vendor" / ".stamp").exists():
        pytest.fail(f"{WEB_DIR / 'vendor'} is missing: run `make web` (packaging/vendor-web.py)")
