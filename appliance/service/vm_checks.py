"""The rules a VM's spec must keep beyond its own validation (spec.py), checked
against the rest of the store inside a create's or a change's transaction: a fixed
IP nobody else has, a rename of a stopped VM to a free name, the project's server
group and quota, and more vCPUs or memory still fitting on the VM's host (the claim).
A mixin of service/vms.py's VMs (NIC and network checks: service/networks.py)."""

from __future__ import annotations

from typing import Any

from appliance import placement, quotas
from appliance import spec as specs
from appliance.access.principal import shown_vm_name
from appliance.errors import Conflict, Invalid
from appliance.metadata import reach
from appliance.model import DesiredState, NetworkType, VMState
from appliance.service.base import ServiceBase
from appliance.store import Row


class VMChecks(ServiceBase):
    # -- the rules a spec must keep ----------------------------------------------------
    def _check_fixed_ip(self, spec: dict[str, Any], vm_id: str) -> None:
        network = spec["network"]
        if network["type"] != NetworkType.NETWORK or not network.get("ip"):
            return
        other = self.store.vm_with_fixed_ip(network["name"], network["ip"], excluding=vm_id)
        if other is not None:
            owner = shown_vm_name(other["project"], other["name"])
            raise Conflict(
                f"{network['ip']} is already the address of {owner} on {network['name']}",
                "network.ip",
            )

    def _check_rename(self, row: Row, new_name: str) -> None:
        specs.validate_vm_name(new_name)
        if row.get("pool"):  # its name is its place in the pool (service/pools.py)
            raise Conflict("a pool's member keeps its name NAME-N", "name")
        if self._observed(row) != VMState.STOPPED or row["desired_state"] != DesiredState.STOPPED:
            raise Conflict("a VM can only be renamed while stopped", "name")
        if self.store.vm_exists(new_name, row["project"]):
            raise Conflict(f"a VM named {new_name!r} exists", "name")

    def _check_metadata_reach(self, spec: dict[str, Any], host: str | None) -> None:
        """A VM whose only data is the metadata service, on no host it may go to (`host`,
        or any) that the service serves: 422 naming the field (metadata/reach.py). Where
        some are served, the scheduler places it on one of those."""
        if not reach.wants_it(spec):
            return
        hosts = [h for h in self.store.list_hosts() if host is None or h["name"] == host]
        far = reach.unserved(self.config, hosts)
        if not hosts or len(far) < len(hosts):
            return
        whys = sorted(set(far.values()))
        said = whys[0] if len(whys) == 1 else "; ".join(
            f"host {n}: {w}" for n, w in sorted(far.items()))
        raise Invalid("the metadata service is this VM's only data (no seed disk), and it "
                      f"serves no host the VM may go to: {said}", reach.FIELD)

    def _check_group(self, spec: dict[str, Any], project: str) -> None:
        """The spec's group is one of the VM's own project (another project's is not seen)."""
        if spec.get("group") and not self.store.group_exists(project, spec["group"]):
            raise Invalid(
                f"no server group named {spec['group']!r}; create it with POST /v1/groups", "group"
            )

    def _check_quota(self, project: str, new: dict[str, Any], old: dict[str, Any] | None = None,
                     vm_id: str | None = None) -> None:
        """The project's quota (appliance/quotas.py), for a new VM or a change of one."""
        quotas.check(self.store, project, self.store.get_project(project)["quota"], new, old, vm_id)

    def _check_claim_growth(self, row: Row, old: dict[str, Any], new: dict[str, Any]) -> None:
        """More vCPUs or memory held on the VM's host must still fit there (Nova's
        resize claim): a VM that claims them (placement.claims_cpu_ram) and grows,
        or a stopped one that starts to reserve them. A stopped VM without the
        reservation is checked when it starts."""
        if not row["host"] or not self._claims_cpu_ram(row, new):
            return
        held = self._claims_cpu_ram(row, old)
        more_cpus = new["cpus"] - (old["cpus"] if held else 0)
        more_memory = new["memory"] - (old["memory"] if held else 0)
        if more_cpus <= 0 and more_memory <= 0:
            return
        delta = {
            **new,
            "cpus": max(0, more_cpus),
            "memory": max(0, more_memory),
            "group": None,
            "node_selector": {},
        }
        decision = placement.place(
            self.store,
            self.config,
            delta,
            row["id"],
            self.clock(),
            only_hosts=frozenset([row["host"]]),
            disk=False,
            project=row["project"],
        )
        if decision.host is None:
            # Its own host's rejection: the others are rejected for not being it.
            rejected = next((r for r in decision.rejected if r.host == row["host"]), None)
            if rejected is not None and rejected.filter != "ComputeFilter":
                cpu_filters = ("CoreFilter", "DedicatedCpuFilter")
                field = "cpus" if more_cpus > 0 and rejected.filter in cpu_filters else "memory"
                raise Conflict(f"does not fit on host {row['host']}: {rejected.reason}", field)
