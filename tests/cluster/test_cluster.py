"""Two real libvirt hosts: placement, live migration, maintenance, evacuation (issue 5).

Placement tests create stopped VMs (defined on their host, no QEMU), so that
they cost no boots; the migration, drain and evacuation tests run real TCG
guests and read their consoles.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import socket
import time

import pytest
import requests

from tests.appliance_process import BOOT_LINE, READY_LINE, free_port
from tests.cluster_helpers import final_operation, start_cluster, wait_for

pytestmark = pytest.mark.integration

BOOT_SECONDS = 120  # TCG boots take 3-4 s when quiet, far longer next to other suites


def guest_answers(port: int) -> bool:
    """The demo guest's port 8000 says "ok" to whoever connects (through the forward)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        return conn.recv(16).strip() == b"ok"


def events(app, vm: str, kind: str) -> list[str]:
    items = app.api("GET", "/v1/events", params={"limit": 10000}).json()["items"]
    return [e["message"] for e in items if e["kind"] == kind and e["vm_name"] == vm]


def create(app, name: str, **spec) -> dict:
    spec.setdefault("state", "stopped")
    # Stopped, yet claiming vCPUs and memory as a running VM does, so that the
    # filters see them without a boot (a stopped VM claims only its disks).
    spec.setdefault("reserve_when_stopped", True)
    resp = app.api("POST", "/v1/vms", json={"name": name, **spec})
    assert resp.status_code == 201, resp.text
    return resp.json()


def patch_host(app, name: str, **fields) -> dict:
    resp = app.api("PATCH", f"/v1/hosts/{name}", json=fields)
    assert resp.status_code == 200, resp.text
    return resp.json()


def host_view(app, name: str) -> dict:
    return app.api("GET", f"/v1/hosts/{name}").json()


def squeeze(app, name: str, room_mib: int) -> None:
    """Leave `room_mib` of schedulable RAM on a host beyond what it holds now."""
    view = host_view(app, name)
    physical = view["inventory"]["memory_mib"] * view["ram_ratio"]
    patch_host(app, name, reserved_memory_mib=int(physical) - view["allocated"]["memory_mib"] - room_mib)


def test_each_filter_and_weigher_places_and_explains(cluster):
    app = cluster.app
    # RAMWeigher (spread): a big VM pinned to local leaves h2 the emptier host.
    assert create(app, "big", memory="2G", host="local")["host"] == "local"
    assert create(app, "small")["host"] == "h2"
    assert "placed small on h2" in events(app, "small", "scheduled")[0]

    # LabelsFilter: a node selector only h2's labels satisfy.
    patch_host(app, "h2", labels={"zone": "b"})
    vm = create(app, "zoned", node_selector={"zone": "b"})
    assert vm["host"] == "h2"
    explained = events(app, "zoned", "scheduled")[0]
    assert "local by LabelsFilter" in explained and "zone" in explained

    # ComputeFilter: a disabled host takes no new VM; nothing else matches the selector.
    resp = app.api("PUT", "/v1/hosts/h2/state", json={"state": "disabled"})
    assert resp.status_code == 200, resp.text
    resp = app.api("POST", "/v1/vms", json={"name": "refused", "state": "stopped", "node_selector": {"zone": "b"}})
    assert resp.status_code == 409, resp.text
    reason = resp.json()["reason"]
    assert "h2 by ComputeFilter" in reason and "disabled" in reason and "local by LabelsFilter" in reason
    assert app.api("GET", "/v1/vms/refused").status_code == 404  # refused: nothing recorded
    assert app.api("PUT", "/v1/hosts/h2/state", json={"state": "enabled"}).status_code == 200

    # RamFilter after overcommit: h2 keeps room for 200 MiB only.
    squeeze(app, "h2", 200)
    assert create(app, "wide", memory=256)["host"] == "local"
    assert "h2 by RamFilter" in events(app, "wide", "scheduled")[0]

    # CoreFilter: h2's vCPU capacity made smaller than what it holds plus 4.
    view = host_view(app, "h2")
    ratio = (view["allocated"]["cpus"] + 2) / view["inventory"]["cpus"]
    patch_host(app, "h2", cpu_ratio=round(ratio, 3), reserved_memory_mib=0)
    assert create(app, "many", cpus=4, memory=64)["host"] == "local"
    assert "h2 by CoreFilter" in events(app, "many", "scheduled")[0]

    # DiskFilter: h2's storage counted at a tenth (25 GiB here) takes no 30 GiB disk.
    patch_host(app, "h2", disk_ratio=0.1)
    assert create(app, "fat", memory=32, cpus=1, disks=[{"name": "data", "size": "30G"}])["host"] == "local"
    assert "h2 by DiskFilter" in events(app, "fat", "scheduled")[0]

    # The claims are what the hosts show as allocated.
    local = host_view(app, "local")
    assert local["allocated"]["vms"] == 4
    assert local["allocated"]["memory_mib"] == 2048 + 256 + 64 + 32
    assert local["allocated"]["cpus"] == 1 + 1 + 4 + 1
    assert local["allocated"]["disk_gib"] >= 30


def test_pack_fills_one_host_first(tmp_path, hosts):
    cluster = start_cluster(tmp_path, hosts, placement="pack")
    try:
        app = cluster.app
        first = create(cluster.app, "p1")["host"]
        assert [create(app, f"p{i}")["host"] for i in (2, 3, 4)] == [first] * 3
        assert host_view(app, "h2" if first == "local" else "local")["allocated"]["vms"] == 0
    finally:
        cluster.app.cleanup()
        cluster.remove_domains()


def test_server_groups_spread_pack_and_refuse(cluster):
    app = cluster.app
    for name, policy in (("apart", "anti-affinity"), ("together", "affinity"), ("rather-apart", "soft-anti-affinity"),
                         ("rather-together", "soft-affinity")):
        resp = app.api("POST", "/v1/groups", json={"name": name, "policy": policy})
        assert resp.status_code == 201, resp.text

    first = create(app, "a1", group="apart")["host"]
    second = create(app, "a2", group="apart")["host"]
    assert {first, second} == {"local", "h2"}  # strict anti-affinity spreads...
    resp = app.api("POST", "/v1/vms", json={"name": "a3", "state": "stopped", "group": "apart"})
    assert resp.status_code == 409, resp.text  # ...and then refuses, saying why for each host
    reason = resp.json()["reason"]
    assert "local by ServerGroupAntiAffinityFilter" in reason and "h2 by ServerGroupAntiAffinityFilter" in reason

    t1 = create(app, "t1", group="together")["host"]
    assert create(app, "t2", group="together")["host"] == t1
    assert create(app, "t3", group="together", memory=512)["host"] == t1

    # Soft policies: weighed, not filtered; they win over spreading.
    s1 = create(app, "s1", group="rather-together")["host"]
    assert create(app, "s2", group="rather-together")["host"] == s1
    r1 = create(app, "r1", group="rather-apart")["host"]
    assert create(app, "r2", group="rather-apart")["host"] != r1

    group = app.api("GET", "/v1/groups/apart").json()
    assert sorted(m["name"] for m in group["members"]) == ["a1", "a2"]
    assert app.api("DELETE", "/v1/groups/apart").status_code == 409  # members remain


def test_concurrent_creates_never_overbook(cluster):
    app = cluster.app
    for host in ("local", "h2"):
        squeeze(app, host, 3 * 128)

    def attempt(i: int) -> int:
        # Stopped VMs claim RAM only with reserve_when_stopped (claims at start, KubeVirt's rule):
        # it makes these stopped creates claim, without booting ten guests.
        resp = requests.post(app.url + "/v1/vms", json={"name": f"c{i}", "state": "stopped", "memory": 128,
                                                        "reserve_when_stopped": True},
                             headers={"Authorization": f"Bearer {app.token}"}, timeout=120)
        return resp.status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(attempt, range(10)))
    assert sorted(codes) == [201] * 6 + [409] * 4, codes
    for host in ("local", "h2"):
        view = host_view(app, host)
        assert view["allocated"]["vms"] == 3
        assert view["allocated"]["memory_mib"] <= view["capacity"]["memory_mib"]


def test_live_migration_keeps_the_guest_running(cluster):
    app = cluster.app
    port = free_port()
    vm = create(app, "mig", state="running", host="local",
                network={"type": "user", "port_forwards": [{"host_port": port, "guest_port": 8000}]})
    app.wait_console("mig", READY_LINE, BOOT_SECONDS)
    assert guest_answers(port)

    resp = app.api("PUT", "/v1/vms/mig/host", json={"host": "h2"})
    assert resp.status_code == 200, resp.text
    after = app.api("GET", "/v1/vms/mig").json()
    assert after["host"] == "h2" and after["state"] == "running"
    assert cluster.active_on(vm["id"]) == ["h2"]
    assert cluster.defined_on(vm["id"]) == ["h2"]  # the source forgot it
    console = app.console("mig")
    assert console.count(BOOT_LINE) == 1  # no reboot
    # The guest answers through the forward, now held by the target's QEMU.
    assert guest_answers(port)
    assert any("live-migrated from local to h2" in m for m in events(app, "mig", "migrated"))

    # A migration crawling at 1 MiB/s is cancelled: the guest stays on h2, running.
    resp = app.api("PUT", "/v1/vms/mig/host", params={"wait": "false"}, json={"host": "local", "bandwidth": 1})
    assert resp.status_code == 202, resp.text
    op_id = resp.json()["operation"]["id"]
    wait_for("migration under way", lambda: app.api("GET", f"/v1/operations/{op_id}").json()["status"] == "running",
             30)
    time.sleep(1)
    assert app.api("DELETE", f"/v1/operations/{op_id}").status_code == 200
    op = wait_for("cancelled", lambda: (lambda o: o if o["status"] in ("cancelled", "failed", "succeeded")
                                        else None)(app.api("GET", f"/v1/operations/{op_id}").json()), 60)
    assert op["status"] == "cancelled", op
    assert app.api("GET", "/v1/vms/mig").json()["host"] == "h2"
    assert cluster.active_on(vm["id"]) == ["h2"]
    assert app.console("mig").count(BOOT_LINE) == 1


def test_maintenance_drains_and_reports_what_cannot_move(cluster):
    app = cluster.app
    patch_host(app, "local", labels={"disk": "ssd"})
    live = create(app, "live", state="running", host="local")
    create(app, "parked", host="local")  # stopped: moves offline
    create(app, "pinned", host="local", node_selector={"disk": "ssd"})  # only local matches
    app.wait_console("live", READY_LINE, BOOT_SECONDS)

    resp = app.api("PUT", "/v1/hosts/local/state", json={"state": "maintenance"})
    assert resp.status_code == 200, resp.text
    drain = resp.json()["drain"]
    assert [m["vm"] for m in drain["migrating"]] == ["live"] and drain["migrating"][0]["target"] == "h2"
    assert [m["vm"] for m in drain["moving"]] == ["parked"]
    assert [b["vm"] for b in drain["blocked"]] == ["pinned"]
    assert "LabelsFilter" in drain["blocked"][0]["reason"]
    assert events(app, "pinned", "drain-blocked")

    wait_for("drained", lambda: app.api("GET", "/v1/vms/live").json()["host"] == "h2"
             and app.api("GET", "/v1/vms/parked").json()["host"] == "h2", 120)
    assert app.api("GET", "/v1/vms/live").json()["state"] == "running"
    assert cluster.active_on(live["id"]) == ["h2"]
    assert app.console("live").count(BOOT_LINE) == 1
    assert app.api("GET", "/v1/vms/pinned").json()["host"] == "local"  # reported, not dropped
    # In maintenance, the host takes nothing new.
    resp = app.api("POST", "/v1/vms", json={"name": "late", "state": "stopped", "host": "local"})
    assert resp.status_code == 409 and "maintenance" in resp.json()["reason"]


def test_a_dead_host_is_evacuated_and_its_guest_never_runs_twice(tmp_path, hosts):
    cluster = start_cluster(tmp_path, hosts, evacuate_after=5.0)
    app, h2 = cluster.app, cluster.hosts["h2"]
    try:
        keep = create(app, "keep", state="running", host="h2")  # run_strategy Always
        manual = create(app, "manual", state="running", host="h2", run_strategy="Manual")
        app.wait_console("keep", READY_LINE, BOOT_SECONDS)
        app.wait_console("manual", READY_LINE, BOOT_SECONDS)
        qemus = [h2.qemu_pid(app.prefix + name) for name in ("keep", "manual")]

        # The host dies: its libvirtd and its guests, as in a power loss.
        h2.kill_libvirtd()
        for pid in qemus:
            h2.kill_pid(pid)
        wait_for("h2 down", lambda: host_view(app, "h2")["observed_state"] == "down", 20)
        moved = wait_for("keep evacuated", lambda: (lambda v: v if v["host"] == "local" and v["state"] == "running"
                                                    else None)(app.api("GET", "/v1/vms/keep").json()), BOOT_SECONDS)
        assert moved["state"] == "running"
        # A restart elsewhere (not a migration): a second boot on the console.
        wait_for("second boot", lambda: app.console("keep").count(READY_LINE) == 2, BOOT_SECONDS)
        assert app.console("keep").count(BOOT_LINE) == 2
        assert cluster.active_on(keep["id"]) == ["local"]
        assert events(app, "keep", "evacuated")
        lost = wait_for("manual lost", lambda: (lambda v: v if v["state"] == "lost" else None)(
            app.api("GET", "/v1/vms/manual").json()), 30)
        assert lost["host"] == "h2"
        assert any("Manual" in m for m in events(app, "manual", "lost"))

        # The host returns with both domains still defined: the evacuated one's
        # copy goes, the other is seen again where it was.
        h2.start_libvirtd()
        wait_for("stale copy removed", lambda: cluster.defined_on(keep["id"]) == ["local"], 30)
        # recorded once the copy's network filter is gone too, a moment after its undefine
        wait_for("stale copy's event", lambda: events(app, "keep", "stale-copy-removed"), 10)
        wait_for("manual seen again", lambda: app.api("GET", "/v1/vms/manual").json()["state"] == "stopped", 30)
        assert cluster.active_on(keep["id"]) == ["local"]
        assert cluster.active_on(manual["id"]) == []
    finally:
        app.cleanup()
        cluster.remove_domains()


def test_a_host_cut_off_with_its_guests_alive_never_runs_a_guest_twice(tmp_path, hosts):
    """Only h2's libvirtd dies: its guest keeps running where nobody can see it.
    The evacuation's start on local is refused by QEMU's image lock on the shared
    disk; when h2 answers again, its running copy is the guest: the record
    follows it back and local's unused definition goes. At no moment does the
    guest run on both, and it never reboots."""
    cluster = start_cluster(tmp_path, hosts, evacuate_after=3.0)
    app, h2 = cluster.app, cluster.hosts["h2"]
    try:
        vm = create(app, "solo", state="running", host="h2")
        app.wait_console("solo", READY_LINE, BOOT_SECONDS)
        old_qemu = h2.qemu_pid(app.prefix + "solo")
        h2.kill_libvirtd()
        wait_for("evacuation tried", lambda: events(app, "solo", "evacuated"), 30)
        failed = wait_for("start refused", lambda: events(app, "solo", "operation-failed"), 60)
        assert any("lock" in m for m in failed), failed
        # h2 cannot be asked; on local the guest never executes (a retried start
        # may show a QEMU paused in its start-up, which the image lock then ends).
        assert cluster.running_on(vm["id"]) == []
        assert os.path.exists(f"/proc/{old_qemu}")

        h2.start_libvirtd()
        seen = set()

        def settled():
            where = cluster.running_on(vm["id"])
            seen.add(tuple(where))
            return where == ["h2"] and cluster.defined_on(vm["id"]) == ["h2"]

        wait_for("adopted on h2, local's copy gone", settled, 60, interval=0.1)
        assert all(len(where) <= 1 for where in seen), seen
        assert any("found running on h2" in m for m in events(app, "solo", "adopted"))
        assert events(app, "solo", "stale-copy-removed")
        view = app.api("GET", "/v1/vms/solo").json()
        assert view["host"] == "h2" and view["state"] == "running"
        assert os.path.exists(f"/proc/{old_qemu}")  # the very same QEMU: no reboot
        assert app.console("solo").count(BOOT_LINE) == 1
    finally:
        app.cleanup()
        cluster.remove_domains()


def test_live_migration_copies_the_disks_to_a_host_with_storage_of_its_own(tmp_path, hosts):
    """h2 gets a disk of its own: inside its namespace the appliance's home is
    an empty folder of h2's. Its VM files are made through libvirt; a live
    migration there or back copies the disks; the console is mirrored home."""
    cluster = start_cluster(tmp_path, hosts)
    app, h2 = cluster.app, cluster.hosts["h2"]
    private = h2.base / "own-disk"
    h2.exec("sh", "-c", f"mkdir -p {private} && mount --bind {private} {app.home}")
    try:
        patch_host(app, "h2", storage="h2-disk")
        port = free_port()
        vm = create(app, "roam", state="running", host="local",
                    network={"type": "user", "port_forwards": [{"host_port": port, "guest_port": 8000}]})
        app.wait_console("roam", READY_LINE, BOOT_SECONDS)
        here = app.home / "vms" / vm["id"] / "root.qcow2"
        there = f"{app.home}/vms/{vm['id']}/root.qcow2"
        assert here.exists() and h2.exec("test", "-e", there, check=False).returncode == 1

        resp = app.api("PUT", "/v1/vms/roam/host", json={"host": "h2"})
        assert resp.status_code == 200, resp.text
        assert cluster.active_on(vm["id"]) == ["h2"]
        assert any("(disks copied)" in m for m in events(app, "roam", "migrated"))
        assert h2.exec("test", "-s", there, check=False).returncode == 0  # on h2's own disk...
        assert not here.exists()  # ... and no longer here
        assert guest_answers(port)
        assert app.console("roam").count(BOOT_LINE) == 1

        # A reboot there: the new boot reaches the console through the mirror.
        assert app.api("PUT", "/v1/vms/roam/state", json={"state": "reboot"}).status_code == 200
        wait_for("second boot mirrored", lambda: app.console("roam").count(READY_LINE) == 2, BOOT_SECONDS)

        resp = app.api("PUT", "/v1/vms/roam/host", json={"host": "local"})
        assert resp.status_code == 200, resp.text
        assert cluster.active_on(vm["id"]) == ["local"] and here.exists()
        assert h2.exec("test", "-e", there, check=False).returncode == 1  # h2's copy removed
        assert guest_answers(port)
        assert app.console("roam").count(BOOT_LINE) == 2

        # Created on h2 directly: the image is uploaded to h2 once, the overlay made there.
        native = create(app, "native", state="running", host="h2")
        app.wait_console("native", READY_LINE, BOOT_SECONDS)
        assert h2.exec("test", "-s", f"{app.home}/vms/{native['id']}/root.qcow2", check=False).returncode == 0
        assert not (app.home / "vms" / native["id"] / "root.qcow2").exists()
        # Stopped, it moves offline: its disk files are copied as they are.
        assert app.api("PUT", "/v1/vms/native/state", json={"state": "stopped"}).status_code == 200
        native_there = f"{app.home}/vms/{native['id']}"
        digest = h2.exec("sha256sum", f"{native_there}/root.qcow2").stdout.split()[0]
        resp = app.api("PUT", "/v1/vms/native/host", json={"host": "local"})
        assert resp.status_code == 200, resp.text
        native_here = app.home / "vms" / native["id"] / "root.qcow2"
        assert hashlib.sha256(native_here.read_bytes()).hexdigest() == digest
        assert h2.exec("test", "-e", native_there, check=False).returncode == 1
        assert cluster.defined_on(native["id"]) == ["local"]
        assert app.api("PUT", "/v1/vms/native/state", json={"state": "running"}).status_code == 200
        wait_for("native boots at home", lambda: app.console("native").count(READY_LINE) == 2, BOOT_SECONDS)
        assert app.api("DELETE", "/v1/vms/native", params={"force": "true"}).status_code in (200, 202, 204)
    finally:
        app.cleanup()
        cluster.remove_domains()
        h2.exec("umount", str(app.home), check=False)


def test_a_controller_killed_mid_migration_finishes_it_after_restart(cluster):
    """SIGKILL while libvirt migrates: the operation runs again after the restart,
    finds the job libvirt was still doing (or its outcome), and the guest ends up
    running on exactly one host, without a reboot."""
    app = cluster.app
    vm = create(app, "mid", state="running", host="local")
    app.wait_console("mid", READY_LINE, BOOT_SECONDS)
    resp = app.api("PUT", "/v1/vms/mid/host", params={"wait": "false"}, json={"host": "h2", "bandwidth": 4})
    assert resp.status_code == 202, resp.text
    op_id = resp.json()["operation"]["id"]
    wait_for("under way", lambda: app.api("GET", f"/v1/operations/{op_id}").json()["status"] == "running", 30)
    time.sleep(1.0)
    app.kill()
    seen = {tuple(cluster.active_on(vm["id"]))}
    app.start()
    op = final_operation(app, op_id, 180, interval=0.3)
    assert op["status"] == "succeeded", (op["error"], app.log_text()[-3000:])
    after = app.api("GET", "/v1/vms/mid").json()
    assert after["host"] == "h2" and after["state"] == "running"
    seen.add(tuple(cluster.active_on(vm["id"])))
    assert cluster.active_on(vm["id"]) == ["h2"] and cluster.defined_on(vm["id"]) == ["h2"]
    assert app.console("mid").count(BOOT_LINE) == 1
