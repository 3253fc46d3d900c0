"""VMs in and out (issue 16): adopt a libvirt domain the appliance did not
create, and export a VM as KubeVirt manifests.

Adopt (`POST /v1/vms/adopt`, admins only: it takes over a domain of the host,
no project's, and references host files): the domain is read over a
read-only connection (virt/adopt_read.py), its XML made a spec or refused with
the reason (virt/adopt_xml.py), its disk files checked (virt/adopt_disks.py),
and then the VM is recorded as any create is (quota, placement on the
domain's host, events) with the domain's UUID as its id and the disks in the
CREATE operation's source. The controller puts the disks in the VM's folder
(a symlink to each file in place, or a copy) and its define finds the domain
by that UUID, renames it to the appliance's name and defines the appliance's
XML over it: from then on it is a VM like any other. A refusal changes nothing
(the domain is only read until the request is accepted).

Export (`GET /v1/vms/NAME/export?format=kubevirt`): appliance/kubevirt_export.py.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance import hosturi, kubevirt_export, placement
from appliance import spec as specs
from appliance.access.principal import caller
from appliance.errors import Conflict, Forbidden, Invalid, NotFound
from appliance.model import DesiredState
from appliance.model.cpu import HOST_LABEL
from appliance.paths import real_path
from appliance.service.base import ServiceBase
from appliance.service.restores import _body
from appliance.service.vms import initial_state
from appliance.store import Row
from appliance.virt import adopt_disks, adopt_read, adopt_xml, images

ADOPT_FIELDS = frozenset({"domain", "host", "name", "image", "copy_disks", "state"})
MAX_DOMAIN_NAME = 200
MIB = 1 << 20


class Adoption(ServiceBase):
    # The read of a stranger domain; a test hands in its own.
    read_domain: Callable[[str, str], adopt_read.Stranger] = staticmethod(adopt_read.fetch)

    if TYPE_CHECKING:  # the vms' part, beside this one in Service
        def get_vm(self, name: str) -> dict[str, Any]: ...
        def _record_new_vm(self, spec: dict[str, Any], initial: DesiredState,
                           wanted_host: str | None, source: dict[str, Any] | None = None,
                           origin: str = "", template: tuple[str, int] | None = None,
                           vm_id: str | None = None) -> Row: ...

    # -- adopt ---------------------------------------------------------------------------
    def adopt_vm(self, body: Any) -> tuple[dict[str, Any], Row]:
        body = _body(body, ADOPT_FIELDS)
        principal = caller()
        if not principal.is_admin:
            raise Forbidden(f"{principal.user} has the role {principal.role}: only an admin may "
                            "adopt a domain (it takes a host's domain and its files)", "role")
        domain = body.get("domain")
        if (not isinstance(domain, str) or not domain or len(domain) > MAX_DOMAIN_NAME
                or not domain.isprintable() or "/" in domain):
            raise Invalid("must be the name of a libvirt domain", "domain")
        copy = body.get("copy_disks", False)
        if not isinstance(copy, bool):
            raise Invalid("must be true or false", "copy_disks")
        asked = body.get("state", DesiredState.STOPPED.value)
        if asked not in (DesiredState.RUNNING, DesiredState.STOPPED):
            raise Invalid("must be running or stopped", "state")
        host = self._adoption_host(body.get("host"))
        refusal = hosturi.refused(host["uri"], self.config)
        if refusal:
            raise Conflict(f"host {host['name']}: {refusal}", "host")
        stranger = self.read_domain(host["uri"], domain)
        try:
            shape = adopt_xml.read(stranger.xml)
        except adopt_xml.Unrepresentable as err:
            raise Invalid(f"domain {domain} cannot be adopted: {err.reason}", "domain") from None
        adopt_read.check_takeable(stranger, domain)
        vm_id = _canonical_uuid(shape.uuid)
        if self.store.get_vm_by_id(vm_id) is not None:
            raise Conflict(f"domain {domain} is already a VM of this appliance", "domain")
        name = specs.validate_vm_name(body.get("name") or shape.name, "name")
        allowed = list(self.config.adopt_disk_dirs)
        refused = [os.path.realpath(self.config.home)]  # other VMs' disks, the store
        limit = self.config.max_image_bytes
        checked = [adopt_disks.check(disk, allowed, copy, tuple(refused), limit)
                   for disk in shape.disks]
        spec = self._adopted_spec(shape, name, checked, body.get("image"), host["name"])
        op = self._record_new_vm(
            spec, initial_state(asked, spec), host["name"], vm_id=vm_id,
            origin=f" by adopting libvirt domain {domain} on {host['name']}"
                   + (" (disks copied)" if copy else " (disks in place)"),
            source={"adopt": {"domain": domain, "copy": copy, "disks": [
                {"name": d.name, "path": d.path, "format": d.format, "chain": d.chain,
                 "allowed": allowed, "refused": refused, "max_bytes": limit}
                for d in checked]}})
        if shape.notes:
            self.store.add_event("adopted", "not carried over: " + "; ".join(shape.notes),
                                 self.store.get_vm_by_id(vm_id), op["id"])
        self.notify()
        return self.get_vm(name), op

    def _adoption_host(self, name: Any) -> Row:
        if name is None:
            hosts = self.store.list_hosts()
            if len(hosts) != 1:
                raise Invalid("this appliance has several hosts: name the domain's", "host")
            host = hosts[0]
        else:
            host = self.store.get_host(specs.validate_name(name, "host"))
        # The disk files are checked here: the host must see them at the same paths.
        if (host.get("storage") or placement.APPLIANCE_STORAGE) != placement.APPLIANCE_STORAGE:
            raise Conflict(f"host {host['name']} has storage of its own; adoption needs a host "
                           "that sees the appliance's folders", "host")
        return host

    def _adopted_spec(self, shape: adopt_xml.Shape, name: str,
                      disks: list[adopt_disks.CheckedDisk], image: Any, host: str
                      ) -> dict[str, Any]:
        spec: dict[str, Any] = {**shape.spec, "name": name,
                                "image": image or self._image_of(disks[0]),
                                "disks": [{"name": d.name, "size": d.virtual_size // MIB}
                                          for d in disks[1:]]}
        if (spec.get("cpu") or {}).get("mode") == "host-passthrough":
            spec["node_selector"] = {HOST_LABEL: host}  # the model's rule for passthrough
        return specs.validate(spec)

    def _image_of(self, root: adopt_disks.CheckedDisk) -> str:
        """The store's image the root disk is an overlay of, if it is; else the caller
        names one (every VM has a base image: its quota's root size, a rebuild)."""
        for image in self.store.list_images():
            stored = real_path(image["path"])
            if root.chain and stored is not None and str(stored) == root.chain[0]:
                return str(image["name"])
        raise Invalid("the root disk is not an overlay of an image of this appliance: name "
                      "the image it is closest to (its quota and a rebuild use it)", "image")

    # -- export --------------------------------------------------------------------------
    def export_vm(self, name: str, fmt: str | None = None, disk_url: str | None = None,
                  container_disk: str | None = None, cloud_init: str | None = None) -> str:
        """The VM as KubeVirt manifests (YAML)."""
        row = self.vm_row(name, with_xml=False)
        opts = kubevirt_export.options(fmt, disk_url, container_disk, cloud_init)
        documents, notes = kubevirt_export.manifests(row["spec"], self._root_bytes(row), opts)
        return kubevirt_export.to_yaml(
            documents, notes, f"{row['name']} exported by vm-appliance as KubeVirt manifests")

    def _root_bytes(self, row: Row) -> int:
        """The root disk's size: its file's, else its image's."""
        try:
            return images.qcow2_virtual_size(self.config.vm_dir(row["id"]) / "root.qcow2")
        except Exception:  # noqa: BLE001 - not here (another host's storage): the image's
            try:
                return self.store.image_virtual_size(row["spec"]["image"])
            except NotFound:
                return 0


def _canonical_uuid(value: str) -> str:
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise Invalid("the domain's UUID is not a UUID", "domain") from None
    return canonical
