"""Service rules for a VM's network that need the store or the config (spec.py is pure).

- A MAC belongs to one VM of the appliance: two NICs with one MAC confuse
  switches, ARP and DHCP, and a DHCP reservation is keyed by the MAC. The
  checks run inside the caller's transaction (BEGIN IMMEDIATE), so two creates
  racing for one MAC cannot both pass.
- Port forwards are bound by QEMU as root: host ports below 1024 only when the
  admin allows them (Config.allow_privileged_ports).
"""
from __future__ import annotations

import hashlib
import uuid

from appliance.access.principal import shown_vm_name
from appliance.errors import Conflict, Invalid
from appliance.store import Store
from appliance.virt.portforward import PRIVILEGED_BELOW


def _derived_mac(vm_id: str, attempt: int) -> str:
    # Locally administered range QEMU/libvirt use (52:54:00), stable per VM.
    raw = (
        uuid.UUID(vm_id).bytes
        if attempt == 0
        else hashlib.sha256(f"{vm_id}/{attempt}".encode()).digest()
    )
    return f"52:54:00:{raw[0]:02x}:{raw[1]:02x}:{raw[2]:02x}"


def _holder(store: Store, mac: str, vm_id: str) -> dict | None:
    """The other VM that has this MAC, if any."""
    return store.vm_by_mac(mac, excluding=vm_id)


def _refuse_taken(store: Store, mac: str, vm_id: str) -> None:
    holder = _holder(store, mac, vm_id)
    if holder is not None:
        owner = shown_vm_name(holder.get("project"), holder["name"])
        raise Conflict(f"MAC {mac} is already held by {owner}", "network.mac")


def mac_for_new_vm(store: Store, spec: dict, vm_id: str) -> str:
    """The MAC a new VM gets: the one its spec asks for if no other VM has it,
    else one derived from its id that no other VM has."""
    asked = spec["network"].get("mac")
    if asked:
        _refuse_taken(store, asked, vm_id)
        return asked
    attempt = 0
    while _holder(store, mac := _derived_mac(vm_id, attempt), vm_id) is not None:
        attempt += 1
    return mac


def fill_nic_macs(store: Store, spec: dict, vm_id: str, first_mac: str,
                  old_spec: dict | None = None) -> None:
    """Each further NIC (spec networks, model/nics.py) with its MAC, in place: the one
    asked for if no other VM has it; else the one the NIC had on that network before
    (old_spec); else one derived from the VM's id and the network, free everywhere."""
    had = {nic["network"]: nic.get("mac") for nic in (old_spec or {}).get("networks") or []}
    nics = spec.get("networks") or []
    taken = {first_mac} | {nic["mac"] for nic in nics if nic.get("mac")}
    for i, nic in enumerate(nics):
        if nic.get("mac"):
            if (owner := _holder(store, nic["mac"], vm_id)) is not None:
                raise Conflict(f"MAC {nic['mac']} is already held by "
                               f"{shown_vm_name(owner.get('project'), owner['name'])}",
                               f"networks[{i}].mac")
            continue
        mac = had.get(nic["network"])
        attempt = 0
        while not mac or mac in taken or _holder(store, mac, vm_id) is not None:
            raw = hashlib.sha256(f"{vm_id}/nic/{nic['network']}/{attempt}".encode()).digest()
            mac, attempt = f"52:54:00:{raw[0]:02x}:{raw[1]:02x}:{raw[2]:02x}", attempt + 1
        nic["mac"] = mac
        taken.add(mac)


def mac_after_update(store: Store, row: dict, new_spec: dict) -> str:
    """The VM's MAC after a spec change: a new one the spec asks for, if free;
    otherwise the one it has (a VM keeps its MAC when the field is dropped)."""
    asked = new_spec["network"].get("mac")
    if not asked or asked == row["mac"]:
        return row["mac"]
    _refuse_taken(store, asked, row["id"])
    return asked


def api_port(listen: str | None) -> int | None:
    """The TCP port of the API's HOST:PORT (config listen), or None."""
    port = (listen or "").rpartition(":")[2]
    return int(port) if port.isdigit() else None


def check_forward_ports(new_spec: dict, old_spec: dict | None, allow_privileged: bool,
                        listen: str | None = None) -> None:
    """Refuse a new forward of a host port below 1024 unless the admin allows it, and
    a new TCP forward of the API's own port (listen) on any address: the controller
    starts VMs before the API binds, so QEMU could take the port at the next start and
    receive every client's bearer token. Forwards a VM already had are left alone."""
    before = {(f["protocol"], f["host_address"], f["host_port"])
              for f in ((old_spec or {}).get("network") or {}).get("port_forwards", [])}
    own = api_port(listen)
    for i, fwd in enumerate(new_spec["network"].get("port_forwards", [])):
        key = (fwd["protocol"], fwd["host_address"], fwd["host_port"])
        if key in before:
            continue
        if fwd["protocol"] == "tcp" and fwd["host_port"] == own:
            raise Invalid(f"host port {own} is the appliance's API port (config listen)",
                          f"network.port_forwards[{i}].host_port")
        if fwd["host_port"] < PRIVILEGED_BELOW and not allow_privileged:
            raise Invalid(
                f"host ports below {PRIVILEGED_BELOW} are bound as root and need the admin's "
                "allow_privileged_ports",
                f"network.port_forwards[{i}].host_port",
            )
