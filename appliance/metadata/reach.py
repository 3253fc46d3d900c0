"""Which hosts' guests the metadata service reaches, as service.py decides where it
listens, for the API and the scheduler: a VM whose only data is that service
(`cloud_init.datasource: "metadata"`, no seed disk) is placed only on a host it
serves (as Nova's scheduler filters out a host without a capability the request
needs), and refused (422 naming the field) when no host it may go to is served.

A host is served when the service runs (config.metadata_service), its libvirt is on
this machine (a local URI: netns.socket_path), and its guests' network namespace is
not the machine's own (or metadata_host_namespace is on). A local host whose libvirt
does not answer now cannot be judged: it counts as served (the service listens once
it answers; the scheduler does not pick a host that is down).
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from appliance import hosturi
from appliance.config import Config
from appliance.metadata import netns

FIELD = "cloud_init.datasource"


def wants_it(spec: dict) -> bool:
    return (spec.get("cloud_init") or {}).get("datasource") == "metadata"


def unserved(config: Config, hosts: Iterable[dict]) -> dict[str, str]:
    """host name -> why the metadata service does not reach its guests (served: absent)."""
    out: dict[str, str] = {}
    own: tuple[int, int] | None = None
    for host in hosts:
        uri = str(host["uri"])
        path = netns.socket_path(uri)
        if not config.metadata_service:
            out[host["name"]] = ("the metadata service is off (vmctl serve --no-metadata): "
                                 "use nocloud or configdrive")
        elif path is None:
            out[host["name"]] = (f"the metadata service serves only this machine's libvirt "
                                 f"(qemu:///system, qemu+unix), not {uri}")
        elif hosturi.refused(uri, config):
            out[host["name"]] = "its URI is not one the appliance opens"
        elif not config.metadata_host_namespace:
            try:
                key = netns.namespace_key(netns.listener_pid(path, timeout=1.0))
                own = own or netns.namespace_key(os.getpid())
            except OSError:
                continue  # not answering now: cannot tell (see above)
            if key == own:
                out[host["name"]] = (
                    "its guests are in this machine's own network namespace, which the "
                    "metadata service leaves to the machine (metadata_host_namespace = false; "
                    "vmctl serve --metadata-host-namespace serves it)")
    return out
