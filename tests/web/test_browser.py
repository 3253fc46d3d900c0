"""The web page end to end in headless Chromium against a real `vmctl serve`: sign in,
create and start a VM from the page, its serial console (xterm.js) answering a
command typed into it, its VNC console (noVNC) drawing the guest's screen, then
vmctl vnc's bare `#vnc?vm=&ticket=` URL, a viewer (no buttons, a read-only
console, a second project, signed out when the token is revoked), and the
admin deleting the VM from the list; no Content-Security-Policy refusal all along.

The screenshots go to the artifacts folder: $VMAPP_TEST_ARTIFACTS when set
(CI keeps it), else the test's tmp_path; named web-ui-list.png and web-ui-vm.png.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.appliance_process import READY_LINE, Appliance, wait_for
from tests.web import browser

BOOT_TIMEOUT = 240  # TCG guests on a shared 2-CPU machine


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("VMAPP_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def appliance(tmp_path):
    app = Appliance(tmp_path / "home")
    try:
        yield app.start()
    finally:
        app.cleanup()


@pytest.fixture
def driver(tmp_path):
    chrome = browser.chromium(tmp_path / "chromium")
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def csp_refusals(driver) -> list[str]:
    """What Chromium refused under the page's Content-Security-Policy (its console log)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def terminal_lines(driver) -> list[str]:
    return driver.execute_script(
        "const rows = document.querySelector('#serial .xterm-rows');"
        "return rows ? [...rows.children].map(r => r.textContent) : [];")


# How many colours the noVNC canvas shows (sampled): a blank or unconnected screen has one.
CANVAS_COLOURS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
if (!canvas || !canvas.width) return 0;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const seen = new Set();
for (let i = 0; i < data.length; i += 4 * 7) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
return seen.size;
"""


def test_the_page_creates_a_vm_and_opens_its_consoles(appliance: Appliance, driver, artifacts):
    name = f"web{uuid.uuid4().hex[:5]}"
    driver.get(appliance.url + "/")
    # Sign in with the form.
    driver.find_element(By.ID, "token").send_keys(appliance.token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    wait_for("the VM list", lambda: driver.find_element(By.ID, "vms").is_displayed())
    assert "admin" in driver.find_element(By.ID, "who").text
    # Create and start a VM from the form (the demo image is the only one).
    wait_for("the image list", lambda: driver.execute_script(
        "return document.querySelector('#create-form select').options.length"))
    form = driver.find_element(By.ID, "create-form")
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    row = f"#vm-table tr[data-vm='{name}']"
    wait_for(f"{name} running in the table", lambda: driver.execute_script(
        f"const r = document.querySelector(\"{row}\"); return r && r.dataset.state === 'running'"),
        timeout=BOOT_TIMEOUT, interval=1)
    assert appliance.api("GET", f"/v1/vms/{name}").json()["state"] == "running"
    driver.save_screenshot(str(artifacts / "web-ui-list.png"))

    # Its page, then its serial console, once the guest's shell is up.
    click_in_table(driver, f"{row} a")
    wait_for("the VM page", lambda: driver.find_element(By.ID, "vm-name").text == name)
    appliance.wait_console(name, READY_LINE, timeout=BOOT_TIMEOUT)
    driver.find_element(By.ID, "open-serial").click()
    wait_for("the serial console connected", lambda: driver.execute_script(
        "return document.getElementById('serial').dataset.state") == "connected")
    # The answer, which the typed line itself does not contain (it has $((6*7)), not 42).
    answer = re.compile(rf"(^|\s)42-{name}(\s|$)")
    typed = driver.find_element(By.CSS_SELECTOR, "#serial .xterm-helper-textarea")
    typed.send_keys("echo $((6*7))-$(hostname)\n")
    wait_for("42-NAME in the terminal", lambda: any(
        answer.search(line) for line in terminal_lines(driver)), timeout=30)

    # VNC: noVNC's canvas shows the guest's screen (SeaBIOS/SYSLINUX text on black).
    driver.find_element(By.ID, "open-vnc").click()
    wait_for("the VNC console connected", lambda: driver.execute_script(
        "return document.getElementById('vnc-screen').dataset.state") == "connected")
    colours = wait_for("more than one colour on the noVNC canvas",
                       lambda: (lambda n: n if n > 1 else 0)(
                           driver.execute_script(CANVAS_COLOURS, "#vnc-screen")))
    assert colours > 1
    # The whole page, both consoles in it (docs/web-ui.png is one of these).
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 120, 4000))
    driver.save_screenshot(str(artifacts / "web-ui-vm.png"))
    assert csp_refusals(driver) == []  # this tab's log, consoles included

    # vmctl vnc's URL, in a tab of its own (nobody signed in there): the ticket alone.
    ticket = appliance.api("POST", "/v1/tickets", json={"vm": name, "kind": "vnc"})
    assert ticket.status_code == 201, ticket.text
    driver.switch_to.new_window("tab")
    driver.get(f"{appliance.url}/#vnc?vm={name}&ticket={ticket.json()['ticket']}")
    wait_for("the bare VNC console connected", lambda: driver.execute_script(
        "return document.getElementById('vnc-bare').dataset.state") == "connected")
    assert not driver.find_element(By.ID, "sign-in").is_displayed()
    wait_for("the guest's screen in the bare console", lambda: driver.execute_script(
        CANVAS_COLOURS, "#vnc-bare") > 1)
    viewer_sees_no_buttons(appliance, driver, name)

    # Back as the admin (the viewer's revoked token signed the tab out): delete it from the list.
    driver.find_element(By.ID, "token").send_keys(appliance.token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    driver.execute_script("location.hash = '#vms'")
    delete = f"{row} button[data-action=delete]"
    wait_for("the admin's list", lambda: driver.find_elements(By.CSS_SELECTOR, delete))
    click_in_table(driver, delete)
    driver.switch_to.alert.accept()  # "Delete NAME?"
    wait_for(f"{name} gone from the table", lambda: not driver.find_elements(By.CSS_SELECTOR, row),
             timeout=120, interval=1)
    assert appliance.api("GET", f"/v1/vms/{name}").status_code == 404
    assert csp_refusals(driver) == []


def click_in_table(driver, selector: str) -> None:
    """Click an element of the VM table, found again if the table was drawn anew between the
    find and the click (the page redraws its rows at each refresh; a CI run saw the delete
    button go stale in that instant)."""
    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(f"a click on {selector}", clicked, timeout=10, interval=0.1)


def viewer_sees_no_buttons(appliance: Appliance, driver, name: str) -> None:
    """A viewer: the list and the VM page without start/stop/delete or the create form,
    a serial console that attaches read-only, and a second project to switch to."""
    project = appliance.api("POST", "/v1/projects", json={"name": "lab"})
    assert project.status_code == 201, project.text
    user = appliance.api("POST", "/v1/users",
                         json={"name": "vera", "role": "viewer", "projects": ["default", "lab"]})
    assert user.status_code == 201, user.text
    made = appliance.api("POST", "/v1/tokens", json={"user": "vera"})
    assert made.status_code == 201, made.text
    driver.get(appliance.url + "/")  # a full load of the page, signed out in this tab
    driver.find_element(By.ID, "token").send_keys(made.json()["token"])
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    row = f"#vm-table tr[data-vm='{name}']"
    wait_for("the viewer's list", lambda: driver.execute_script(
        f"return document.querySelector(\"{row}\")"))
    assert "viewer" in driver.find_element(By.ID, "who").text
    assert driver.find_elements(By.CSS_SELECTOR, "#vm-table button") == []
    assert not driver.find_element(By.ID, "create-form").is_displayed()
    click_in_table(driver, f"{row} a")
    wait_for("the VM page", lambda: driver.find_element(By.ID, "vm-name").text == name)
    wait_for("the VM's fields", lambda: driver.find_elements(By.CSS_SELECTOR, "#vm-fields tr"))
    assert driver.find_elements(By.CSS_SELECTOR, "#vm .vm-actions button") == []
    driver.find_element(By.ID, "open-serial").click()
    wait_for("a read-only serial console", lambda: driver.execute_script(
        "return document.getElementById('serial').dataset.state") == "connected (read-only)")
    # The other project: its list (empty) instead, every call with ?project=lab.
    Select(driver.find_element(By.ID, "project")).select_by_value("lab")
    wait_for("the lab project's list", lambda: driver.find_element(By.ID, "vms").is_displayed()
             and "in lab" in driver.find_element(By.ID, "who").text)
    wait_for("lab's empty table", lambda: driver.execute_script(
        "return document.querySelectorAll('#vm-table tbody tr').length === 0"))
    # Revoked: the next refresh is refused (401) and the page signs out by itself.
    revoked = appliance.api("DELETE", f"/v1/tokens/{made.json()['id']}")
    assert revoked.status_code in (200, 204), revoked.text
    wait_for("the sign-in form after the revocation",
             lambda: driver.find_element(By.ID, "sign-in").is_displayed(), timeout=15)
    assert driver.execute_script("return sessionStorage.getItem('vmapp.token')") is None
