"""Hosts: add, change, enable, disable, put in maintenance (drain) and remove
them; their view with capacity and allocations."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from appliance import host_access, hosturi, placement, ssh_access
from appliance import spec as specs
from appliance.access import caller
from appliance.errors import Conflict, Failed, Invalid
from appliance.model import HOST_DOWN, HOST_RATIOS, HOST_STATES, HostAdminState
from appliance.model.cpu import cpuset_text, parse_cpuset
from appliance.notify import listening
from appliance.service.migration import Migrations
from appliance.store import Row

STORAGE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MIGRATION_ADDRESS = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
log = logging.getLogger("appliance.service")
HOST_FIELDS = frozenset(
    {"uri", "labels", "storage", "migration_address", "reserved_memory_mib", "state", *HOST_RATIOS,
     "cpu_dedicated_set"}
)


def _admin_state(value: Any) -> HostAdminState:
    if value not in HOST_STATES:
        raise Invalid(f"must be one of {', '.join(HOST_STATES)}", "state")
    return HostAdminState(value)


def _refuse_unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    unknown = set(body) - known
    if unknown:
        raise Invalid(
            f"unknown field; known fields are {', '.join(sorted(known))}", sorted(unknown)[0]
        )


def _ratio(body: dict[str, Any], key: str) -> float:
    default, low, high = HOST_RATIOS[key]
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise Invalid(f"must be a number from {low} to {high}", key)
    return float(value)


def _reserved_memory(body: dict[str, Any]) -> int:
    value = body.get("reserved_memory_mib", 0)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= specs.MAX_MEMORY_MIB
    ):
        raise Invalid(
            f"must be a whole number of MiB from 0 to {specs.MAX_MEMORY_MIB}", "reserved_memory_mib"
        )
    return value


def _storage(body: dict[str, Any]) -> str:
    value = body.get("storage", "shared")
    if not isinstance(value, str) or not STORAGE_NAME.fullmatch(value):
        raise Invalid(
            "must name the storage where this host finds VM disks (1-64 of A-Z a-z 0-9 _.:-); "
            "hosts naming the same storage share disks",
            "storage",
        )
    return value


def _migration_address(body: dict[str, Any]) -> str | None:
    value = body.get("migration_address")
    if value is not None and (not isinstance(value, str) or not MIGRATION_ADDRESS.fullmatch(value)):
        raise Invalid(
            "must be a host name or IP address the other hosts reach this one at",
            "migration_address",
        )
    return value


def _dedicated_set(body: dict[str, Any], host_cpus: int) -> str:
    """Nova's cpu_dedicated_set: host CPU ids ("2-3" or [2, 3]) kept for dedicated
    VMs; at least one CPU stays shared (the emulator threads and shared VMs run there)."""
    cpus = parse_cpuset(body.get("cpu_dedicated_set"))
    if host_cpus > 0:
        beyond = [c for c in cpus if c >= host_cpus]
        if beyond:
            raise Invalid(f"the host has CPUs 0-{host_cpus - 1}; {beyond[0]} is not one of them",
                          "cpu_dedicated_set")
        if len(cpus) >= host_cpus:
            raise Invalid("at least one CPU must stay shared (emulator threads, shared VMs)",
                          "cpu_dedicated_set")
    return cpuset_text(cpus)


def hidden_uri(uri: str) -> str:
    """A host URI as a non-admin sees it: `qemu+ssh://…` (its transport, nothing else)."""
    scheme = uri.partition(":")[0]
    return f"{scheme}://…"


def _down_reason(host: Row) -> str:
    if host.get("connect_error"):
        return str(host["connect_error"])
    if host.get("last_attempt") is None:
        return "not connected yet"
    return "libvirt stopped answering the controller's heartbeat"


class Hosts(Migrations):
    def host_view(
        self,
        host: Row,
        used: dict[str, list[float]] | None = None,
        counts: dict[str, int] | None = None,
        pinned: dict[str, list[float]] | None = None,
    ) -> dict[str, Any]:
        if used is None:
            used = placement.allocations(self.store)
        if pinned is None:
            pinned = placement.pinning_allocations(self.store)
        if counts is None:
            counts = placement.vms_by_host(self.store)
        info = host["info"] or {}
        cpus, memory, disk = used.get(host["name"], (0, 0, 0))
        dedicated, hugepages = pinned.get(host["name"], (0, 0)) if pinned else (0, 0)
        dedicated_set = placement.dedicated_set(host)
        up = placement.host_is_up(host, self.clock(), self.config.heartbeat_age)
        reserved = host["reserved_memory_mib"] or 0
        # How the appliance reaches a host (an ssh user and address, a keyfile's path, a
        # migration network) is the admins': others see the URI's scheme alone.
        admin = caller().is_admin
        return {
            "name": host["name"],
            "uri": host["uri"] if admin else hidden_uri(host["uri"]),
            "state": host["state"],
            "observed_state": host["state"] if up else HOST_DOWN,
            "up": up,
            "last_seen": host["last_seen"],
            "down_since": host["down_since"],
            # The controller's first connect since the host was added (or re-addressed)
            # has not finished yet; why it is down (the last connect's error).
            "connecting": host.get("last_attempt") is None,
            "last_attempt": host.get("last_attempt"),
            "reason": None if up else _down_reason(host),
            "labels": host["labels"],
            "storage": host["storage"],
            "migration_address": host["migration_address"] if admin else None,
            "cpu_ratio": host["cpu_ratio"],
            "ram_ratio": host["ram_ratio"],
            "disk_ratio": host["disk_ratio"],
            "reserved_memory_mib": reserved,
            "inventory": info,
            "cpu_dedicated_set": host.get("cpu_dedicated_set") or "",
            # why this host cannot run the CPU model running VMs use (missing features)
            "cpu_warning": host.get("cpu_warning"),
            "capacity": {
                "cpus": int(((info.get("cpus") or 0) - len(dedicated_set)) * host["cpu_ratio"]),
                "dedicated_cpus": len(dedicated_set),
                "hugepages_mib": info.get("hugepages_mib") or 0,
                "memory_mib": int((info.get("memory_mib") or 0) * host["ram_ratio"]) - reserved,
                "disk_gib": round(
                    (info.get("disk_bytes") or 0) * host["disk_ratio"] / placement.GIB, 2
                ),
            },
            "allocated": {
                "cpus": int(cpus - dedicated),
                "dedicated_cpus": int(dedicated),
                "hugepages_mib": int(hugepages),
                "memory_mib": int(memory),
                "disk_gib": round(disk / placement.GIB, 2),
                "vms": counts.get(host["name"], 0),
            },
        }

    def cluster_cpu(self) -> dict[str, Any] | None:
        """The CPU model cluster-mode VMs get (controller/cluster_cpu.py), without its XML."""
        raw = self.store.get_meta("cluster_cpu")
        if not raw:
            return None
        model = json.loads(raw)
        return {key: model.get(key) for key in ("model", "vendor", "features", "hosts",
                                                "computed")}

    def list_hosts(self) -> list[dict[str, Any]]:
        """Hosts, with `observed_state`: down when libvirt stopped answering the
        controller's heartbeat (or the heartbeat itself is stale), else the
        administrative state (enabled | disabled | maintenance)."""
        used, counts = placement.allocations(self.store), placement.vms_by_host(self.store)
        pinned = placement.pinning_allocations(self.store)
        return [self.host_view(h, used, counts, pinned) for h in self.store.list_hosts()]

    def get_host(self, name: str) -> dict[str, Any]:
        return self.host_view(self.store.get_host(name))

    def host_vm_names(self, name: str) -> list[str]:
        """The VMs placed on a host, running or not, that the caller sees: their
        project's; every project's for an admin, as PROJECT/NAME outside the
        default project. (Hosts are every project's: capacity and allocation
        counts are the host's whole.)"""
        self.store.get_host(name)  # NotFound for no such host, rather than an empty list
        principal = caller()
        return self.store.vm_names_on_host(name, None if principal.is_admin else self._project())

    def _host_fields(self, body: dict[str, Any], creating: bool,
                     host_cpus: int = 0) -> dict[str, Any]:
        """The fields of a host the body sets (all of them, with defaults, when
        `creating`), each checked: nothing changes unless every one passes."""

        def given(key: str) -> bool:
            return key in body or creating

        fields: dict[str, Any] = {}
        if given("uri"):
            fields["uri"] = hosturi.validate(
                body.get("uri"),
                self.config.host_socket_dirs,
                self.config.ssh_dir,
                allow_test=self.config.allow_test_hosts,
            )
        for key in HOST_RATIOS:
            if given(key):
                fields[key] = _ratio(body, key)
        if given("reserved_memory_mib"):
            fields["reserved_memory_mib"] = _reserved_memory(body)
        if given("labels"):
            fields["labels"] = specs.validate_labels(body.get("labels") or {}, "labels")
        if given("storage"):
            fields["storage"] = _storage(body)
        if given("migration_address"):
            fields["migration_address"] = _migration_address(body)
        if given("state"):
            fields["state"] = _admin_state(body.get("state", HostAdminState.ENABLED)).value
        if given("cpu_dedicated_set"):
            fields["cpu_dedicated_set"] = _dedicated_set(body, host_cpus)
        return fields

    def add_host(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        _refuse_unknown(body, HOST_FIELDS | {"name"})
        name = specs.validate_name(body.get("name"), "name")
        fields = self._host_fields(body, creating=True)
        if self.store.host_exists(name):
            raise Conflict(f"a host named {name!r} exists", "name")
        access, keys = self._ssh_trust(fields["uri"])
        with self.store.transaction():
            if self.store.host_exists(name):
                raise Conflict(f"a host named {name!r} exists", "name")
            for other in self.store.list_hosts():
                if other["uri"] == fields["uri"]:
                    raise Conflict(f"host {other['name']} already has this URI", "uri")
            self.store.upsert_host(
                {
                    "name": name,
                    "up": 0,
                    "last_seen": None,
                    "info": {},
                    "created": self.clock(),
                    "down_since": None,
                    **fields,
                }
            )
            self.store.add_event("host-added", f"host {name} added ({fields['uri']})")
            self._key_event(access)
        ssh_access.record(self.config.ssh_dir, keys)  # only once the add committed
        self.notify()
        return {**self.get_host(name), **access}

    def _ssh_trust(self, uri: str) -> tuple[dict[str, Any], list[ssh_access.HostKey]]:
        """For a qemu+ssh URI: the appliance's public key, and its known_hosts entry
        for the address (Conflict when the server's key changed: appliance/
        ssh_access.py), as {"ssh": {...}} for the answer ({} else), and the keys to
        record on first use, which the caller records only once its change has
        committed (a refused add leaves known_hosts as it was). A server that does
        not answer is no refusal (the host is added, down, as any unreachable host
        is, libvirt saying the key was not accepted): its key is recorded by a later
        PATCH of its uri (the same one will do)."""
        address = host_access.ssh_address(uri)
        if address is None:
            return {}, []
        try:
            found, keys = ssh_access.trust(self.config.ssh_dir, *address)
        except Failed as err:
            log.warning("%s; its host key is not recorded", err.reason)
            return {}, []
        ssh: dict[str, Any] = {"public_key": ssh_access.public_key(self.config.ssh_dir),
                               "host_key": found}
        return {"ssh": ssh}, keys

    def _key_event(self, access: dict[str, Any]) -> None:
        """The host-key event of a key recorded on first use, in the caller's transaction."""
        found = (access.get("ssh") or {}).get("host_key")
        if found and found["recorded_now"]:
            keys = ", ".join(f"{k['type']} {k['fingerprint']}" for k in found["keys"])
            self.store.add_event("host-key", f"ssh host key of {found['address']} "
                                             f"recorded on first use: {keys}")

    def wait_host_attempt(self, name: str, timeout: float) -> dict[str, Any]:
        """The host once the controller's first connection attempt to it has
        finished (up, or down with the reason), or when `timeout` passes; at once
        when no controller listens (config.notify_socket): none would try. The row
        is read again only when something was committed (store/changes.py)."""
        deadline = time.monotonic() + timeout
        if not listening(self.config.notify_socket):
            return self.get_host(name)
        with self.store.changes.watching() as changes:
            while True:
                seen = changes.generation
                host = self.store.get_host(name)
                left = deadline - time.monotonic()
                if host.get("last_attempt") is not None or left <= 0:
                    return self.host_view(host)
                changes.wait(seen, left)

    def update_host(self, name: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        rest = {k: v for k, v in body.items() if k != "state"}
        _refuse_unknown(rest, HOST_FIELDS)
        known = self.store.get_host(name)["info"].get("cpus") or 0  # NotFound first
        fields = self._host_fields(
            rest, creating=False, host_cpus=int(known)
        )  # everything is checked before anything changes
        access, keys = self._ssh_trust(fields["uri"]) if "uri" in fields else ({}, [])
        state = body.get("state")
        if "state" in body:
            state = _admin_state(state.strip().lower() if isinstance(state, str) else state)
        if fields:
            with self.store.transaction():
                self.store.get_host(name)
                if "uri" in fields and any(
                    o["name"] != name and o["uri"] == fields["uri"] for o in self.store.list_hosts()
                ):
                    raise Conflict("another host already has this URI", "uri")
                attempt = {"last_attempt": None, "connect_error": None} if "uri" in fields else {}
                self.store.update_host(name, **fields, **attempt)
                self.store.add_event(
                    "host-updated", f"host {name}: {', '.join(sorted(fields))} changed"
                )
                self._key_event(access)
            ssh_access.record(self.config.ssh_dir, keys)  # only once the change committed
            self.notify()
        if "state" in body:
            return {**self.set_host_state(name, state), **access}
        return {**self.get_host(name), **access}

    def set_host_state(self, name: str, state: Any) -> dict[str, Any]:
        """enabled | disabled (no new VMs) | maintenance (no new VMs, and drain
        it: each VM migrates where the scheduler puts it; what cannot move is
        reported in the answer and as an event, and stays)."""
        state = _admin_state(state.strip().lower() if isinstance(state, str) else state)
        report: dict[str, list[dict[str, Any]]] = {"migrating": [], "moving": [], "blocked": []}
        with self.store.transaction():
            host = self.store.get_host(name)
            if host["state"] != state:
                self.store.update_host(name, state=state.value)
                self.store.add_event(
                    "host-state", f"host {name} is now {state} (was {host['state']})"
                )
            if state == HostAdminState.MAINTENANCE:
                report = self._drain(host)
        self.notify()
        return {**self.get_host(name), "drain": report}

    def delete_host(self, name: str) -> None:
        with self.store.transaction():
            self.store.get_host(name)
            vms = self.store.vm_names_on_host(name)
            if vms:
                raise Conflict(
                    f"host {name} still has VMs ({', '.join(vms[:5])}); move or delete them first",
                    "name",
                )
            self.store.delete_host(name)
            self.store.add_event("host-removed", f"host {name} removed")
        self.notify()
