"""Domain XML built from specs, checked by defining it on libvirt's test driver."""
from pathlib import Path

import libvirt

from appliance import spec as specs
from appliance.virt import cloudinit, domain


def plan(tmp_path, **spec_extra):
    spec = specs.validate({"name": "web1", "image": "demo", **spec_extra})
    return domain.DomainPlan(vm_id="0f8fad5b-d9cb-469f-a165-70867728950e", domain_name="p-web1", vm_name="web1",
                             instance_id="inst", spec=spec, domain_type="qemu", vm_dir=Path(tmp_path),
                             mac="52:54:00:0f:8f:ad", seed_iso=Path(tmp_path) / "cidata.iso", direct_io=True)


def test_xml_defines_on_libvirt_and_carries_identity(tmp_path):
    xml = domain.build(plan(tmp_path, cpus=2, memory="256M", disks=[{"name": "data", "size": "1G"}],
                            network={"type": "user", "port_forwards": [{"host_port": 2222, "guest_port": 22}]}))
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(xml)
    live = dom.XMLDesc()
    assert dom.name() == "p-web1" and dom.UUIDString() == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert domain.read_identity(live) == {"appliance": "inst", "id": dom.UUIDString(), "name": "web1"}
    assert dom.info()[3] == 2 and dom.maxMemory() == 256 * 1024
    assert live.count("<disk type='file' device='disk'>") == 3  # root, data, cidata
    assert "<readonly/>" in live and "cache='none'" in live
    dom.undefine()


def test_no_network_no_interface(tmp_path):
    xml = domain.build(plan(tmp_path, network={"type": "none"}))
    assert "<interface" not in xml


def test_stranger_has_no_identity():
    assert domain.read_identity("<domain><name>x</name></domain>") is None


def test_seed_iso_is_cidata_with_files(tmp_path):
    import pycdlib

    files = cloudinit.seed_files("id-1", "web1", {"user_data": "#!/bin/sh\necho hi\n",
                                                  "meta_data": {"region": "home"}, "network_config": {"version": 2}})
    path = tmp_path / "seed.iso"
    cloudinit.write_seed_iso(path, files)
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    names = {}
    for name in ("meta-data", "user-data", "network-config"):
        import io
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        names[name] = out.getvalue().decode()
    iso.close()
    assert "local-hostname: web1\n" in names["meta-data"] and "region: home\n" in names["meta-data"]
    assert names["user-data"].startswith("#!/bin/sh")
    assert '"version": 2' in names["network-config"]


def test_a_metadata_only_vm_has_no_seed_and_nova_s_smbios(tmp_path):
    xml = domain.build(plan(tmp_path, network={"type": "user"},
                            cloud_init={"datasource": "metadata", "user_data": "#cloud-config\n"}))
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(xml)
    live = dom.XMLDesc()
    dom.undefine()
    assert live.count("<disk type='file' device='disk'>") == 1  # the root disk only
    assert "cidata.iso" not in live and "<smbios mode='sysinfo'/>" in live
    # what cloud-init's ds-identify reads as /sys/class/dmi/id/product_name
    assert "<entry name='product'>OpenStack Nova</entry>" in live
    assert "<entry name='manufacturer'>OpenStack Foundation</entry>" in live
    assert "<sysinfo" not in domain.build(plan(tmp_path, cloud_init={"datasource": "configdrive"}))
