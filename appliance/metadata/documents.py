"""What the metadata service answers a VM: Nova's two layouts, built at each request
from the VM's record (so a change to its user data, labels or keys shows at once).

- OpenStack: /openstack/ lists the versions; /openstack/VERSION/ holds
  meta_data.json, user_data (when there is some), vendor_data.json and, from
  2015-10-15 on, network_data.json: the very files the config drive carries
  (appliance/virt/cloudinit.py configdrive_files, one builder for both).
- EC2: / lists the versions; /VERSION/meta-data/ (ami-id, ami-launch-index,
  hostname, instance-id, instance-type, local-hostname, local-ipv4, placement/,
  public-keys/, tags/instance/ for the labels) and /VERSION/user-data.

A directory answers with its entries one per line, subdirectories with a
trailing '/', as Nova does; EC2's public-keys/ lists `0=NAME`, its entries are
reached as public-keys/0/openssh-key.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from appliance.virt import cloudinit

EC2_VERSIONS = ("1.0", "2009-04-04", "latest")
OPENSTACK_VERSIONS = cloudinit.CONFIGDRIVE_VERSIONS
JSON, TEXT = "application/json", "text/plain; charset=utf-8"
MAX_PATH = 512  # longer paths are refused before they are looked at
MAX_DEPTH = 8


@dataclass
class Dir:
    entries: dict[str, Any] = field(default_factory=dict)  # name -> Dir | bytes
    listing: list[str] | None = None  # when it is not the names (EC2's public-keys/)

    def text(self) -> bytes:
        names = self.listing if self.listing is not None else [
            name + ("/" if isinstance(value, Dir) else "")
            for name, value in sorted(self.entries.items())]
        return "\n".join(names).encode()


@dataclass(frozen=True)
class Instance:
    """The VM the request came from: its record, the address it used, its NICs as
    network_data.json describes them (controller/files.py seed_nics)."""
    row: dict
    local_ipv4: str
    nics: list[dict]


def openstack_files(vm: Instance) -> dict[str, bytes]:
    row = vm.row
    spec = row["spec"]
    files = cloudinit.configdrive_files(
        row.get("instance_id") or row["id"], row["name"], spec.get("cloud_init") or {},
        _public_keys(row), vm.nics, spec.get("labels"))
    prefix = "openstack/"
    return {path[len(prefix):]: data for path, data in files.items() if path.startswith(prefix)}


def _public_keys(row: dict) -> dict[str, str]:
    keys = json.loads(row.get("public_keys") or "{}")  # service/keys.py: name -> key text
    return {str(k): str(v) for k, v in keys.items()}


def tree(vm: Instance) -> Dir:
    """Every document of the VM, by path."""
    root = Dir()
    openstack = Dir()
    for path, data in openstack_files(vm).items():
        version, _, name = path.partition("/")
        openstack.entries.setdefault(version, Dir()).entries[name] = data
    openstack.listing = list(openstack.entries)  # versions without '/', as Nova's
    root.entries["openstack"] = openstack
    user_data = ((vm.row["spec"].get("cloud_init") or {}).get("user_data") or "").encode()
    meta = _ec2_meta(vm)
    for version in EC2_VERSIONS:
        entries: dict[str, Any] = {"meta-data": meta}
        if user_data:
            entries["user-data"] = user_data
        root.entries[version] = Dir(entries)
    root.listing = list(EC2_VERSIONS)  # "/" is EC2's version list, as Nova's
    return root


def _ec2_meta(vm: Instance) -> Dir:
    row = vm.row
    spec = row["spec"]
    instance_id = row.get("instance_id") or row["id"]
    image = str(spec.get("image") or "")
    keys = _public_keys(row)
    public_keys = Dir({str(i): Dir({"openssh-key": (text.strip() + "\n").encode()})
                       for i, text in enumerate(keys.values())},
                      [f"{i}={name}" for i, name in enumerate(keys)])
    labels = {str(k): str(v).encode() for k, v in (spec.get("labels") or {}).items()}
    entries: dict[str, Any] = {
        "ami-id": f"ami-{hashlib.sha256(image.encode()).hexdigest()[:8]}".encode(),
        "ami-launch-index": b"0",
        "hostname": row["name"].encode(),
        "instance-id": instance_id.encode(),
        "instance-type": f"{spec.get('cpus', 1)}cpu-{spec.get('memory', '')}".encode(),
        "local-hostname": row["name"].encode(),
        "local-ipv4": vm.local_ipv4.encode(),
        "placement": Dir({"availability-zone": b"nova"}),
        "public-keys": public_keys,
        "tags": Dir({"instance": Dir(labels)}),
    }
    return Dir(entries)


def answer(root: Dir, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of GET `path` in the VM's documents."""
    parts = [p for p in path.split("/") if p]
    if len(path) > MAX_PATH or len(parts) > MAX_DEPTH:
        return 404, TEXT, b"Not Found"
    node: Any = root
    for part in parts:
        if not isinstance(node, Dir) or part not in node.entries:
            return 404, TEXT, b"Not Found"
        node = node.entries[part]
    if isinstance(node, Dir):
        return 200, TEXT, node.text()
    return 200, JSON if parts[-1].endswith(".json") else TEXT, node
