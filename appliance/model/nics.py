"""A VM's further NICs (issue 15): `networks`, each on a libvirt network (one of the
project's networks, else a host's libvirt network the appliance does not manage),
with its own MAC and, optionally, a fixed IP.

The first NIC is `network` (user mode, a libvirt network or none), as it always
was. `networks` alone is the whole list: its first NIC becomes `network` and the
rest stay in `networks`, which is the stored form GET and spec.json show. So
`{"networks": [{"network": "lab"}, {"network": "db"}]}` and `{"network":
"network:lab", "networks": [{"network": "db"}]}` are one spec.

A NIC without a MAC is given one when the VM is created or the NIC added
(service/vms.py), stored in the spec, and kept while the NIC stays on its network.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from appliance.model.fields import REFUSED, IPv4, LibvirtNetworkName, Mac, must_be_list, refused
from appliance.model.parts import Network, _Object
from appliance.model.states import NetworkType

MAX_NICS = 8  # further NICs: each is a PCIe root port, a tap, a DHCP reservation


class Nic(_Object):
    """A further NIC: the libvirt network it is on, its MAC (default: one of its own),
    its fixed IP (a DHCP reservation)."""

    not_an_object = "must be an object with the network's name"
    network: LibvirtNetworkName
    ip: IPv4 | None = None
    mac: Mac | None = None

    @model_serializer(mode="wrap")
    def _stored(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


def _bounded(value: Any) -> Any:
    must_be_list(value)
    if len(value) > MAX_NICS:
        raise refused(f"at most {MAX_NICS} NICs besides the first (network)")
    return value


def _distinct(nics: list[Nic]) -> list[Nic]:
    networks: set[str] = set()
    macs: set[str] = set()
    for i, nic in enumerate(nics):
        if nic.network in networks:  # one DHCP entry per VM and network
            raise refused("the VM has a NIC on this network already", f"[{i}].network")
        networks.add(nic.network)
        if nic.mac is not None:
            if nic.mac in macs:
                raise refused("another NIC of the VM has this MAC", f"[{i}].mac")
            macs.add(nic.mac)
    return nics


Nics = Annotated[list[Nic], BeforeValidator(_bounded), Field(max_length=MAX_NICS),
                 WrapValidator(lambda v, handler: _distinct(handler(v)))]


_NICS = TypeAdapter(list[Nic])


def networks_shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """`networks` without `network`: its first NIC is `network` (see the module's text).
    The list is checked as given first, so that a refusal names the NIC the caller
    wrote (networks[1] is the second NIC of the body, not of the stored form)."""
    nics = data.get("networks")
    if data.get("network") is not None or not isinstance(nics, list) or not nics:
        return data
    if len(nics) <= MAX_NICS + 1:  # a longer list is refused by the field itself
        try:
            _distinct(_NICS.validate_python(nics))
        except ValidationError as err:
            first = err.errors(include_url=False, include_input=False)[0]
            context = first.get("ctx") or {}
            path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                           for part in first["loc"]) + context.get("at", "")
            raise refused(context["reason"] if first["type"] == REFUSED else first["msg"],
                          ".networks" + path) from None
        except PydanticCustomError as err:  # _distinct's
            raise refused(str((err.context or {}).get("reason")),
                          ".networks" + str((err.context or {}).get("at", ""))) from None
    first = nics[0]
    nic = {"type": NetworkType.NETWORK, "name": first["network"],
           **{key: value for key, value in first.items() if key != "network"}}
    return {**data, "network": nic, "networks": nics[1:]}


def first_nic_fault(network: Network, nics: list[Nic]) -> tuple[str, str] | None:
    """(reason, path) when a further NIC repeats the first NIC's network or MAC."""
    for i, nic in enumerate(nics):
        if network.type == NetworkType.NETWORK and nic.network == (network.name or "default"):
            return "the VM's first NIC (network) is on this network already", f"[{i}].network"
        if nic.mac is not None and nic.mac == network.mac:
            return "the VM's first NIC (network) has this MAC", f"[{i}].mac"
    return None
