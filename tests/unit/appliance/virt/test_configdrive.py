"""The seed as cloud-init reads it (appliance/virt/cloudinit.py, issue 15): an
OpenStack config drive (`config-2`, Nova's layout) and NoCloud's `public-keys`,
each written to an ISO and read back with pycdlib by its Rock Ridge names (what
Linux shows a guest) and Joliet names."""
from __future__ import annotations

import io
import json
import shutil
import subprocess

import pycdlib
import pytest
import yaml

from appliance.virt import cloudinit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0p71RU5w8rFUB514vcOWH7sWRRe+Lslf0KY8aTOaDN me@laptop"
MAC = "52:54:00:12:34:56"


def read_iso(path) -> tuple[str, dict[str, bytes]]:
    """The volume label and every file by its Rock Ridge path (checked equal to Joliet's)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {}
        for root, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                path_ = f"{root.rstrip('/')}/{name}"
                rock, joliet = io.BytesIO(), io.BytesIO()
                iso.get_file_from_iso_fp(rock, rr_path=path_)
                iso.get_file_from_iso_fp(joliet, joliet_path=path_)
                assert rock.getvalue() == joliet.getvalue()
                files[path_.lstrip("/")] = rock.getvalue()
        return iso.pvd.volume_identifier.decode().strip(), files
    finally:
        iso.close()


def drive(tmp_path, cloud_init, keys=None, nics=None):
    files = cloudinit.seed_files("inst-1", "web1", cloud_init, keys, nics)
    path = tmp_path / "seed.iso"
    cloudinit.write_seed_iso(path, files, cloudinit.volume_label(cloud_init))
    return read_iso(path)


def test_a_config_drive_has_nova_s_layout_label_and_meta_data(tmp_path):
    label, files = drive(tmp_path, {"datasource": "configdrive", "user_data": "#cloud-config\n",
                                    "meta_data": {"role": "web", "n": 2}},
                         {"laptop": KEY}, [cloudinit.nic_config(MAC, {"type": "user"}, None)])
    assert label == "config-2"
    versions = ["2012-08-10", "2015-10-15", "latest"]
    expected = {f"openstack/{v}/{f}" for v in versions
                for f in ("meta_data.json", "user_data", "vendor_data.json")}
    expected |= {f"openstack/{v}/network_data.json" for v in versions[1:]}
    assert set(files) == expected  # 2012-08-10 predates network_data.json, as in Nova
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert (meta["uuid"], meta["name"], meta["hostname"]) == ("inst-1", "web1", "web1")
    assert meta["public_keys"] == {"laptop": KEY}
    assert meta["keys"] == [{"name": "laptop", "type": "ssh", "data": KEY}]
    assert meta["meta"] == {"role": "web", "n": "2"}  # Nova's meta: strings
    assert files["openstack/2012-08-10/meta_data.json"] == files["openstack/latest/meta_data.json"]
    assert files["openstack/latest/user_data"] == b"#cloud-config\n"


def test_network_data_describes_a_fixed_ip_statically(tmp_path):
    nic = cloudinit.nic_config(MAC, {"type": "network", "name": "lab", "ip": "10.20.0.5"},
                               "10.20.0.0/24")
    _label, files = drive(tmp_path, {"datasource": "configdrive"}, nics=[nic])
    net = json.loads(files["openstack/latest/network_data.json"])
    assert net["links"] == [{"id": "tap0", "type": "phy", "ethernet_mac_address": MAC,
                             "mtu": 1500}]
    (network,) = net["networks"]
    assert (network["type"], network["link"], network["ip_address"], network["netmask"]) == (
        "ipv4", "tap0", "10.20.0.5", "255.255.255.0")
    assert network["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                  "gateway": "10.20.0.1"}]
    assert net["services"] == [{"type": "dns", "address": "10.20.0.1"}]
    assert "openstack/latest/user_data" not in files  # none given: none written, as Nova


def test_network_data_asks_dhcp_without_a_fixed_ip_and_takes_the_user_s_own():
    dhcp = cloudinit.nic_config(MAC, {"type": "network", "name": "default"}, None)
    assert cloudinit.network_data([dhcp])["networks"] == [
        {"id": "network0", "link": "tap0", "type": "ipv4_dhcp"}]
    user = cloudinit.nic_config(MAC, {"type": "user"}, None)
    assert cloudinit.network_data([user])["networks"][0]["ip_address"] == "10.0.2.15"
    own = {"links": [], "networks": [], "services": []}
    files = cloudinit.seed_files("i", "w", {"datasource": "configdrive", "network_config": own},
                                 None, [user])
    assert json.loads(files["openstack/latest/network_data.json"]) == own


def test_nocloud_meta_data_carries_the_public_keys(tmp_path):
    label, files = drive(tmp_path, None, {"laptop": KEY, "desk": KEY.replace("me@", "you@")})
    assert label == "cidata"
    # the flat lines minimal guests grep stay flat; the keys a YAML list after them
    assert files["meta-data"].decode() == (
        f"instance-id: inst-1\nlocal-hostname: web1\npublic-keys:\n  - {json.dumps(KEY)}\n"
        f"  - {json.dumps(KEY.replace('me@', 'you@'))}\n")
    assert yaml.safe_load(files["meta-data"]) == {  # what cloud-init reads
        "instance-id": "inst-1", "local-hostname": "web1",
        "public-keys": [KEY, KEY.replace("me@", "you@")]}
    _label, files = drive(tmp_path, {"meta_data": {"tags": ["a"]}}, {"laptop": KEY})
    meta = json.loads(files["meta-data"])  # nested: written as JSON, which is YAML
    assert meta["public-keys"] == [KEY] and meta["tags"] == ["a"]
    _label, files = drive(tmp_path, {"meta_data": "region: home\n"}, {"laptop": KEY})
    assert yaml.safe_load(files["meta-data"])["public-keys"] == [KEY]
    assert files["meta-data"].decode() == (
        f"region: home\ninstance-id: inst-1\nlocal-hostname: web1\npublic-keys:\n"
        f"  - {json.dumps(KEY)}\n")
    _label, files = drive(tmp_path, None)
    assert b"public-keys" not in files["meta-data"]


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid (util-linux) not installed")
def test_blkid_sees_the_label_cloud_init_looks_for(tmp_path):
    files = cloudinit.seed_files("i", "w", {"datasource": "configdrive"}, None, [])
    path = tmp_path / "cd.iso"
    cloudinit.write_seed_iso(path, files, "config-2")
    out = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "config-2"  # cloud-init finds the drive by this (blkid -t LABEL=)


def test_the_vms_labels_are_the_drives_meta_and_meta_data_wins():
    files = cloudinit.seed_files("id-1", "web1", {"datasource": "configdrive",
                                                  "meta_data": {"role": "db", "tier": 2}},
                                 labels={"role": "web", "team": "a"})
    meta = json.loads(files["openstack/latest/meta_data.json"])["meta"]
    assert meta == {"role": "db", "team": "a", "tier": "2"}
    # NoCloud's meta-data is the user's meta_data alone, as before.
    nocloud = cloudinit.seed_files("id-1", "web1", {"meta_data": {"tier": 2}}, labels={"team": "a"})
    assert b"team" not in nocloud["meta-data"]
