"""The seed the controller writes for a VM with SSH keys and a config drive
(issue 15): the creator's keys in meta_data.json and NoCloud's meta-data, the
fixed IP on the appliance's network in network_data.json, read back with pycdlib."""
from __future__ import annotations

import io
import json

import pycdlib
from tests.unit.appliance.controller.controller_harness import settle
from tests.unit.appliance.teams import add_user
from tests.unit.appliance.test_keys import ALICE, ED

from appliance.access.principal import acting_as


def read(iso_path, path: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=path)
        return out.getvalue()
    finally:
        iso.close()


def test_the_controller_writes_the_keys_and_a_config_drive(service, controller, clock):
    people = service
    add_user(people.store, "alice", "operator")
    people.store.update_host("local", storage="shared")
    with acting_as(ALICE):
        people.create_key({"name": "laptop", "public_key": ED})
        people.create_network({"name": "lab", "subnet": "10.20.0.0/24"})
        vm, _ = people.create_vm({"name": "web1", "state": "stopped", "cloud_init": {
            "keys": ["laptop"], "datasource": "configdrive", "user_data": "#cloud-config\n"},
            "network": {"type": "network", "name": "lab", "ip": "10.20.0.5"}})
        settle(controller, clock, passes=1)
        seed = controller.ctx.config.vm_dir(vm["id"]) / "cidata.iso"
        meta = json.loads(read(seed, "/openstack/latest/meta_data.json"))
        assert meta["public_keys"] == {"laptop": ED} and meta["uuid"] == vm["id"]
        net = json.loads(read(seed, "/openstack/latest/network_data.json"))
        row = people.store.get_vm_by_id(vm["id"])
        assert net["links"][0]["ethernet_mac_address"] == row["mac"]
        assert net["networks"][0]["ip_address"] == "10.20.0.5"
        assert net["networks"][0]["routes"][0]["gateway"] == "10.20.0.1"
        people.update_vm("web1", {"cloud_init": {"keys": ["laptop"]}})  # back to NoCloud
        settle(controller, clock, passes=1)
        people.set_state("web1", "running")
        settle(controller, clock, passes=2)
        meta_data = read(seed, "/meta-data").decode()
        assert "local-hostname: web1\n" in meta_data  # flat, as the demo guest reads it
        assert f"public-keys:\n  - {json.dumps(ED)}\n" in meta_data
