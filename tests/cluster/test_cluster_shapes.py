"""Shelve and unshelve between two real libvirt hosts (issue 14, part E): a
shelved VM is defined nowhere and its host's allocation drops to nothing;
unshelved while its first host is disabled, the scheduler puts it on the
other, where it boots on the same disks (a marker on its data disk is
still there)."""
from __future__ import annotations

import pytest

from tests.appliance_process import READY_LINE
from tests.cluster_helpers import wait_for
from tests.snapshot_helpers import ask, type_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_SECONDS = 120
OFFSET = 3 * 1024 * 1024


def allocated(app, host: str) -> dict:
    return app.api("GET", f"/v1/hosts/{host}").json()["allocated"]


def test_unshelve_lands_on_the_other_host_when_the_first_is_disabled(cluster):
    app = cluster.app
    resp = app.api("POST", "/v1/vms", json={"name": "shelf", "host": "local",
                                            "disks": [{"name": "data", "size": 16}]})
    assert resp.status_code == 201, resp.text
    vm = resp.json()
    app.wait_console("shelf", READY_LINE, BOOT_SECONDS)
    type_line(app, "shelf", f"printf KEPTDISK | dd of=/dev/vdb bs=1 seek={OFFSET} conv=notrunc "
              "2>/dev/null; sync")
    read = f"dd if=/dev/vdb bs=1 skip={OFFSET} count=8 2>/dev/null | tr -cd A-Z"
    assert ask(app, "shelf", read) == "KEPTDISK"
    assert allocated(app, "local")["memory_mib"] == 128

    resp = app.api("PUT", "/v1/vms/shelf/state", json={"state": "shelved"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "shelved" and resp.json()["host"] == "local"
    assert cluster.defined_on(vm["id"]) == []  # undefined everywhere
    claim = allocated(app, "local")
    assert (claim["cpus"], claim["memory_mib"], claim["disk_gib"]) == (0, 0, 0)

    resp = app.api("PUT", "/v1/hosts/local/state", json={"state": "disabled"})
    assert resp.status_code == 200, resp.text
    resp = app.api("PUT", "/v1/vms/shelf/state", json={"state": "running"})
    assert resp.status_code == 200, resp.text
    shown = resp.json()
    assert (shown["state"], shown["host"]) == ("running", "h2")
    assert cluster.active_on(vm["id"]) == ["h2"]
    assert allocated(app, "h2")["memory_mib"] == 128
    assert allocated(app, "local")["memory_mib"] == 0
    wait_for("a boot on h2", lambda: app.console("shelf").count(READY_LINE) == 2, BOOT_SECONDS)
    assert ask(app, "shelf", read) == "KEPTDISK"  # its own disks, kept while shelved
