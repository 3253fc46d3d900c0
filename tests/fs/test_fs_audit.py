"""Locks and the audit trail through a real mount and real shell commands."""
from __future__ import annotations

import os
import re


def test_lock_by_echo_unlock_by_an_empty_line_or_rm(mount):
    vm = mount.mkvm("web1")
    assert (vm / "lock").read_text() == ""
    result = mount.sh('echo "exam running" > vms/web1/lock && cat vms/web1/lock')
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\S+: exam running\n", result.stdout), result.stdout
    assert mount.service.get_vm("web1")["lock"]["reason"] == "exam running"
    assert mount.sh("echo > vms/web1/lock").returncode == 0
    assert (vm / "lock").read_text() == ""
    assert mount.sh('echo "again" > vms/web1/lock && rm vms/web1/lock').returncode == 0
    assert mount.service.get_vm("web1")["lock"] is None
    assert "lock" in os.listdir(vm)  # the file stays: empty, unlocked
    refused = mount.sh("rm vms/web1/state")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


def test_the_events_file_shows_who_wrote_from_the_mount(mount):
    vm = mount.mkvm("web1")
    assert mount.sh("echo 2 > vms/web1/cpus").returncode == 0
    assert mount.sh("echo flying > vms/web1/state").returncode != 0
    text = (vm / "events").read_text()
    uid = os.getuid()
    assert re.search(rf"web1 write: mkdir vms/web1 by \S+ \(mount, uid {uid}\): ok\n", text), text
    assert re.search(rf"web1 updated: spec changed: cpus by \S+ \(mount, uid {uid}\)\n", text), text
    assert re.search(rf"web1 write: write vms/web1/cpus by \S+ \(mount, uid {uid}\): ok\n", text)
    assert re.search(r"web1 refused: write vms/web1/state by \S+ \(mount, uid \d+\): "
                     r"EINVAL Invalid: 'flying' is not a state", text), text
