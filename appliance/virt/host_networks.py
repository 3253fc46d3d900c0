"""The driver seam's part for libvirt networks (issue 15): HostDriver inherits it;
libvirt_networks.py and fake_networks.py implement it."""
from __future__ import annotations

import abc

ACTIVE, INACTIVE = "active", "inactive"


class HostNetworks(abc.ABC):
    @abc.abstractmethod
    def network_state(self, name: str) -> str | None:
        """ACTIVE or INACTIVE for the host's libvirt network NAME; None when it has none."""

    @abc.abstractmethod
    def ensure_network(self, name: str, uuid: str, xml: str, start: bool) -> None:
        """The appliance's network NAME defined from `xml` (persistent, autostarted),
        and started when `start`; safe to repeat. A definition of another uuid (a
        network deleted since) is replaced while inactive; while active, DriverError."""

    @abc.abstractmethod
    def has_bridge(self, name: str) -> bool | None:
        """Whether the host has a bridge interface NAME; None when this cannot be told
        from here (a remote host: its libvirt answers at the guest's start)."""

    @abc.abstractmethod
    def owned_networks(self, instance_id: str) -> dict[str, str]:
        """name -> uuid of the host's libvirt networks this appliance made (network_xml.owner)."""

    @abc.abstractmethod
    def remove_network(self, name: str) -> None:
        """Stop and undefine the network NAME (gone already: nothing to do)."""

    # -- network filters (issue 15: virt/nwfilter_xml.py) ------------------------------------
    @abc.abstractmethod
    def define_filter(self, xml: str) -> bool:
        """Define (or redefine) the network filter `xml` names; libvirt applies a
        redefinition to the running NICs that reference it. False when the host has
        no network filters (libvirt's test driver)."""

    @abc.abstractmethod
    def remove_filter(self, name: str) -> None:
        """Undefine the filter NAME (gone already: nothing to do)."""

    @abc.abstractmethod
    def filter_names(self, prefix: str) -> list[str]:
        """The names of the host's network filters that start with `prefix` ([] on a
        host without network filters): one call to the host."""
