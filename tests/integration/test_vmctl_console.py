"""vmctl console, vnc and screenshot against a real `vmctl serve` and a real
guest: console driven through a pty (pexpect) as a person would, a viewer's
console that cannot type, a VNC ticket that works once, a PNG of the screen."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.parse

import pexpect
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.appliance_process import READY_LINE, ROOT

pytestmark = pytest.mark.integration

VM = "con1"
PROMPT = rf"{VM}:\S*# "  # the demo guest's PS1 '\h:\w# ' (packaging/demo-guest/profile)
KERNEL = re.compile(r"\d+\.\d+\.\d+-\d+-cloud-amd64")


@pytest.fixture(scope="module")
def vm(appliance):
    appliance.create_vm(VM, memory=160)
    appliance.wait_console(VM, READY_LINE, timeout=180)
    return appliance


def vmctl_argv(appliance, *args: str) -> list[str]:
    return ["-m", "appliance.cli", "--home", str(appliance.home), *args]


def env_with(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMCTL_")}
    if token is not None:
        env["VMCTL_TOKEN"] = token
    return env


def spawn_console(appliance, *options: str, token: str | None = None) -> pexpect.spawn:
    """vmctl console in a pty of its own, inside a shell that prints the pty's
    settings (stty -g) before and after it, and its exit status."""
    script = 'stty -g; "$@"; echo "vmctl exited $?"; stty -g'
    argv = ["-c", script, "sh", sys.executable, *vmctl_argv(appliance, "console", VM, *options)]
    child = pexpect.spawn("/bin/sh", argv, cwd=str(ROOT), env=env_with(token), timeout=60,
                          encoding="utf-8", codec_errors="replace")
    child.expect(r"([^\r\n]+)\r\n")  # the first stty -g
    child.settings_before = child.match.group(1)
    child.expect(f"Connected to {VM}")
    return child


def wait_for_prompt(child: pexpect.spawn) -> None:
    """A fresh prompt: Enter until the shell answers (it may be mid-line after
    another test, or still printing boot messages)."""
    for _ in range(10):
        child.send("\r")
        try:
            child.expect(PROMPT, timeout=6)
            return
        except pexpect.TIMEOUT:
            continue
    raise AssertionError(f"no prompt {PROMPT!r}; last output: {child.before!r}")


def detach(child: pexpect.spawn) -> None:
    """Ctrl-]: vmctl exits 0 and the shell around it finds its terminal as it was."""
    child.sendcontrol("]")
    child.expect(r"vmctl exited (\d+)\r\n")
    assert child.match.group(1) == "0"
    child.expect(r"([^\r\n]+)\r\n")
    assert child.match.group(1) == child.settings_before  # the terminal restored
    child.expect(pexpect.EOF)


def test_vmctl_console_reads_the_guests_kernel_version_and_detaches(vm):
    child = spawn_console(vm)
    wait_for_prompt(child)
    # the guest's kernel logs to ttyS0 too: keep its messages out of the lines read below
    child.send("dmesg -n 1\r")
    child.expect(PROMPT)
    child.send("uname -r\r")
    child.expect_exact("uname -r\r\n")  # the guest's echo of the command
    child.expect(r"([^\r\n]*)\r\n")  # the line after it: the command's output
    assert KERNEL.fullmatch(child.match.group(1)), (child.match.group(1), child.before)
    child.expect(PROMPT)
    detach(child)


def test_a_piped_vmctl_console_types_its_stdin_and_prints_the_answer(vm):
    out = subprocess.run([sys.executable, *vmctl_argv(vm, "console", VM)], input=b"\rhostname\r",
                         capture_output=True, cwd=ROOT, env=env_with(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.search(rb"hostname\r\n" + VM.encode() + rb"\r\n", out.stdout), out.stdout


def make_token(appliance, user: str, role: str) -> str:
    resp = appliance.api("POST", "/v1/users", json={"name": user, "role": role})
    assert resp.status_code == 201, resp.text
    resp = appliance.api("POST", "/v1/tokens", json={"user": user})
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def test_a_viewers_vmctl_console_watches_but_cannot_type(vm):
    viewer = spawn_console(vm, token=make_token(vm, "watcher", "viewer"))
    viewer.expect_exact(" (escape character is ^]; read-only: a viewer's keys are dropped)")
    viewer.send("\recho VIEWER-$((6*7))\r")
    time.sleep(2)  # time enough for the bytes to reach the guest, were they passed on
    # the admin types on the same console: the viewer sees it, its own line never ran
    out = subprocess.run([sys.executable, *vmctl_argv(vm, "console", VM)],
                         input=b"\recho ADMIN-$((6*7))\r", capture_output=True, cwd=ROOT,
                         env=env_with(), timeout=60)
    assert b"ADMIN-42" in out.stdout, out.stdout
    viewer.expect_exact("ADMIN-42")
    log = vm.console(VM)
    assert "ADMIN-42" in log and "VIEWER-42" not in log and "VIEWER-" not in log
    detach(viewer)


def test_vmctl_vnc_prints_a_url_whose_ticket_works_once(vm):
    out = subprocess.run([sys.executable, *vmctl_argv(vm, "vnc", VM)], capture_output=True,
                         text=True, cwd=ROOT, env=env_with(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "valid once, for 60 s" in out.stderr
    url = out.stdout.strip()
    assert url.startswith(f"{vm.url}/#vnc?")
    fragment = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).fragment.split("?", 1)[1]))
    assert fragment["vm"] == VM and fragment["ticket"].startswith("vmt_")
    ws_url = f"{vm.url.replace('http', 'ws', 1)}/v1/vms/{VM}/vnc?ticket={fragment['ticket']}"
    with connect(ws_url, open_timeout=30) as ws:
        assert ws.recv(timeout=30)[:4] == b"RFB "  # the VNC server's greeting: RFB 003.008
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=30)  # a ticket is good once
    assert refused.value.response.status_code in (401, 403)


def test_vmctl_screenshot_writes_a_png(vm, tmp_path):
    target = tmp_path / "screen.png"
    out = subprocess.run([sys.executable, *vmctl_argv(vm, "screenshot", VM, str(target))],
                         capture_output=True, text=True, cwd=ROOT, env=env_with(), timeout=60)
    assert out.returncode == 0, out.stderr
    with Image.open(target) as image:
        assert image.format == "PNG" and image.width >= 320 and image.height >= 200
    assert os.listdir(tmp_path) == ["screen.png"]


def test_history_comes_first(vm):
    out = subprocess.run([sys.executable, *vmctl_argv(vm, "console", VM, "--history", "65536")],
                         stdin=subprocess.DEVNULL, capture_output=True, cwd=ROOT, env=env_with(),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert READY_LINE.encode() in out.stdout  # from the log, before anything is typed


def test_the_vm_stopping_ends_vmctl_console_with_the_terminal_restored(vm):
    """Last: it stops the module's VM."""
    child = spawn_console(vm)
    wait_for_prompt(child)
    resp = vm.api("PUT", f"/v1/vms/{VM}/state", json={"state": "force-stop"})
    assert resp.status_code < 300, resp.text
    child.expect(f"vmctl console: {VM}: ")
    child.expect(r"vmctl exited (\d+)\r\n")
    assert child.match.group(1) == "0"
    child.expect(r"([^\r\n]+)\r\n")
    assert child.match.group(1) == child.settings_before
    child.expect(pexpect.EOF)
    # stopped: each command is refused in one line with the API's reason, never a traceback
    for command in (["console", VM], ["screenshot", VM, "/tmp/never-written.png"]):
        out = subprocess.run([sys.executable, *vmctl_argv(vm, *command)], capture_output=True,
                             text=True, cwd=ROOT, env=env_with(), timeout=60,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 1 and out.stderr.startswith(f"vmctl {command[0]}: HTTP 409: "), \
            out.stderr
        assert len(out.stderr.splitlines()) == 1 and "stopped" in out.stderr, out.stderr
