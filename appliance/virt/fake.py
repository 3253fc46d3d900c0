"""A hypervisor in memory: every host's domains in one `FakeCloud`, reached
through `FakeDriver`s (Nova's virt/fake.py). For controller unit tests that
run in milliseconds: no libvirtd, no QEMU, no files on any host.

A test arranges the world directly (`cloud.host(uri).domains`, `up`) to
stage what a crash, a dead host or an interrupted migration leaves behind,
then lets the controller act on it through the same interface as libvirt.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.errors import Failed
from appliance.virt import cpu_xml, domain
from appliance.virt.driver import (
    DomainGone,
    DriverError,
    EventCallback,
    Guest,
    HostDriver,
    Listed,
    MigrationRequest,
    Unreachable,
)
from appliance.virt.fake_backups import FakeBackupMethods, live_agent_channel
from appliance.virt.fake_cpu import DEFAULT_CPU, FakeCpuMethods
from appliance.virt.fake_devices import FakeDeviceMethods, devices_at_boot
from appliance.virt.fake_hotplug import FakeHotplugMethods, boot
from appliance.virt.fake_networks import FakeNetwork, FakeNetworkMethods, default_networks
from appliance.virt.fake_saves import FakeSaveMethods
from appliance.virt.fake_snapshots import FakeSnapshotMethods
from appliance.virt.libvirt_devices import interface_macs

INVENTORY = {
    "arch": "x86_64",
    "cpu_model": "Fake",
    "guest_arches": ["x86_64"],
    "memory_mib": 16384,
    "cpus": 16,
    "mhz": 2000,
    "free_memory_bytes": 8 << 30,
    "hostname": "fake",
    "libvirt_version": 9000000,
}


@dataclasses.dataclass
class FakeDomain:
    uuid: str
    name: str
    instance_id: str
    xml: str = ""
    state: str = "stopped"  # running, paused, stopped, crashed
    reason: str = ""
    job: str | None = None  # "migration" while one runs from this domain
    # snapshot name -> libvirt's XML of it, parents first (fake_snapshots.py)
    snapshots: dict[str, str] = dataclasses.field(default_factory=dict)
    current_snapshot: str | None = None
    checkpoints: list[str] = dataclasses.field(default_factory=list)  # libvirt's records
    bitmaps: set[str] = dataclasses.field(default_factory=set)  # in the disks (fake_backups.py)
    allocated: int = 1 << 20  # bytes the writable disks take
    live: dict = dataclasses.field(default_factory=dict)  # running vCPUs/memory (fake_hotplug.py)
    saved: bool = False  # holds a managed save image (fake_saves.py): shown "suspended"
    live_devices: dict[str, dict] | None = None  # the running domain's disks (fake_devices.py)
    live_nics: list[str] | None = None  # the running domain's NICs' MACs (fake_devices.py)
    # arrived paused by migration on a QEMU before 10.0: its disks stay inactive until it
    # runs; its next migration crashes it (bdrv_inactivate_recurse), snapshots are refused
    disks_inactive: bool = False


@dataclasses.dataclass
class FakeHost:
    uri: str
    up: bool = True
    domains: dict[str, FakeDomain] = dataclasses.field(default_factory=dict)
    volumes: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # vm id -> volume names
    # (vm id, volume name) -> virtual size, for the disks made on a host with storage of its own
    volume_sizes: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    reservations: list[dict] = dataclasses.field(default_factory=list)
    uploads: dict[str, bytes] = dataclasses.field(default_factory=dict)  # "vm id/name" -> bytes
    # what the controller asked, in order
    calls: list[str] = dataclasses.field(default_factory=list)
    cpu: str | None = DEFAULT_CPU  # its CPU definition (fake_cpu.py)
    hugepages_mib: int = 0
    # libvirt network name -> its definition and state (fake_networks.py)
    networks: dict[str, FakeNetwork] = dataclasses.field(default_factory=default_networks)
    bridges: set[str] = dataclasses.field(default_factory=lambda: {"br0"})  # host bridges
    filters: dict[str, str] = dataclasses.field(default_factory=dict)  # nwfilter name -> XML
    qemu_version: int = 10_000_000  # virConnectGetVersion's; before 10.0: disks_inactive above


class FakeCloud:
    """Every fake host, by URI. `hold_migrations` makes a migration wait until
    its job is aborted (or `release_migrations()`), to test a cancel."""

    def __init__(self) -> None:
        self.hosts: dict[str, FakeHost] = {}
        self.lock = threading.RLock()
        self.hold_migrations = False
        self.on_migration_started: Callable[[], None] | None = None  # runs in the migrating thread
        self.hold_backups = False  # backup jobs run until aborted or this is False again
        self.guest_agents: set[str] = set()  # VM ids whose guest has an agent (fs_freeze)
        self._release = threading.Event()

    def host(self, uri: str) -> FakeHost:
        with self.lock:
            host = self.hosts.get(uri)  # not setdefault: a FakeHost (and its networks) per call
            if host is None:
                host = self.hosts[uri] = FakeHost(uri)
            return host

    def drivers(self) -> Callable[[str, str, EventCallback], FakeDriver]:
        return lambda name, uri, on_event: FakeDriver(self, name, uri, on_event)

    def release_migrations(self) -> None:
        self._release.set()

    def where(self, vm_id: str, active_only: bool = True) -> list[str]:
        """URIs of the hosts that hold (active) copies of the VM's domain."""
        with self.lock:
            return [h.uri for h in self.hosts.values() if vm_id in h.domains
                    and (not active_only or h.domains[vm_id].state in ("running", "paused"))]


def _shown(dom: FakeDomain) -> tuple[str, str]:
    """A domain's (state, reason) as libvirt shows it: a managed save is suspended."""
    return ("suspended", "saved") if dom.saved else (dom.state, dom.reason)


class FakeGuest(FakeSnapshotMethods, FakeBackupMethods, FakeHotplugMethods, FakeSaveMethods,
                FakeDeviceMethods, Guest):
    def __init__(self, driver: FakeDriver, vm_id: str):
        self.driver = driver
        self.uuid = vm_id

    def _dom(self) -> FakeDomain:
        host = self.driver.fake_host()
        dom = host.domains.get(self.uuid)
        if dom is None:
            raise DomainGone(f"no domain with uuid {self.uuid}", "the domain is gone")
        return dom

    def _set(
        self,
        call: str,
        state: str,
        reason: str,
        unless: tuple[str, ...] = (),
        need: tuple[str, ...] = (),
    ) -> None:
        with self.driver.cloud.lock:
            dom = self._dom()
            self.driver.fake_host().calls.append(f"{call} {self.uuid}")
            if need and dom.state not in need:
                raise DriverError(f"{call}: domain is {dom.state}", f"the domain is {dom.state}")
            if dom.state in unless:
                raise DriverError(
                    f"{call}: domain is already {dom.state}", f"the domain is already {dom.state}"
                )
            dom.state, dom.reason = state, reason

    def name(self) -> str:
        return self._dom().name

    def state(self) -> tuple[str, str]:
        return _shown(self._dom())

    def is_active(self) -> bool:
        return self._dom().state in ("running", "paused")

    def xml(self) -> str:
        dom = self._dom()
        if dom.state not in ("running", "paused"):
            return dom.xml
        return live_agent_channel(dom.xml, self.uuid in self.driver.cloud.guest_agents)

    def start(self) -> None:  # a managed save is restored, as libvirt's create()
        dom = self._dom()
        restored = dom.saved
        self._set("start", "running", "restored" if restored else "booted",
                  unless=("running", "paused"))
        if not restored:  # a restored guest has the vCPUs, memory and devices it was saved with
            boot(dom)
            dom.live_devices = devices_at_boot(dom.xml)  # a boot plugs what the definition has
            dom.live_nics = interface_macs(dom.xml)
        dom.saved = False

    def destroy(self) -> None:  # as libvirt_driver's: a guest already off is left as it is
        if self._dom().state not in ("running", "paused"):
            self.driver.fake_host().calls.append(f"destroy {self.uuid}")
            return
        self._set("destroy", "stopped", "destroyed")

    def shutdown(self) -> None:  # a guest that powers off at once
        self._set("shutdown", "stopped", "shutdown", need=("running",))

    def suspend(self) -> None:
        self._set("suspend", "paused", "user", need=("running",))

    def resume(self) -> None:
        self._set("resume", "running", "unpaused", need=("paused",))
        self._dom().disks_inactive = False  # QEMU's `cont` activates them

    def undefine(self, with_metadata: bool = False) -> None:
        with self.driver.cloud.lock:
            dom = self._dom()
            if dom.saved and not with_metadata:  # as libvirt
                raise DriverError("Refusing to undefine while domain managed save image exists",
                                  "the domain has a managed save image")
            if dom.snapshots and not with_metadata and dom.state not in ("running", "paused"):
                raise DriverError(f"cannot delete inactive domain with {len(dom.snapshots)} "
                                  "snapshots", "the domain has snapshots")
            self.driver.fake_host().calls.append(f"undefine {self.uuid}")
            del self.driver.fake_host().domains[self.uuid]

    def interface_addresses(self, source: str) -> list[dict] | None:
        return None

    def apply_port_forwards(self, forwards: list[dict]) -> None:
        pass

    def migrate(self, request: MigrationRequest) -> None:
        cloud = self.driver.cloud
        with cloud.lock:
            dom = self._dom()
            if dom.snapshots:  # as libvirt 9.0
                raise DriverError(f"cannot migrate domain with {len(dom.snapshots)} snapshots",
                                  f"cannot migrate domain with {len(dom.snapshots)} snapshots")
            dest = cloud.host(request.dest_uri)
            if not dest.up:
                raise DriverError(
                    "unable to connect to the target", "unable to connect to the target"
                )
            if dom.disks_inactive:  # QEMU 7.2 asserts: the source's QEMU is gone
                dom.state, dom.reason = "crashed", "crashed"
                raise DriverError("operation failed: domain is not running",
                                  "domain is not running")
            dom.job = "migration"
            # libvirt's checkpoint records stay behind; the bitmaps travel in the disks
            incoming = dataclasses.replace(dom, state="paused", reason="migration", job=None,
                                           snapshots={}, current_snapshot=None, checkpoints=[],
                                           bitmaps=set(dom.bitmaps))
            if request.pins is not None:  # libvirt's VIR_MIGRATE_PARAM_DEST_XML
                incoming.xml = cpu_xml.repin(dom.xml, *dataclasses.astuple(request.pins)) \
                    or dom.xml
            dest.domains[self.uuid] = incoming
        if cloud.on_migration_started is not None:
            cloud.on_migration_started()
        if cloud.hold_migrations:
            cloud._release.wait(10)
        with cloud.lock:
            if dom.job == "aborted":
                dom.job = None
                dest.domains.pop(self.uuid, None)  # the target tears down the incoming QEMU
                raise DriverError("operation aborted: migration out job: canceled by client",
                                  "operation aborted: migration out job: canceled by client")
            dom.job = None
            incoming.state, incoming.reason = dom.state, "migrated"
            incoming.disks_inactive = dom.state == "paused" and dest.qemu_version < 10_000_000
            self.driver.fake_host().domains.pop(self.uuid, None)  # UNDEFINE_SOURCE

    # As libvirt_driver's: a domain gone (undefined on the source at a migration's
    # end, while the controller polls its progress) has no job, and no error.
    def job_running(self) -> bool:
        dom = self.driver.fake_host().domains.get(self.uuid)
        return dom is not None and dom.job is not None

    def job_progress(self) -> tuple[int, int] | None:
        dom = self.driver.fake_host().domains.get(self.uuid)
        return (50, 100) if dom is not None and dom.job else None

    def abort_job(self) -> None:
        with self.driver.cloud.lock:
            dom = self._dom()
            if dom.job is None:
                raise DriverError(
                    "no job is active on the domain", "no job is active on the domain"
                )
            dom.job = "aborted"
        self.driver.cloud._release.set()

    def monitor_command(self, command: str) -> str:
        self._dom()
        return ""

    def agent_command(self, command: str, timeout: int) -> str:
        self._dom()
        raise DriverError("Guest agent is not responding", "Guest agent is not responding")


class FakeDriver(FakeCpuMethods, FakeNetworkMethods, HostDriver):
    def __init__(self, cloud: FakeCloud, name: str, uri: str, on_event: EventCallback):
        self.cloud = cloud
        self.name = name
        self.uri = uri
        self.on_event = on_event
        self._connected = False

    def fake_host(self) -> FakeHost:
        host = self.cloud.host(self.uri)
        if not host.up:
            self._connected = False
            raise Unreachable(
                f"{self.uri} is down",
                "the connection failed (refused, no such socket, or no route)",
            )
        return host

    @property
    def connected(self) -> bool:
        return self._connected and self.cloud.host(self.uri).up

    def connect(self) -> None:
        self.fake_host()
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def inventory(self) -> dict:
        self.fake_host()
        return dict(INVENTORY)

    def paused_arrivals_keep_disks_inactive(self) -> bool:
        return self.fake_host().qemu_version < 10_000_000

    def lookup(self, vm_id: str) -> Guest | None:
        return FakeGuest(self, vm_id) if vm_id in self.fake_host().domains else None

    def list_ours(self, instance_id: str) -> dict[str, Listed]:
        with self.cloud.lock:
            host = self.fake_host()
            host.calls.append("list")
            return {vm_id: Listed(FakeGuest(self, vm_id), *_shown(dom))
                    for vm_id, dom in host.domains.items() if dom.instance_id == instance_id}

    def define(self, plan: domain.DomainPlan) -> Guest:
        with self.cloud.lock:
            host = self.fake_host()
            host.calls.append(f"define {plan.vm_id}")
            dom = host.domains.get(plan.vm_id)
            if (
                dom is not None
                and dom.name != plan.domain_name
                and dom.state in ("running", "paused")
            ):
                raise Failed("cannot rename a running domain")
            # As libvirt: a domain's name is unique on its host.
            for other in host.domains.values():
                if other.name == plan.domain_name and other.uuid != plan.vm_id:
                    raise Failed(f"domain '{plan.domain_name}' already exists with uuid "
                                 f"{other.uuid}")
            xml = domain.build(plan)
            if dom is None:
                host.domains[plan.vm_id] = FakeDomain(
                    plan.vm_id, plan.domain_name, plan.instance_id, xml
                )
            else:
                dom.name, dom.xml = plan.domain_name, xml
        return FakeGuest(self, plan.vm_id)

    def forget(self, vm_id: str) -> None:
        pass

    def check_ports_free(self, forwards: list[dict]) -> None:
        pass

    def reserve_address(self, store, row: dict) -> None:
        self.fake_host()

    def release_address(self, store, row: dict) -> None:
        self.fake_host()

    def images_space(self) -> tuple[int, int]:
        return 100 << 30, 90 << 30

    def ensure_vm_files(
        self, plan: domain.DomainPlan, image: dict, disks: list[tuple[str, int]]
    ) -> None:
        host = self.fake_host()
        host.volumes.setdefault(plan.vm_id, set()).update(
            [plan.root_disk.name, *(plan.disk_path(name).name for name, _ in disks)])
        host.volume_sizes[(plan.vm_id, plan.root_disk.name)] = int(image.get("virtual_size") or 0)
        for name, size in disks:
            host.volume_sizes[(plan.vm_id, plan.disk_path(name).name)] = size

    def prepare_incoming_disks(
        self, plan: domain.DomainPlan, disks: list[tuple[Path, int]]
    ) -> None:
        host = self.fake_host()
        host.volumes[plan.vm_id] = {path.name for path, _ in disks}
        for path, size in disks:
            host.volume_sizes[(plan.vm_id, path.name)] = size

    def upload_image(self, path: Path) -> None:
        self.fake_host()

    def download_volume(self, plan: domain.DomainPlan, name: str, dest: Path) -> bool:
        host = self.fake_host()
        if name not in host.volumes.get(plan.vm_id, set()):
            return False
        host.calls.append(f"download {plan.vm_id} {name}")
        written = plan.vm_dir / name  # a backup job's file (fake_backups.py writes it there)
        dest.write_bytes(written.read_bytes() if written.is_file() else b"")
        return True

    def upload_volume(self, plan: domain.DomainPlan, name: str, source: Path) -> None:
        host = self.fake_host()
        host.calls.append(f"upload {plan.vm_id} {name}")
        host.volumes.setdefault(plan.vm_id, set()).add(name)
        host.uploads[f"{plan.vm_id}/{name}"] = source.read_bytes()

    def volume_names(self, plan: domain.DomainPlan) -> list[str]:
        return sorted(self.fake_host().volumes.get(plan.vm_id, set()))

    def grow_volume(self, plan: domain.DomainPlan, name: str, size_bytes: int) -> None:
        host = self.fake_host()
        host.calls.append(f"grow {plan.vm_id} {name}")
        key = (plan.vm_id, name)
        host.volume_sizes[key] = max(host.volume_sizes.get(key, 0), size_bytes)

    def delete_volumes(self, plan: domain.DomainPlan, prefix: str) -> list[str]:
        host = self.fake_host()
        names = sorted(n for n in host.volumes.get(plan.vm_id, set()) if n.startswith(prefix))
        for name in names:
            host.volumes[plan.vm_id].discard(name)
            (plan.vm_dir / name).unlink(missing_ok=True)
        host.calls.append(f"delete-volumes {plan.vm_id} {prefix}")
        return names

    def remove_vm_storage(self, vm_id: str) -> None:
        self.fake_host().volumes.pop(vm_id, None)

    def read_console(self, vm_id: str, offset: int) -> tuple[int, bytes] | None:
        return None
