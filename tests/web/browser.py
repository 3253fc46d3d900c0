"""Headless Debian Chromium driven by selenium, for the web page's test and its
first-paint benchmark (flags: /work/shared/RECIPES.md, "Consoles, VNC, screenshots")."""
from __future__ import annotations

import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def available() -> str | None:
    """Why the browser cannot run here (None: it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing: packaging/setup-host.sh installs chromium chromium-driver"
    return None


def chromium(profile: Path, width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A fresh headless Chromium on its own profile folder (created, and left to the caller
    to remove); its console messages are kept for driver.get_log("browser")."""
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def sign_in(driver: webdriver.Chrome, base_url: str, token: str) -> None:
    """The page's token kept in this tab (sessionStorage), as the sign-in form keeps it."""
    driver.get(base_url + "/")
    driver.execute_script("sessionStorage.setItem('vmapp.token', arguments[0])", token)
