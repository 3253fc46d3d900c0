"""A VM's files and definition: disks, seed and domain, either in the
appliance's folders (hosts that see them) or on the host's own storage
(through its driver); and the copies a move between storages needs."""
from __future__ import annotations

import json
from pathlib import Path

from appliance import placement
from appliance.access.principal import DEFAULT_PROJECT
from appliance.controller import cpu_pinning, disk_hotplug, firewall, networks
from appliance.controller.consoles import mirror_key
from appliance.controller.context import MIB, Context, HostLink
from appliance.controller.firmware_files import carry_file, copy_nvram
from appliance.controller.snapshot_metadata import SnapshotMetadata
from appliance.errors import Failed, NotFound
from appliance.model import hotplug
from appliance.store import Store
from appliance.virt import cloudinit, domain, images
from appliance.virt.driver import Guest

# The desired states in which a VM's guest runs (its network with it).
RUNS = frozenset({"running", "paused"})


def domain_name(prefix: str, row: dict) -> str:
    """The libvirt domain's name: names are unique per project, so a project's
    VMs are `PROJECT.NAME` ('.' is in neither: both are DNS labels); the
    default project's keep their plain names, as before projects."""
    project = row.get("project") or DEFAULT_PROJECT
    if project == DEFAULT_PROJECT:
        return prefix + row["name"]
    return f"{prefix}{project}.{row['name']}"


def seed_nics(store: Store, row: dict) -> list[dict]:
    """The VM's NICs for network_data.json (a config drive's, the metadata service's),
    the first (network) and the further ones (networks): a fixed IP with the subnet of
    the appliance's network it is on, user mode's fixed layout, or DHCP."""
    nic = row["spec"].get("network") or {}
    out = []
    if nic.get("type") not in (None, "none") and row.get("mac"):
        net = networks.appliance_network(store, row)
        out.append(cloudinit.nic_config(row["mac"], nic, (net or {}).get("subnet")))
    project = row.get("project") or DEFAULT_PROJECT
    for extra in row["spec"].get("networks") or []:
        if extra.get("mac"):
            net = store.find_network(project, extra["network"])
            out.append(cloudinit.nic_config(extra["mac"], {"type": "network", **extra},
                                            (net or {}).get("subnet")))
    return out


class VmFiles:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.direct_io = images.supports_direct_io(ctx.config.vms_dir)
        self.snapshot_metadata = SnapshotMetadata(ctx)

    def plan(self, row: dict) -> domain.DomainPlan:
        vm_dir = self.ctx.config.vm_dir(row["id"])
        return domain.DomainPlan(
            vm_id=row["id"],
            domain_name=domain_name(self.ctx.config.domain_prefix, row),
            vm_name=row["name"],
            instance_id=self.ctx.instance_id,
            spec=self._with_maxima(networks.resolved(self.ctx.store, row)),
            domain_type=self.ctx.domain_type,
            vm_dir=vm_dir,
            mac=row["mac"],
            seed_iso=vm_dir / "cidata.iso",
            direct_io=self.direct_io,
            cdrom_files=disk_hotplug.iso_files(self.ctx, row["spec"]),
            nic_filters=firewall.filtered_nics(self.ctx.store, row),  # issue 15
        )

    def _with_maxima(self, row: dict) -> dict:
        """The spec with max_cpus and max_memory resolved against the VM's host
        (model/hotplug.py), for the domain XML."""
        try:
            host = self.ctx.store.get_host(row["host"]) if row.get("host") else None
        except NotFound:
            host = None
        info = (host or {}).get("info") or {}
        return hotplug.with_maxima(row["spec"], info.get("cpus"), info.get("memory_mib"))

    def storage_of(self, host: str | None) -> str:
        if host is None:  # not placed yet: the appliance's own folders
            return placement.APPLIANCE_STORAGE
        try:
            return self.ctx.store.get_host(host)["storage"] or placement.APPLIANCE_STORAGE
        except NotFound:  # an unknown host has no storage of its own
            return placement.APPLIANCE_STORAGE

    def own_storage(self, host: str | None) -> bool:
        """The host does not see the appliance's folders: its VM files are made through its
        driver."""
        return self.storage_of(host) != placement.APPLIANCE_STORAGE

    def _write_seed(self, row: dict, plan: domain.DomainPlan) -> None:
        plan.vm_dir.mkdir(parents=True, exist_ok=True)
        assert plan.seed_iso is not None  # noqa: S101 - narrows the type; plan() always sets it
        cloud_init = row["spec"]["cloud_init"]
        cloudinit.write_seed_iso(
            plan.seed_iso,
            # a rebuild gives a new instance id (vms.instance_id): cloud-init runs again
            cloudinit.seed_files(row.get("instance_id") or row["id"], row["name"], cloud_init,
                                 json.loads(row.get("public_keys") or "{}"),  # service/keys.py
                                 seed_nics(self.ctx.store, row), row["spec"].get("labels")),
            cloudinit.volume_label(cloud_init),  # cidata, or config-2 (issue 15)
        )

    def ensure_defined(self, row: dict, host: str | None = None) -> Guest:
        """Disks, seed and definition (on the VM's host, or `host`) as the spec says; safe to
        repeat."""
        link = self.ctx.links.connected(host or row["host"])
        plan = cpu_pinning.fill(self.ctx, row, link.name, self.plan(row))  # CPU model, pins
        self._write_seed(row, plan)
        if self.own_storage(link.name):
            image = self.ctx.store.get_image(row["spec"]["image"])
            link.driver.ensure_vm_files(
                plan, image, [(d["name"], d["size"] * MIB) for d in row["spec"]["disks"]]
            )
            for iso in filter(None, plan.cdrom_files):  # install media, at the same path there
                link.driver.upload_image(iso)
        else:
            self._ensure_files_here(row, plan)
        # Fixed IPs, which KubeVirt lacks: the network's DHCP server gives this VM's MAC its
        # address.
        # Its network (issue 15): the appliance's defined there first, for the reservation,
        # and running if the VM is meant to (a migration's target: the guest arrives running).
        networks.prepare(self.ctx, link.driver, link.name, row,
                         start=row["desired_state"] in RUNS, check_unmanaged=False)
        link.driver.reserve_address(self.ctx.store, networks.resolved(self.ctx.store, row))
        # Its network filter (issue 15) before the domain that references it; redefined
        # here by every update, which a running VM's NICs take at once.
        firewall.prepare(self.ctx.store, link.driver, row)
        guest = link.driver.define(plan)
        # A running VM's disks change live (disk_hotplug.APPLIERS); a stopped one's files
        # here, on its own host only (another's define is a move's, its source untouched).
        if (host is None or host == row["host"]) and not guest.is_active():
            disk_hotplug.grow_and_prune_stopped(self.ctx, link, plan, row,
                                                self.own_storage(link.name))
        # A host whose libvirt lacks the VM's snapshots (a first define there) gets them back.
        self.snapshot_metadata.restore(guest, row["id"])
        return guest

    def _ensure_files_here(self, row: dict, plan: domain.DomainPlan) -> None:
        if not plan.root_disk.exists():
            image = self.ctx.store.get_image(row["spec"]["image"])
            tmp = plan.root_disk.with_suffix(".tmp")
            images.create_overlay(image["path"], image["format"], tmp)
            tmp.replace(plan.root_disk)  # a disk is there whole or not at all
        for disk in row["spec"]["disks"]:
            path = plan.disk_path(disk["name"])
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                images.create_blank(tmp, disk["size"])
                tmp.replace(path)

    def writable_disks(self, row: dict, plan: domain.DomainPlan) -> list[tuple[Path, int]]:
        """(path, size in bytes) of each disk a live migration copies."""
        image = self.ctx.store.get_image(row["spec"]["image"])
        return [(plan.root_disk, image["virtual_size"])] + [
            (plan.disk_path(d["name"]), d["size"] * MIB) for d in row["spec"]["disks"]]

    def prepare_copy(self, row: dict, dest: HostLink) -> None:
        """Empty disks of the same sizes on the target, which the migration fills
        (libvirt's NON_SHARED_DISK: the whole chain is copied into them), and the
        seed, which it does not copy (read-only)."""
        plan = self.plan(row)
        self._write_seed(row, plan)
        self.ctx.store.delete_meta(mirror_key(row["id"], dest.name))
        if self.own_storage(dest.name):
            dest.driver.prepare_incoming_disks(plan, self.writable_disks(row, plan))
            for iso in filter(None, plan.cdrom_files):  # read-only media: not copied, uploaded
                dest.driver.upload_image(iso)
        else:
            for path, size in self.writable_disks(row, plan):
                path.unlink(missing_ok=True)
                images.create_blank_bytes(path, size)

    def copy_disks(self, row: dict, source: HostLink, dest: HostLink) -> None:
        """An offline move between storages: each disk file, as it is (a root
        overlay keeps its backing file, which the target gets too), through a
        local temporary file when either end is a host's own storage."""
        plan = self.plan(row)
        plan.vm_dir.mkdir(parents=True, exist_ok=True)
        to_host = self.own_storage(dest.name)
        if to_host:  # the overlay's backing file, at the same path
            dest.driver.upload_image(Path(self.ctx.store.get_image(row["spec"]["image"])["path"]))
        from_host = self.own_storage(source.name)
        for path, _size in self.writable_disks(row, plan):
            if not carry_file(plan, source, dest, path, from_host, to_host):
                raise Failed(f"{path.name} is missing on {source.name}")
        copy_nvram(plan, source, dest, from_host, to_host)  # UEFI's, if any

    def drop_copy(self, row: dict, source: HostLink | None) -> None:
        """After a copying migration: the disks left behind on the source (kept
        on a host that cannot be reached: its storage is its own)."""
        if source is None:
            return
        if self.own_storage(source.name):
            if source.connected:
                source.driver.remove_vm_storage(row["id"])
        else:
            for path, _size in self.writable_disks(row, self.plan(row)):
                path.unlink(missing_ok=True)
