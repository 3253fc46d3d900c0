"""The .deb's units under a real systemd (`make test-deb`; minutes): a fresh
Debian 12 root (test_deb_install's debian_root) gets systemd, is booted with
systemd as its PID 1 (tests/integration/nspawn_boot.py: systemd-nspawn --boot,
the host's network namespace, the host's libvirtd through /run/libvirt,
/dev/fuse), and `apt install ./vm-appliance_*.deb` runs inside it, so that the
package's maintainer scripts meet a running systemd as on a real host. Then:

- the postinst enables and starts vm-appliance.service; `systemctl start`
  returns, and the unit is active, only once serve said READY=1 (/readyz answers);
- `kill -9` of its MainPID: Restart=on-failure brings it back, active again;
- `journalctl -u vm-appliance` holds serve's and its children's lines;
- `systemctl stop` ends it within TimeoutStopSec with no process left in its
  cgroup (none killed by systemd: serve stopped its children) and the mount gone;
- vm-appliance-exporter.service answers /metrics with the home's token;
- `systemctl disable`/`enable` and a reinstall (the postinst's restart) work;
  `apt remove` (the prerm's stop) leaves no process and keeps the data.

Every process started (nspawn and, through it, the container) is stopped by
pid in a finally, failure or not; the appliance's domains carry a prefix of
this test's and are removed."""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.appliance_process import ROOT, free_port, remove_prefixed_domains
from tests.integration.nspawn_boot import LIBVIRT_UNITS, BootedRoot, mask_units
from tests.integration.test_deb_install import (  # noqa: F401 (fixtures)
    APT_ARCHIVES,
    DATA,
    _demo_image,
    debian_root,
    in_root,
    the_deb,
    unmount_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.deb]

UNIT = "vm-appliance.service"
EXPORTER = "vm-appliance-exporter.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/vm-appliance.service"
CGROUP = "/sys/fs/cgroup/systemd/system.slice/{unit}/cgroup.procs"
# deb-systemd-invoke asks policy-rc.d: the package's own units may start, nothing else.
POLICY = """#!/bin/sh
case "$1" in vm-appliance.service|vm-appliance-exporter.service) exit 0 ;; esac
exit 101
"""
APT = "apt-get -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold"


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        time.sleep(0.2)


def readyz(port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code
    except requests.ConnectionError:
        return 0


def cgroup_pids(box: BootedRoot, unit: str) -> list[int]:
    """The unit's processes as its name=systemd cgroup lists them (none once it is gone)."""
    try:
        return [int(p) for p in box.path(CGROUP.format(unit=unit)).read_text().split()]
    except FileNotFoundError:
        return []


def serve_processes(box: BootedRoot) -> list[str]:
    """What vm-appliance.service runs (serve, gunicorn, the broker, the mount)
    still alive in the container."""
    return [cmd for cmd in box.pids_in_namespace().values()
            if "/opt/vm-appliance/bin/" in cmd or cmd.startswith("gunicorn")]


def child_pid(box: BootedRoot, marker: bytes, default: int = 0) -> int:
    """The pid (the host's) of the unit's process whose command line holds marker."""
    for pid in cgroup_pids(box, UNIT):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return default


def consoles_pid(box: BootedRoot, default: int = 0) -> int:
    return child_pid(box, b"appliance.consoles", default)


def pid_inside(host_pid: int) -> str:
    """A process's pid in its own (the container's) namespace, as it logs it."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[-1]
    raise AssertionError(f"no NSpid for {host_pid}")


def journal_since(box: BootedRoot, cursor: str, unit: str = UNIT) -> str:
    return box.run(f"journalctl --no-pager -o cat -u {unit} --after-cursor='{cursor}'").stdout


def cursor(box: BootedRoot) -> str:
    out = box.run("journalctl --no-pager -q -n 1 --show-cursor").stdout
    assert "-- cursor: " in out, out
    return out.strip().rsplit("-- cursor: ", 1)[-1]


def seconds(span: str) -> float:
    """A time span as `systemctl show` prints it ("1min 30s", "500ms")."""
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total = 0.0
    for word in span.split():
        number = word.rstrip("hminsu")
        total += float(number) * units[word[len(number):]]
    return total


def assert_stops_cleanly(box: BootedRoot, command: str, mount: Path,
                         removed: bool = False, mounted: bool = True) -> float:
    """`command` stops the unit: within TimeoutStopSec, serve's own exit 0, no
    process left in the cgroup or the container, nothing killed by systemd.
    (`removed`: the command removes the unit file too, and with it the unit's
    state; `mounted`: the mount was up, and says it unmounted.)"""
    assert cgroup_pids(box, UNIT), "the running unit's cgroup lists no process"
    timeout = seconds(box.show(UNIT, "TimeoutStopUSec")["TimeoutStopUSec"])
    assert timeout > 0
    mark = cursor(box)
    started = time.monotonic()
    box.run(command, timeout=300)
    took = time.monotonic() - started
    if not removed:
        state = box.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        assert state["ActiveState"] == "inactive" and state["Result"] == "success", state
        assert (state["ExecMainCode"], state["ExecMainStatus"]) == ("1", "0"), state  # exited 0
    assert took < timeout, f"stopped in {took:.1f} s, TimeoutStopSec is {timeout}"
    assert cgroup_pids(box, UNIT) == []
    assert serve_processes(box) == []
    stopped = journal_since(box, mark)
    assert "Killing process" not in stopped and "SIGKILL" not in stopped, stopped
    assert "vmctl.serve INFO stopped" in stopped, stopped
    assert "vmctl.fs INFO unmounted" in stopped or not mounted, stopped
    assert not box.run(f"mountpoint -q {mount}", check=False).returncode == 0
    return took


def test_units_under_systemd(debian_root, tmp_path):  # noqa: F811 (the imported fixture)
    root = debian_root
    deb = the_deb()
    timings: dict[str, float] = {}

    # The chroot part: systemd to boot, the root's libvirt masked, the admin's settings.
    started = time.monotonic()
    in_root(root, "apt-get update -qq")
    in_root(root, f"{APT} install systemd dbus")
    timings["systemd into the root"] = time.monotonic() - started
    mask_units(root, LIBVIRT_UNITS)
    (root / "usr/sbin/policy-rc.d").write_text(POLICY)
    port, exporter_port = free_port(), free_port()
    prefix = f"debsd{uuid.uuid4().hex[:6]}-"
    (root / "etc/vm-appliance").mkdir(parents=True)
    (root / "etc/vm-appliance/config.toml").write_text(
        (ROOT / "packaging/deb/config.toml").read_text()
        + f'\nlisten = "127.0.0.1:{port}"\ndomain_prefix = "{prefix}"\naccel = "tcg"\n')
    (root / "etc/default").mkdir(exist_ok=True)
    (root / "etc/default/vm-appliance-exporter").write_text(
        f'VM_APPLIANCE_EXPORTER_ARGS="--listen 127.0.0.1:{exporter_port} --any-appliance"\n')
    (root / "root" / deb.name).write_bytes(deb.read_bytes())  # /tmp is a tmpfs once booted
    unmount_all(root)  # nspawn mounts /proc, /dev and the rest itself

    box = BootedRoot(root, tmp_path / "console.log",
                     binds=["/dev/fuse", f"{APT_ARCHIVES}:/var/cache/apt/archives"],
                     read_only_binds=["/run/libvirt"])
    mount = Path("/") / DATA / "mnt"
    try:
        timings["boot"] = box.boot(180)
        assert box.run("cat /proc/1/comm").stdout.strip() == "systemd"
        failed = box.run("systemctl --failed --no-legend --plain").stdout
        print(f"booted in {timings['boot']:.1f} s; failed units: {failed.strip() or 'none'}")

        # apt install under systemd: the postinst enables the unit and starts it
        # (deb-systemd-invoke start), which returns once the unit is active.
        started = time.monotonic()
        box.run(f"cd /root && {APT} install ./{deb.name}", timeout=900)
        timings["apt install (postinst's start included)"] = time.monotonic() - started
        assert readyz(port) == 200
        assert box.run(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
        assert box.run(f"readlink {WANTS}").stdout.strip() == f"/lib/systemd/system/{UNIT}"
        assert box.run(f"systemctl is-enabled {EXPORTER}", check=False).stdout.strip() == "disabled"
        assert box.run(f"systemctl is-active {EXPORTER}", check=False).stdout.strip() == "inactive"
        state = box.show(UNIT, "ActiveState", "SubState", "StatusText")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
        assert state["StatusText"].startswith(f"serving on 127.0.0.1:{port}"), state
        assert box.run(f"mountpoint -q {mount}", check=False).returncode == 0
        assert "vms" in box.run(f"ls {mount}").stdout.split()

        # systemctl stop: clean, within the unit's timeout, its cgroup empty.
        timings["systemctl stop"] = assert_stops_cleanly(box, f"systemctl stop {UNIT}", mount)
        assert readyz(port) == 0

        # A stop as soon as serve started its children, most often while still
        # activating: as clean (serve stops them; systemd kills nothing).
        box.run(f"systemctl start --no-block {UNIT}")
        wait_for(lambda: child_pid(box, b"appliance.cli"), 300, "the mount child started")
        caught = box.show(UNIT, "ActiveState")["ActiveState"]
        assert_stops_cleanly(box, f"systemctl stop {UNIT}", mount, mounted=False)
        print(f"stopped while {caught}")

        # systemctl start --no-block: activating while serve gets ready (systemd waits
        # for READY=1), and whenever the unit shows active, /readyz answers.
        box.run(f"systemctl start --no-block {UNIT}")
        seen = []
        started = time.monotonic()
        while True:
            state = box.show(UNIT, "ActiveState", "MainPID")
            seen.append(state["ActiveState"])
            if state["ActiveState"] == "active":
                assert readyz(port) == 200, "active before /readyz answers"
                break
            assert state["ActiveState"] == "activating", seen
            assert time.monotonic() - started < 300, "not active within 300 s"
        timings["systemctl start (--no-block, to active)"] = time.monotonic() - started
        assert "activating" in seen, f"never activating: {seen} (Type=notify waits for READY=1)"
        times = box.show(UNIT, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
        assert (int(times["ActiveEnterTimestampMonotonic"])
                > int(times["ExecMainStartTimestampMonotonic"])), times
        # and the blocking form returns only then: /readyz answers at once, no retry
        box.run(f"systemctl stop {UNIT} && systemctl start {UNIT}", timeout=400)
        assert readyz(port) == 200

        # kill -9 of the main process: Restart=on-failure starts it again.
        before = box.show(UNIT, "MainPID", "NRestarts")
        mark = cursor(box)
        started = time.monotonic()
        box.run(f"kill -9 {before['MainPID']}")

        def restarted():
            now = box.show(UNIT, "MainPID", "NRestarts", "ActiveState")
            return (now["ActiveState"] == "active"
                    and now["MainPID"] not in ("0", before["MainPID"])
                    and int(now["NRestarts"]) == int(before["NRestarts"]) + 1)

        wait_for(restarted, 300, "restarted after kill -9 and active again")
        timings["kill -9 to active again (RestartSec=5 included)"] = time.monotonic() - started
        assert readyz(port) == 200
        journal = journal_since(box, mark)
        assert "Main process exited, code=killed, status=9/KILL" in journal, journal
        assert "Scheduled restart job" in journal, journal
        assert box.run(f"mountpoint -q {mount}", check=False).returncode == 0  # remounted

        # The journal holds serve's lines and its children's (gunicorn, the mount).
        journal = box.run(f"journalctl --no-pager -o cat -u {UNIT}").stdout
        for line in ("vmctl.serve INFO serving on http://127.0.0.1:",
                     "vmctl.sdnotify INFO ready after",
                     "[INFO] Listening at: http://127.0.0.1:", "vmctl.fs INFO mounted at",
                     "appliance.consoles INFO console broker listening"):
            assert line in journal, f"{line!r} not in the journal:\n{journal[-3000:]}"

        # A child that dies is serve's to restart (not systemd's), and serve's warning
        # is filed at its priority: `journalctl -p warning` shows it, not the info lines.
        main_pid = box.show(UNIT, "MainPID")["MainPID"]
        broker = consoles_pid(box)
        os.kill(broker, signal.SIGKILL)
        wait_for(lambda: consoles_pid(box, default=broker) != broker, 60, "the broker restarted")
        warnings = wait_for(lambda: box.run(
            f"journalctl --no-pager -o cat -p warning -u {UNIT}").stdout, 30, "a warning")
        assert "vmctl.serve WARNING consoles exited with" in warnings, warnings
        assert "serving on" not in warnings, warnings
        assert box.show(UNIT, "MainPID")["MainPID"] == main_pid
        # gunicorn's lines too: a worker it lost to SIGKILL is an error (-p err).
        worker = child_pid(box, b"gunicorn: worker")
        logged_as = f"Worker (pid:{pid_inside(worker)})"
        os.kill(worker, signal.SIGKILL)

        def gunicorn_error():
            out = box.run(f"journalctl --no-pager -o cat -p err -u {UNIT}").stdout
            return out if logged_as in out else None

        errors = wait_for(gunicorn_error, 60, "gunicorn's error about its worker")
        assert "was sent SIGKILL! Perhaps out of memory?" in errors, errors
        assert "Booting worker" not in errors, errors

        # A wrong config.toml: the unit fails (exit 2) and is not restarted every RestartSec.
        config = box.path("/etc/vm-appliance/config.toml")
        good = config.read_text()
        config.write_text(good + "no_such_key = 1\n")
        assert box.run(f"systemctl restart {UNIT}", check=False).returncode != 0
        state = box.show(UNIT, "ActiveState", "SubState", "ExecMainStatus")
        assert (state["ActiveState"], state["ExecMainStatus"]) == ("failed", "2"), state
        assert "no_such_key" in box.run(f"journalctl --no-pager -o cat -n 20 -u {UNIT}").stdout
        config.write_text(good)
        box.run(f"systemctl reset-failed {UNIT} && systemctl start {UNIT}", timeout=400)
        assert readyz(port) == 200

        # The exporter unit, with its options from /etc/default.
        box.run(f"systemctl start {EXPORTER}")
        token = box.path(f"{DATA}/token").read_text().strip()

        def metrics():
            try:
                return requests.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=10,
                                    headers={"Authorization": f"Bearer {token}"})
            except requests.ConnectionError:
                assert box.run(f"systemctl is-active {EXPORTER}", check=False).stdout.strip() in (
                    "active", "activating"), box.run(f"journalctl --no-pager -u {EXPORTER}").stdout
                return None

        answer = wait_for(metrics, 60, "the exporter answered")
        assert answer.status_code == 200 and "# HELP" in answer.text, answer.text[:500]
        anonymous = requests.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=10)
        assert anonymous.status_code == 401
        box.run(f"systemctl stop {EXPORTER}")
        assert cgroup_pids(box, EXPORTER) == []
        options = box.path("/etc/default/vm-appliance-exporter")
        good = options.read_text()
        options.write_text('VM_APPLIANCE_EXPORTER_ARGS="--no-such-option"\n')
        box.run(f"systemctl start {EXPORTER}")  # Type=simple: started once forked
        # then failed, not "activating (auto-restart)" as a restart would be

        def exporter_ended():
            now = box.show(EXPORTER, "ActiveState", "SubState", "ExecMainStatus")
            if now["ActiveState"] in ("active", "activating") and now["SubState"] != "auto-restart":
                return None
            return now

        state = wait_for(exporter_ended, 60, "the exporter with a wrong option ended")
        assert (state["ActiveState"], state["ExecMainStatus"]) == ("failed", "2"), state
        options.write_text(good)

        # enable as the postinst does (the same link), and a reinstall restarts the unit.
        box.run(f"systemctl disable {UNIT}")
        assert box.run(f"test -e {WANTS}", check=False).returncode != 0
        box.run(f"systemctl enable {UNIT}")
        assert box.run(f"readlink {WANTS}").stdout.strip() == f"/lib/systemd/system/{UNIT}"
        before = box.show(UNIT, "MainPID")["MainPID"]
        box.run(f"cd /root && {APT} install --reinstall ./{deb.name}", timeout=900)
        after = box.show(UNIT, "MainPID", "ActiveState")
        assert after["ActiveState"] == "active" and after["MainPID"] != before, after
        assert readyz(port) == 200

        # apt remove: the prerm stops the unit, as cleanly; the data stays.
        timings["apt remove (prerm's stop)"] = assert_stops_cleanly(
            box, f"{APT} remove vm-appliance", mount, removed=True)
        for name in ("appliance.db", "token", "config.json"):
            assert box.path(f"{DATA}/{name}").exists(), name
    finally:
        try:
            box.stop()
        finally:
            remove_prefixed_domains(prefix)
        for what, took in timings.items():
            print(f"{what}: {took:.1f} s")
    assert box.proc is not None and box.proc.returncode == 0, box.console()[-3000:]
