"""A VM's cloud-init data source, built with pycdlib (pure Python, no
genisoimage/xorriso, nothing mounted): read-only ISO 9660 with Rock Ridge and
Joliet names, attached as the seed disk.

- NoCloud (the default): a volume labelled `cidata` with `meta-data`,
  `user-data` and `network-config`. JSON is valid YAML, so structured
  meta-data and network-config are written as JSON.
- ConfigDrive (`"datasource": "configdrive"`, issue 15): OpenStack's `config-2`
  volume as Nova writes it: openstack/{2012-08-10,2015-10-15,latest}/ with
  meta_data.json (uuid, name, hostname, public_keys, keys, meta), user_data,
  vendor_data.json, and from 2015-10-15 on network_data.json (links, networks,
  services: a fixed IP as a static "ipv4" network, so cloud-init configures it
  without DHCP).

SSH public keys (the user's, `cloud_init.keys`, service/keys.py) go in both:
NoCloud's meta-data `public-keys`, ConfigDrive's `public_keys`.
"""
from __future__ import annotations

import io
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pycdlib

NOCLOUD, CONFIGDRIVE = "nocloud", "configdrive"
# Nova's config drive versions: the first, the first with network_data.json, latest.
CONFIGDRIVE_VERSIONS = ("2012-08-10", "2015-10-15", "latest")
NETWORK_DATA_SINCE = "2015-10-15"
# QEMU's user-mode network (slirp): the guest's address, gateway and DNS are fixed.
DEFAULT_ROUTE = "0.0.0.0"  # noqa: S104 - a route's destination (network_data.json), no bind
USER_MODE = {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2", "dns": "10.0.2.3"}


def seed_files(vm_id: str, name: str, cloud_init: dict | None,
               public_keys: dict[str, str] | None = None,
               nics: list[dict[str, Any]] | None = None,
               labels: dict[str, str] | None = None) -> dict[str, bytes]:
    """The seed's files by path. `public_keys`: key name -> OpenSSH public key text;
    `nics`: the VM's NICs (nic_config) for ConfigDrive's network_data.json; `labels`:
    the VM's, in ConfigDrive's meta (Nova's instance metadata)."""
    cloud_init = cloud_init or {}
    if cloud_init.get("datasource") == CONFIGDRIVE:
        return configdrive_files(vm_id, name, cloud_init, public_keys or {}, nics or [],
                                 labels)
    meta = cloud_init.get("meta_data")
    keys = list((public_keys or {}).values())
    if isinstance(meta, str):
        # User YAML first; our identity lines last, unless the user set them.
        extra = ""
        if "instance-id" not in meta:
            extra += f"instance-id: {vm_id}\n"
        if "local-hostname" not in meta:
            extra += f"local-hostname: {name}\n"
        if keys and "public-keys" not in meta:
            extra += "public-keys:\n" + "".join(f"  - {json.dumps(k)}\n" for k in keys)
        meta_text = meta.rstrip("\n") + "\n" + extra
    else:
        merged = {"instance-id": vm_id, "local-hostname": name, **(meta or {})}
        meta_text = _yaml_mapping(merged)
        if keys and "public-keys" not in merged:
            if meta_text.startswith("{"):  # already JSON: the keys go in it
                meta_text = json.dumps({**merged, "public-keys": keys}, indent=2) + "\n"
            else:  # flat lines stay flat (minimal guests grep them): a YAML list after
                meta_text += "public-keys:\n" + "".join(f"  - {json.dumps(k)}\n" for k in keys)
    files = {"meta-data": meta_text.encode()}
    files["user-data"] = (cloud_init.get("user_data") or "#cloud-config\n{}\n").encode()
    network = cloud_init.get("network_config")
    if network is not None:
        text = network if isinstance(network, str) else json.dumps(network, indent=2) + "\n"
        files["network-config"] = text.encode()
    return files


def volume_label(cloud_init: dict | None) -> str:
    return "config-2" if (cloud_init or {}).get("datasource") == CONFIGDRIVE else "cidata"


def nic_config(mac: str, nic: dict[str, Any], subnet: str | None) -> dict[str, Any]:
    """One NIC as network_data.json describes it: {"mac", "address", "prefix",
    "gateway", "dns"} for a static address (a fixed IP on a network with a known
    subnet, whose first address is the gateway and DNS; user mode's fixed
    layout), {"mac"} alone for DHCP."""
    if nic.get("type") == "user":
        return {"mac": mac, **USER_MODE}
    if nic.get("ip") and subnet:
        net = ipaddress.ip_network(subnet, strict=False)
        gateway = str(next(net.hosts()))
        return {"mac": mac, "address": nic["ip"], "prefix": net.prefixlen,
                "gateway": gateway, "dns": gateway}
    return {"mac": mac}


def network_data(nics: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenStack's network_data.json: a link per NIC (by MAC), a network per link
    (static "ipv4", or "ipv4_dhcp"), DNS servers as services. The default route is
    the first NIC's only (a static further NIC reaches its own subnet: two default
    routes would fight)."""
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    for index, nic in enumerate(nics):
        link = f"tap{index}"
        links.append({"id": link, "type": "phy", "ethernet_mac_address": nic["mac"], "mtu": 1500})
        if "address" not in nic:
            networks.append({"id": f"network{index}", "link": link, "type": "ipv4_dhcp"})
            continue
        netmask = str(ipaddress.ip_network(f"0.0.0.0/{nic['prefix']}").netmask)
        routes = [{"network": DEFAULT_ROUTE, "netmask": DEFAULT_ROUTE,
                   "gateway": nic["gateway"]}] if index == 0 else []
        networks.append({
            "id": f"network{index}", "link": link, "type": "ipv4",
            "ip_address": nic["address"], "netmask": netmask, "routes": routes,
            "services": [{"type": "dns", "address": nic["dns"]}]})
        if {"type": "dns", "address": nic["dns"]} not in services:
            services.append({"type": "dns", "address": nic["dns"]})
    return {"links": links, "networks": networks, "services": services}


def configdrive_files(vm_id: str, name: str, cloud_init: dict, public_keys: dict[str, str],
                      nics: list[dict[str, Any]],
                      labels: dict[str, str] | None = None) -> dict[str, bytes]:
    """OpenStack's files by path (the config drive's, and the metadata service's:
    appliance/metadata/documents.py). `meta` holds the VM's labels, then
    cloud_init.meta_data's keys (which win)."""
    meta: dict[str, Any] = {
        "uuid": vm_id, "name": name, "hostname": name, "launch_index": 0,
        "availability_zone": "nova", "files": [],
        "meta": {**{str(k): str(v) for k, v in (labels or {}).items()},
                 **{str(k): v if isinstance(v, str) else json.dumps(v)
                    for k, v in (cloud_init.get("meta_data") or {}).items()}},
    }
    if public_keys:
        meta["public_keys"] = dict(public_keys)
        meta["keys"] = [{"name": k, "type": "ssh", "data": v} for k, v in public_keys.items()]
    network = cloud_init.get("network_config")
    net_json = network if isinstance(network, dict) else network_data(nics)
    files: dict[str, bytes] = {}
    for version in CONFIGDRIVE_VERSIONS:
        base = f"openstack/{version}/"
        files[base + "meta_data.json"] = _json(meta)
        files[base + "vendor_data.json"] = b"{}\n"
        if cloud_init.get("user_data"):
            files[base + "user_data"] = cloud_init["user_data"].encode()
        if version >= NETWORK_DATA_SINCE:  # "latest" sorts after the dates
            files[base + "network_data.json"] = _json(net_json)
    return files


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def _yaml_mapping(data: dict) -> str:
    """Flat mappings as plain `key: value` lines (what minimal guests grep for);
    anything nested or unusual as JSON, which is YAML too."""
    lines = []
    for key, value in data.items():
        if isinstance(value, (dict, list)) or not _PLAIN.fullmatch(str(key)):
            return json.dumps(data, indent=2) + "\n"
        text = str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"{key}: {text if _PLAIN.fullmatch(text) else json.dumps(text)}")
    return "\n".join(lines) + "\n"


def write_seed_iso(path: str | Path, files: dict[str, bytes], label: str = "cidata") -> None:
    """The ISO: plain ISO 9660 names are made up (D0, F0: its character set has no
    '-' nor lower case); guests read the Rock Ridge or Joliet names, the real ones."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    dirs: dict[str, str] = {"": ""}
    for index, (name, data) in enumerate(sorted(files.items())):
        parent, _, leaf = name.rpartition("/")
        iso_dir = _iso_dir(iso, dirs, parent)
        iso.add_fp(io.BytesIO(data), len(data), iso_path=f"{iso_dir}/FILE{index}.;1",
                   rr_name=leaf, joliet_path=f"/{name}")
    tmp = Path(str(path) + ".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.replace(path)


def _iso_dir(iso: pycdlib.PyCdlib, dirs: dict[str, str], path: str) -> str:
    """The ISO 9660 path of the directory at `path` (made, with its parents, once)."""
    if path in dirs:
        return dirs[path]
    parent, _, leaf = path.rpartition("/")
    iso_parent = _iso_dir(iso, dirs, parent)
    iso_path = f"{iso_parent}/D{len(dirs)}"
    iso.add_directory(iso_path, rr_name=leaf, joliet_path=f"/{path}")
    dirs[path] = iso_path
    return iso_path
