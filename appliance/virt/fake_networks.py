"""libvirt networks of the fake hypervisor (fake.py's FakeHost.networks), as
libvirt_networks.py leaves them: defined, autostarted, active or not. A fake
host starts with libvirt's own `default` network, active, as a fresh libvirt has."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from appliance.virt.driver import DriverError
from appliance.virt.host_networks import ACTIVE, INACTIVE
from appliance.virt.network_xml import owner
from appliance.virt.nwfilter_xml import filter_of

if TYPE_CHECKING:
    from appliance.virt.fake import FakeCloud, FakeHost


@dataclasses.dataclass
class FakeNetwork:
    uuid: str
    xml: str = ""
    active: bool = False
    autostart: bool = False


def default_networks() -> dict[str, FakeNetwork]:
    return {"default": FakeNetwork("00000000-0000-0000-0000-00000000defa", active=True,
                                   autostart=True)}


class FakeNetworkMethods:
    cloud: FakeCloud

    def fake_host(self) -> FakeHost:
        raise NotImplementedError

    def network_state(self, name: str) -> str | None:
        net = self.fake_host().networks.get(name)
        return None if net is None else ACTIVE if net.active else INACTIVE

    def has_bridge(self, name: str) -> bool | None:
        return name in self.fake_host().bridges

    def owned_networks(self, instance_id: str) -> dict[str, str]:
        return {name: net.uuid for name, net in self.fake_host().networks.items()
                if net.xml and owner(net.xml) == instance_id}

    def remove_network(self, name: str) -> None:
        with self.cloud.lock:
            host = self.fake_host()
            if host.networks.pop(name, None) is not None:
                host.calls.append(f"net-remove {name}")

    def ensure_network(self, name: str, uuid: str, xml: str, start: bool) -> None:
        with self.cloud.lock:
            host = self.fake_host()
            net = host.networks.get(name)
            if net is not None and net.uuid != uuid:
                if net.active:
                    raise DriverError(f"network {name}: an older definition is active",
                                      f"network {name}: an older definition is active")
                host.calls.append(f"net-undefine {name}")
                net = None
            if net is None:
                host.calls.append(f"net-define {name}")
                net = host.networks[name] = FakeNetwork(uuid, xml)
            net.autostart = True
            if start and not net.active:
                host.calls.append(f"net-start {name}")
                net.active = True

    def define_filter(self, xml: str) -> bool:
        name = filter_of(xml)["name"]
        with self.cloud.lock:
            host = self.fake_host()
            host.calls.append(f"nwfilter-define {name}")
            host.filters[name] = xml
        return True

    def remove_filter(self, name: str) -> None:
        with self.cloud.lock:
            host = self.fake_host()
            if host.filters.pop(name, None) is not None:
                host.calls.append(f"nwfilter-undefine {name}")

    def filter_names(self, prefix: str) -> list[str]:
        with self.cloud.lock:
            host = self.fake_host()
            host.calls.append("nwfilter-list")
            return [name for name in host.filters if name.startswith(prefix)]
