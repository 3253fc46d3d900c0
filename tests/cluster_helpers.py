"""Two real libvirt hosts under one real `vmctl serve`, for the cluster tests
and the migration benchmark.

The appliance's first host ("local") is one private libvirtd from
packaging/local-hosts; the second ("h2") is added through the REST API, as an
operator would. The disks are in the appliance's home, a path both hosts see:
shared storage. `remove_domains` takes every domain with the appliance's
prefix off both hosts.
"""
from __future__ import annotations

from pathlib import Path

import libvirt

from appliance.config import Config
from tests.appliance_process import Appliance, remove_domains, wait_for
from tests.local_hosts import LocalHost


class Cluster:
    def __init__(self, app: Appliance, hosts: tuple[LocalHost, LocalHost]):
        self.app = app
        self.hosts = {"local": hosts[0], "h2": hosts[1]}

    def conn(self, host: str) -> libvirt.virConnect:
        return libvirt.open(self.hosts[host].uri)

    def _domains(self, vm_id: str, running: bool = False) -> dict[str, bool]:
        """host -> whether this VM's domain is active (or, with `running`, its
        guest executing: not paused, e.g. in a start that QEMU then refuses)
        there, for the hosts whose libvirtd answers and that have it defined."""
        found = {}
        for name, host in self.hosts.items():
            try:
                conn = libvirt.open(host.uri)
            except libvirt.libvirtError:
                continue  # a dead host shows nothing
            try:
                dom = conn.lookupByUUIDString(vm_id)
                found[name] = dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING if running else bool(dom.isActive())
            except libvirt.libvirtError:
                pass
            finally:
                conn.close()
        return found

    def active_on(self, vm_id: str) -> list[str]:
        """The reachable hosts where this VM's domain is running, from libvirt itself."""
        return [name for name, active in self._domains(vm_id).items() if active]

    def running_on(self, vm_id: str) -> list[str]:
        """The reachable hosts where this VM's guest executes."""
        return [name for name, running in self._domains(vm_id, running=True).items() if running]

    def defined_on(self, vm_id: str) -> list[str]:
        return list(self._domains(vm_id))

    def remove_domains(self) -> None:
        for host in self.hosts.values():
            try:
                host.start_libvirtd()
                conn = libvirt.open(host.uri)
            except Exception:  # noqa: BLE001 - cleanup does what it can
                continue
            remove_domains([d for d in conn.listAllDomains() if d.name().startswith(self.app.prefix)])
            for pool in conn.listAllStoragePools():  # storage of a host's own (see appliance/virt/storage.py)
                if pool.name().startswith("vmappliance-"):
                    try:
                        if pool.isActive():
                            pool.destroy()
                        pool.undefine()
                    except libvirt.libvirtError:
                        pass
            conn.close()


def final_operation(app: Appliance, op_id: str, timeout: float, interval: float = 0.2) -> dict:
    """The operation, over REST, once it succeeded, failed or was cancelled."""
    def final() -> dict | None:
        op = app.api("GET", f"/v1/operations/{op_id}").json()
        return op if op["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_for(f"operation {op_id} final", final, timeout, interval)


def backed_up(app: Appliance, vm: str, timeout: float = 300) -> tuple[dict, dict]:
    """A backup of vm over REST followed to its success: (the operation, the backup)."""
    resp = app.api("POST", f"/v1/vms/{vm}/backups", params={"wait": "false"}, json={})
    assert resp.status_code == 202, resp.text
    op = final_operation(app, resp.json()["operation"]["id"], timeout, interval=0.5)
    assert op["status"] == "succeeded", (op["kind"], op["error"])
    return op, app.api("GET", f"/v1/backups/{op['params']['backup']}").json()


def add_backup_target(app: Appliance, path: Path) -> Path:
    """A backup target `nas` in a new folder at path; path."""
    path.mkdir(mode=0o700)
    resp = app.api("POST", "/v1/backup-targets", json={"name": "nas", "path": str(path)})
    assert resp.status_code == 201, resp.text
    return path


def create_with_data_disk(app: Appliance, name: str, host: str) -> dict:
    """A 128 MiB VM on host with a 64 MiB data disk (/dev/vdb), not waited for."""
    resp = app.api("POST", "/v1/vms", json={"name": name, "host": host, "memory": "128M",
                                            "disks": [{"name": "data", "size": "64M"}]})
    assert resp.status_code == 201, resp.text
    return resp.json()


def start_cluster(tmp_path, hosts, **config) -> Cluster:
    """An appliance on host one, with host two added over REST. `config`
    overrides Config fields (evacuate_after, placement...) through the
    HOME/config.json that `vmctl serve` reads."""
    home = tmp_path / "home"
    home.mkdir()
    Config(home=home, **config).save()
    app = Appliance(home, libvirt_uri=hosts[0].uri)
    cluster = Cluster(app, hosts)
    try:
        app.start()
        # Both libvirtds run on this machine: migrations go over 127.0.0.1.
        resp = app.api("PATCH", "/v1/hosts/local", json={"migration_address": "127.0.0.1"})
        assert resp.status_code == 200, resp.text
        resp = app.api("POST", "/v1/hosts", json={"name": "h2", "uri": hosts[1].uri,
                                                  "migration_address": "127.0.0.1"})
        assert resp.status_code == 201, resp.text
        wait_for("h2 up", lambda: app.api("GET", "/v1/hosts/h2").json()["up"], 30)
    except BaseException:
        app.cleanup()
        cluster.remove_domains()
        raise
    return cluster
