"""A VM as KubeVirt manifests (`vmctl export NAME --format kubevirt`), for a
user who outgrows one small cluster.

Pure: the VM's stored spec (and its root disk's size) in, YAML text out. The
documents are a kubevirt.io/v1 VirtualMachine and, when the VM has port
forwards, a v1 Service that gives the same ports to the VM's pod:

- vCPUs and memory as `domain.cpu` (sockets, cores, threads; maxSockets for
  room to hot-plug) and `domain.memory.guest` (maxGuest);
- the root disk as a DataVolume template importing the exported qcow2 from
  `disk_url` (the user uploads `vmctl` 's export of the disk there; a
  placeholder URL otherwise), or a `containerDisk` image reference; each extra
  disk as a blank DataVolume of its size;
- the NIC on the pod network with masquerade (what user-mode networking is on
  a pod), its forwarded guest ports listed;
- cloud-init as a NoCloud (or ConfigDrive) volume from the VM's user_data and
  network_config;
- tcp_socket and guest_agent_ping probes as KubeVirt's readiness and liveness
  probes, with their timings.

What KubeVirt has no field for (console probes, CD-ROM media, xml_patches, a
fixed IP on a libvirt network, the pc machine) is said in comments at the top
of the output rather than silently dropped. The test validates the output
against KubeVirt's VirtualMachine schema (tests/data/kubevirt/README.md).
"""
from __future__ import annotations

import json
import re
from typing import Any

from appliance.errors import Invalid
from appliance.model.cpu import topology
from appliance.model.media import DEFAULT_BOOT_ORDER

FORMATS = ("kubevirt",)
CLOUD_INIT_KINDS = ("nocloud", "configdrive")
PLACEHOLDER_URL = "https://REPLACE-ME.invalid/{name}/root.qcow2"
MAX_REFERENCE = 512  # a URL or an image reference, as given by the user
VM_LABEL = "vm.kubevirt.io/name"  # the label KubeVirt's virt-launcher pods carry
MIB = 1 << 20


def _reference(value: str | None, field: str, schemes: tuple[str, ...] = ()) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not value or len(value) > MAX_REFERENCE
            or not value.isprintable() or any(c.isspace() for c in value)):
        raise Invalid(f"must be a printable reference without spaces, at most {MAX_REFERENCE} "
                      "characters", field)
    if schemes and not value.startswith(schemes):
        raise Invalid("must be an http:// or https:// URL", field)
    return value


def options(fmt: str | None, disk_url: str | None, container_disk: str | None,
            cloud_init: str | None) -> dict[str, Any]:
    """The export's options, checked (Invalid names the parameter)."""
    if (fmt or "kubevirt") not in FORMATS:
        raise Invalid(f"must be one of: {', '.join(FORMATS)}", "format")
    if disk_url is not None and container_disk is not None:
        raise Invalid("give disk_url or container_disk, not both", "container_disk")
    if (cloud_init or "nocloud") not in CLOUD_INIT_KINDS:
        raise Invalid(f"must be one of: {', '.join(CLOUD_INIT_KINDS)}", "cloud_init")
    return {"disk_url": _reference(disk_url, "disk_url", ("http://", "https://")),
            "container_disk": _reference(container_disk, "container_disk"),
            "cloud_init": cloud_init or "nocloud"}


def _storage(size_bytes: int) -> dict[str, Any]:
    mib = max(1, -(-size_bytes // MIB))  # rounded up: the import must fit
    return {"resources": {"requests": {"storage": f"{mib}Mi"}}}


def _cpu(spec: dict[str, Any]) -> dict[str, Any]:
    """KubeVirt hot-plugs whole sockets: cpus as sockets of the VM's cores x threads,
    max_cpus as maxSockets."""
    cpu = spec.get("cpu") or {}
    most = max(spec.get("max_cpus") or spec["cpus"], spec["cpus"])
    if all(cpu.get(key) is None for key in ("sockets", "cores", "threads")):
        cores = threads = 1
    else:
        _sockets, cores, threads = topology(cpu, most)
    per_socket = cores * threads
    out: dict[str, Any] = {"sockets": max(1, spec["cpus"] // per_socket), "cores": cores,
                           "threads": threads}
    if most > spec["cpus"]:
        out["maxSockets"] = max(out["sockets"], most // per_socket)
    if cpu.get("mode") in ("host-model", "host-passthrough"):
        out["model"] = cpu["mode"]
    if cpu.get("dedicated"):
        out["dedicatedCpuPlacement"] = True
    return out


def _firmware(spec: dict[str, Any], notes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(firmware, features) of the domain."""
    kind = spec.get("firmware", "bios")
    if kind == "bios":
        return {"bootloader": {"bios": {}}}, {}
    secure = kind == "uefi-secure"
    if secure:
        notes.append("uefi-secure: KubeVirt enrolls its own Secure Boot keys")
    return ({"bootloader": {"efi": {"secureBoot": secure}}},
            {"smm": {"enabled": True}} if secure else {})


def _network(spec: dict[str, Any], name: str, notes: list[str]
             ) -> tuple[list[dict], list[dict], list[dict[str, Any]]]:
    """(interfaces, networks, forwards) of the VM."""
    network = spec.get("network") or {"type": "none"}
    if network["type"] == "none":
        return [], [], []
    iface: dict[str, Any] = {"name": "default", "masquerade": {}, "model": "virtio"}
    if network.get("mac"):
        iface["macAddress"] = network["mac"]
    forwards = list(network.get("port_forwards") or [])
    if network["type"] == "network":
        notes.append(f"network: libvirt network {network.get('name')!s} becomes the pod "
                     "network (a bridge to it needs Multus)"
                     + (f"; its fixed IP {network['ip']} is not kept" if network.get("ip")
                        else ""))
    if network.get("outbound") == "none":
        notes.append("network: outbound none has no field; use a NetworkPolicy")
    if spec.get("networks"):
        notes.append(f"networks: {len(spec['networks'])} further NIC(s) not exported (each "
                     "needs a Multus NetworkAttachmentDefinition)")
    if forwards:
        iface["ports"] = [{"name": f"p{f['guest_port']}-{f['protocol']}", "port": f["guest_port"],
                           "protocol": f["protocol"].upper()} for f in forwards]
        for f in forwards:
            notes.append(f"port forward {f['host_address']}:{f['host_port']} -> guest "
                         f"{f['guest_port']}/{f['protocol']}: Service {name}-forwards below")
    return [iface], [{"name": "default", "pod": {}}], forwards


def _probe(probe: dict[str, Any] | None, which: str, notes: list[str]) -> dict[str, Any] | None:
    if not probe:
        return None
    out: dict[str, Any] = {key_camel: probe[key] for key, key_camel in (
        ("initial_delay_seconds", "initialDelaySeconds"), ("period_seconds", "periodSeconds"),
        ("timeout_seconds", "timeoutSeconds"), ("failure_threshold", "failureThreshold"),
        ("success_threshold", "successThreshold")) if key in probe}
    if probe.get("tcp_socket"):
        out["tcpSocket"] = {"port": probe["tcp_socket"]["port"]}
    elif probe.get("guest_agent_ping") is not None:
        out["guestAgentPing"] = {}
    else:
        notes.append(f"{which}: a console probe has no KubeVirt equivalent; left out")
        return None
    return out


def _disks(spec: dict[str, Any], name: str, root_bytes: int, opts: dict[str, Any]
           ) -> tuple[list[dict], list[dict], list[dict]]:
    """(disks, volumes, dataVolumeTemplates)."""
    disks: list[dict] = [{"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1}]
    volumes: list[dict] = []
    templates: list[dict] = []
    if opts["container_disk"]:
        volumes.append({"name": "root", "containerDisk": {"image": opts["container_disk"]}})
    else:
        url = opts["disk_url"] or PLACEHOLDER_URL.format(name=name)
        templates.append({"metadata": {"name": f"{name}-root"}, "spec": {
            "source": {"http": {"url": url}}, "storage": _storage(root_bytes)}})
        volumes.append({"name": "root", "dataVolume": {"name": f"{name}-root"}})
    for disk in spec.get("disks") or []:
        dv = f"{name}-{disk['name']}"
        disks.append({"name": disk["name"], "disk": {"bus": "virtio"}})
        templates.append({"metadata": {"name": dv}, "spec": {
            "source": {"blank": {}}, "storage": _storage(disk["size"] * MIB)}})
        volumes.append({"name": disk["name"], "dataVolume": {"name": dv}})
    return disks, volumes, templates


def _cloud_init(spec: dict[str, Any], kind: str) -> dict[str, Any] | None:
    ci = spec.get("cloud_init") or {}
    source: dict[str, Any] = {}
    if ci.get("user_data"):
        source["userData"] = ci["user_data"]
    if ci.get("network_config"):
        source["networkData"] = ci["network_config"]
    if not source:
        return None
    key = "cloudInitNoCloud" if kind == "nocloud" else "cloudInitConfigDrive"
    return {"name": "cloudinit", key: source}


def _domain(spec: dict[str, Any], disks: list[dict], interfaces: list[dict],
            notes: list[str]) -> dict[str, Any]:
    firmware, features = _firmware(spec, notes)
    memory: dict[str, Any] = {"guest": f"{spec['memory']}Mi"}
    if spec.get("max_memory") and spec["max_memory"] > spec["memory"]:
        memory["maxGuest"] = f"{spec['max_memory']}Mi"
    if spec.get("hugepages"):
        memory["hugepages"] = {"pageSize": "2Mi"}
    devices: dict[str, Any] = {"disks": disks, "interfaces": interfaces}
    if not interfaces:
        devices["autoattachPodInterface"] = False
    if spec.get("graphics") == "none":
        devices["autoattachGraphicsDevice"] = False
    if spec.get("tpm"):
        devices["tpm"] = {}
    domain: dict[str, Any] = {"cpu": _cpu(spec), "memory": memory, "firmware": firmware,
                              "devices": devices}
    if spec.get("machine", "q35") == "q35":
        domain["machine"] = {"type": "q35"}
    else:
        notes.append("machine: pc (i440FX) left to KubeVirt's default, q35")
    if features:
        domain["features"] = features
    return domain


def manifests(spec: dict[str, Any], root_bytes: int, opts: dict[str, Any]
              ) -> tuple[list[dict[str, Any]], list[str]]:
    """The documents (VirtualMachine, then a Service if the VM has port forwards)
    and the notes on what was not carried over."""
    name = spec["name"]
    notes: list[str] = []
    disks, volumes, dv_templates = _disks(spec, name, root_bytes, opts)
    cloud_init = _cloud_init(spec, opts["cloud_init"])
    if cloud_init is not None:
        disks.append({"name": "cloudinit", "disk": {"bus": "virtio"}})
        volumes.append(cloud_init)
    interfaces, networks, forwards = _network(spec, name, notes)
    domain = _domain(spec, disks, interfaces, notes)
    labels = {**(spec.get("labels") or {}), VM_LABEL: name}
    vmi_spec: dict[str, Any] = {"domain": domain, "volumes": volumes, "networks": networks,
                                "terminationGracePeriodSeconds":
                                    spec.get("termination_grace_period", 0)}
    if spec.get("node_selector"):
        vmi_spec["nodeSelector"] = dict(spec["node_selector"])
    for field, which in (("readiness_probe", "readinessProbe"),
                         ("liveness_probe", "livenessProbe")):
        probe = _probe(spec.get(field), field, notes)
        if probe is not None:
            vmi_spec[which] = probe
    for field, what in (("cdroms", "CD-ROM media"), ("xml_patches", "xml_patches (libvirt XML)")):
        if spec.get(field):
            notes.append(f"{field}: {what} not exported")
    if list(spec.get("boot_order") or DEFAULT_BOOT_ORDER) != list(DEFAULT_BOOT_ORDER):
        notes.append("boot_order: the root disk boots first (bootOrder 1)")
    vm_spec: dict[str, Any] = {"runStrategy": spec.get("run_strategy", "Always"),
                               "template": {"metadata": {"labels": labels}, "spec": vmi_spec}}
    if dv_templates:
        vm_spec["dataVolumeTemplates"] = dv_templates
    documents: list[dict[str, Any]] = [{
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": dict(spec.get("labels") or {})},
        "spec": vm_spec}]
    if forwards:
        documents.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{name}-forwards"},
            "spec": {"selector": {VM_LABEL: name}, "ports": [
                {"name": f"p{f['host_port']}-{f['protocol']}", "port": f["host_port"],
                 "targetPort": f["guest_port"], "protocol": f["protocol"].upper()}
                for f in forwards]}})
    return documents, notes


# -- YAML, block style: values as JSON writes them (valid YAML scalars), keys plain ---------
PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n"})


def _scalar(value: Any) -> str:
    return json.dumps(value)


def _key(key: str) -> str:
    plain = PLAIN_KEY.fullmatch(key) and key.lower() not in YAML_WORDS
    return key if plain else json.dumps(key)


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{_key(key)}:")
                _emit(item, indent + 2, out)
            else:
                out.append(f"{pad}{_key(key)}: {_empty(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                lines: list[str] = []
                _emit(item, indent + 2, lines)
                out.append(f"{pad}- {lines[0][indent + 2:]}")
                out.extend(lines[1:])
            else:
                out.append(f"{pad}- {_empty(item)}")


def _empty(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(documents: list[dict[str, Any]], notes: list[str], origin: str) -> str:
    out = [f"# {origin}"] + [f"# {note}" for note in notes]
    for document in documents:
        out.append("---")
        _emit(document, 0, out)
    return "\n".join(out) + "\n"
