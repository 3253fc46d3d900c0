"""Issue 16: a VM exported as KubeVirt manifests (GET /v1/vms/NAME/export, vmctl export),
validated against KubeVirt's VirtualMachine schema (tests/data/kubevirt/README.md says
where it comes from)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from falcon import testing

from appliance.api.app import create_app

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMA = json.loads((Path(__file__).parents[2] / "data" / "kubevirt"
                     / "virtualmachine.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

FULL = {
    "name": "web1", "cpus": 2, "max_cpus": 4, "memory": "512M", "max_memory": "1G",
    "disks": [{"name": "data", "size": "2G"}],
    "network": {"type": "user", "port_forwards": [
        {"host_port": 18022, "guest_port": 22}, {"host_port": 18053, "guest_port": 53,
                                                 "protocol": "udp"}]},
    "cloud_init": {"user_data": "#cloud-config\npackages: [nginx]\n",
                   "network_config": "version: 2\n"},
    "readiness_probe": {"tcp_socket": {"port": 22}, "period_seconds": 5},
    "liveness_probe": {"guest_agent_ping": {}, "failure_threshold": 5},
    "labels": {"tier": "web"}, "firmware": "uefi", "tpm": True, "graphics": "none",
    "run_strategy": "Halted",
}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


def _create(client, spec):
    resp = client.simulate_post("/v1/vms", json=spec, params={"wait": "false"})
    assert resp.status_code in (201, 202), resp.text


def _export(client, name, **params):
    resp = client.simulate_get(f"/v1/vms/{name}/export", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/yaml")
    return resp.text, list(yaml.safe_load_all(resp.text))


def _errors(document):
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in VALIDATOR.iter_errors(document))


def test_a_full_vm_exports_a_valid_virtual_machine_and_a_service(client):
    _create(client, FULL)
    text, documents = _export(client, "web1", disk_url="https://files.example/web1.qcow2")
    vm, service = documents
    assert _errors(vm) == []
    assert (vm["apiVersion"], vm["kind"], vm["metadata"]["name"]) == ("kubevirt.io/v1",
                                                                      "VirtualMachine", "web1")
    spec = vm["spec"]
    assert spec["runStrategy"] == "Halted"
    vmi = spec["template"]["spec"]
    domain = vmi["domain"]
    assert domain["cpu"] == {"sockets": 2, "cores": 1, "threads": 1, "maxSockets": 4}
    assert domain["memory"] == {"guest": "512Mi", "maxGuest": "1024Mi"}
    assert domain["firmware"] == {"bootloader": {"efi": {"secureBoot": False}}}
    assert domain["devices"]["tpm"] == {} and domain["devices"]["autoattachGraphicsDevice"] is False
    root, data = spec["dataVolumeTemplates"]
    assert root["spec"]["source"] == {"http": {"url": "https://files.example/web1.qcow2"}}
    assert data["spec"]["source"] == {"blank": {}}
    assert data["spec"]["storage"]["resources"]["requests"]["storage"] == "2048Mi"
    assert [d["name"] for d in domain["devices"]["disks"]] == ["root", "data", "cloudinit"]
    cloud = next(v for v in vmi["volumes"] if v["name"] == "cloudinit")
    assert cloud["cloudInitNoCloud"] == {"userData": FULL["cloud_init"]["user_data"],
                                         "networkData": "version: 2\n"}
    iface = domain["devices"]["interfaces"][0]
    assert iface["masquerade"] == {} and vmi["networks"] == [{"name": "default", "pod": {}}]
    assert [(p["port"], p["protocol"]) for p in iface["ports"]] == [(22, "TCP"), (53, "UDP")]
    assert vmi["readinessProbe"] == {"tcpSocket": {"port": 22}, "initialDelaySeconds": 0,
                                     "periodSeconds": 5, "timeoutSeconds": 1,
                                     "failureThreshold": 3, "successThreshold": 1}
    assert vmi["livenessProbe"]["guestAgentPing"] == {}
    assert vmi["livenessProbe"]["failureThreshold"] == 5
    assert spec["template"]["metadata"]["labels"] == {"tier": "web", "vm.kubevirt.io/name": "web1"}
    # The forwards: a Service to the same pod, and a comment each.
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert service["spec"]["selector"] == {"vm.kubevirt.io/name": "web1"}
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in service["spec"]["ports"]] == [
        (18022, 22, "TCP"), (18053, 53, "UDP")]
    assert "# port forward 127.0.0.1:18022 -> guest 22/tcp" in text


def test_container_disk_configdrive_and_no_network(client):
    _create(client, {"name": "db1", "network": "none", "cloud_init": {"user_data": "#!/bin/sh\n"},
                     "liveness_probe": {"console": {"contains": "ok"}}, "machine": "pc"})
    text, documents = _export(client, "db1", container_disk="quay.io/me/db1:latest",
                              cloud_init="configdrive")
    assert len(documents) == 1  # no forwards, no Service
    vm = documents[0]
    assert _errors(vm) == []
    assert "dataVolumeTemplates" not in vm["spec"]
    vmi = vm["spec"]["template"]["spec"]
    assert vmi["volumes"][0] == {"name": "root",
                                 "containerDisk": {"image": "quay.io/me/db1:latest"}}
    assert vmi["volumes"][1]["cloudInitConfigDrive"] == {"userData": "#!/bin/sh\n"}
    assert vmi["domain"]["devices"]["autoattachPodInterface"] is False
    assert "livenessProbe" not in vmi and "console probe has no KubeVirt equivalent" in text
    assert "machine: pc" in text


def test_the_default_disk_url_is_a_placeholder(client):
    _create(client, {"name": "plain"})
    _text, (vm,) = _export(client, "plain")
    assert _errors(vm) == []
    url = vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"]["http"]["url"]
    assert "REPLACE-ME" in url


def test_the_schema_catches_what_kubevirt_would_refuse(client):
    """The validation can fail: a misspelt field, a wrong type, a missing required one."""
    _create(client, {"name": "plain"})
    _text, (vm,) = _export(client, "plain")
    vm["spec"]["template"]["spec"]["domain"]["cpu"]["socket"] = 1
    vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = 512
    del vm["spec"]["template"]["spec"]["domain"]["devices"]
    errors = _errors(vm)
    assert any("'socket' was unexpected" in e for e in errors), errors
    assert any("memory/guest" in e and "not of type 'string'" in e for e in errors), errors
    assert any("'devices' is a required property" in e for e in errors), errors


@pytest.mark.parametrize("params, field", [
    ({"format": "ovf"}, "format"), ({"disk_url": "file:///etc/shadow"}, "disk_url"),
    ({"disk_url": "https://a b"}, "disk_url"), ({"container_disk": "x" * 600}, "container_disk"),
    ({"disk_url": "https://a", "container_disk": "b"}, "container_disk"),
    ({"cloud_init": "iso"}, "cloud_init"),
])
def test_bad_options_are_refused_with_the_field(client, params, field):
    _create(client, {"name": "plain"})
    resp = client.simulate_get("/v1/vms/plain/export", params=params)
    assert resp.status_code == 422 and resp.json["field"] == field, resp.text


def test_vmctl_export_prints_the_yaml(client, monkeypatch, capsys):
    """The CLI's parser and command (the REST call through a stub client)."""
    from appliance.cli import build_parser, moves

    _create(client, {"name": "plain"})

    class Stub:
        def request(self, method, path, query=None, **_):
            resp = client.simulate_request(method, path, params={
                k: v for k, v in (query or {}).items() if v is not None})
            return resp.text

    args = build_parser().parse_args(["export", "plain", "--container-disk", "reg/img:1"])
    assert moves.cmd_export(Stub(), args) == 0
    (vm,) = list(yaml.safe_load_all(capsys.readouterr().out))
    assert vm["spec"]["template"]["spec"]["volumes"][0]["containerDisk"]["image"] == "reg/img:1"
    bad = subprocess.run([sys.executable, "-m", "appliance.cli", "export", "plain", "--disk-url",
                          "u", "--container-disk", "c"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not allowed with argument" in bad.stderr
