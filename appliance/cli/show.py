"""`vmctl get NAME`: one VM, its spec and its status (GET /v1/vms/NAME and
/v1/vms/NAME/status.json): shape, network with its port forwards and addresses,
disks and drives, conditions, and what waits for a restart (issue 16)."""
from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.output import labels_text, print_json
from appliance.client import Client

WIDTH = 13  # the label column


def _forward(forward: dict) -> str:
    where = forward.get("host_address") or "127.0.0.1"
    protocol = forward.get("protocol") or "tcp"
    return f"{where}:{forward['host_port']} -> {forward['guest_port']}/{protocol}"


def _network(spec: dict) -> str:
    network = spec.get("network") or {}
    kind = network.get("type") or "-"
    further = "".join(f"; network:{nic['network']}" + (f", fixed IP {nic['ip']}" if nic.get("ip")
                                                       else "")
                      for nic in spec.get("networks") or [])  # further NICs (model/nics.py)
    if kind == "network":
        fixed = f", fixed IP {network['ip']}" if network.get("ip") else ""
        return f"network:{network.get('name') or 'default'}{fixed}{further}"
    if kind == "user" and network.get("outbound") not in (None, "internet"):
        return f"user (outbound {network['outbound']}){further}"
    return f"{kind}{further}"


def _address(entry: dict) -> str:
    prefix = f"/{entry['prefix']}" if entry.get("prefix") is not None else ""
    where = f"{entry['interface']} " if entry.get("interface") else ""
    return f"{where}{entry.get('address')}{prefix} ({entry.get('source') or '-'})"


def _disks(spec: dict) -> list[str]:
    disks = [f"root (image {spec.get('image')})"]
    disks += [f"{disk['name']} {disk['size']}M" for disk in spec.get("disks") or []]
    return disks


def _drives(spec: dict) -> list[str]:
    drives = []
    for index, drive in enumerate(spec.get("cdroms") or []):
        image = drive.get("image") if isinstance(drive, dict) else drive
        drives.append(f"cdrom {index}: {image or 'empty'}")
    return drives


def _condition(condition: dict) -> str:
    said = f" ({condition['message']})" if condition.get("message") else ""
    return f"{condition['type']} {'yes' if condition.get('status') else 'no'}{said}"


def lines(vm: dict, status: dict) -> list[tuple[str, str]]:
    """(label, value) rows of `vmctl get`."""
    spec = vm["spec"]
    template = vm.get("template")
    rows: list[tuple[str, Any]] = [
        ("name", vm["name"]), ("project", vm.get("project") or "-"),
        ("state", vm["state"] + (f" ({vm['reason']})" if vm.get("reason") else "")),
        ("desired", vm["desired_state"]), ("host", vm.get("host") or "-"),
        ("cpus", spec["cpus"]), ("memory", f"{spec['memory']}M"), ("image", spec["image"]),
        ("run strategy", spec["run_strategy"]), ("generation", vm["generation"]),
        ("template", f"{template['name']} (revision {template['revision']})" if template
         else "-"),
        ("labels", labels_text(spec.get("labels")) or "-"),
        ("network", _network(spec)),
    ]
    forwards = (spec.get("network") or {}).get("port_forwards") or []
    rows += [("forward", _forward(f)) for f in forwards]
    rows += [("address", _address(a)) for a in status.get("addresses") or []] or [
        ("address", "-")]
    rows += [("disk", d) for d in _disks(spec)]
    rows += [("drive", d) for d in _drives(spec)]
    rows += [("condition", _condition(c)) for c in status.get("conditions") or []]
    if status.get("last_error"):
        rows.append(("last error", status["last_error"]))
    if vm.get("restart_required"):
        waiting = ", ".join(vm.get("pending_changes") or []) or "spec changes"
        rows.append(("restart", f"required: {waiting} wait for the next restart"))
    return [(label, str(value)) for label, value in rows]


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    vm = client.get(f"/v1/vms/{args.name}")
    status = client.get(f"/v1/vms/{args.name}/status.json")
    if args.json:
        print_json({**vm, "status": status})
        return 0
    for label, value in lines(vm, status):
        print(f"{label:<{WIDTH}} {value}")
    return 0
