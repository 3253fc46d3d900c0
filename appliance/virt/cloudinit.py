"""The NoCloud seed: an ISO9660 volume labelled `cidata`, built with pycdlib.

cloud-init reads `meta-data`, `user-data` and `network-config` from it. JSON
is valid YAML, so structured meta-data and network-config are written as JSON.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pycdlib


def seed_files(vm_id: str, name: str, cloud_init: dict | None) -> dict[str, bytes]:
    cloud_init = cloud_init or {}
    meta = cloud_init.get("meta_data")
    if isinstance(meta, str):
        # User YAML first; our identity lines last, unless the user set them.
        extra = ""
        if "instance-id" not in meta:
            extra += f"instance-id: {vm_id}\n"
        if "local-hostname" not in meta:
            extra += f"local-hostname: {name}\n"
        meta_text = meta.rstrip("\n") + "\n" + extra
    else:
        merged = {"instance-id": vm_id, "local-hostname": name, **(meta or {})}
        meta_text = _yaml_mapping(merged)
    files = {"meta-data": meta_text.encode()}
    files["user-data"] = (cloud_init.get("user_data") or "#cloud-config\n{}\n").encode()
    network = cloud_init.get("network_config")
    if network is not None:
        text = network if isinstance(network, str) else json.dumps(network, indent=2) + "\n"
        files["network-config"] = text.encode()
    return files


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


def write_seed_iso(path: str | Path, files: dict[str, bytes]) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for index, (name, data) in enumerate(sorted(files.items())):
        iso.add_fp(
            io.BytesIO(data), len(data),
            iso_path=f"/FILE{index}.;1", rr_name=name, joliet_path=f"/{name}",
        )
    tmp = Path(str(path) + ".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.replace(path)
