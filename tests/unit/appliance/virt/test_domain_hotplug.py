"""The domain's room to grow (issue 14): <vcpu current>, <maxMemory>, a NUMA
cell and an empty virtio-mem device, from the spec's resolved maxima."""
from pathlib import Path

import defusedxml.ElementTree as DefusedET
import libvirt
import pytest

from appliance import spec as specs
from appliance.errors import Invalid
from appliance.model import hotplug
from appliance.virt import domain


def build(tmp_path, host_cpus=2, host_memory=24000, **spec_extra):
    spec = specs.validate({"name": "web1", "image": "demo", **spec_extra})
    plan = domain.DomainPlan(vm_id="0f8fad5b-d9cb-469f-a165-70867728950e", domain_name="p-web1",
                             vm_name="web1", instance_id="inst",
                             spec=hotplug.with_maxima(spec, host_cpus, host_memory),
                             domain_type="qemu", vm_dir=Path(tmp_path), mac="52:54:00:0f:8f:ad",
                             seed_iso=None, direct_io=True)
    return domain.build(plan)


def test_defaults_grow_4x_capped_by_the_host(tmp_path):
    root = DefusedET.fromstring(build(tmp_path, host_cpus=2, cpus=1, memory="128M"))
    vcpu = root.find("vcpu")
    assert (vcpu.get("current"), vcpu.text) == ("1", "2")  # 4 x 1, but the host has 2
    assert root.find("maxMemory").text == "512" and root.find("maxMemory").get("unit") == "MiB"
    cell = root.find("cpu/numa/cell")
    assert (cell.get("cpus"), cell.get("memory")) == ("0-1", "128")
    target = root.find("devices/memory[@model='virtio-mem']/target")
    assert target.find("size").text == "384" and target.find("requested").text == "0"
    assert target.find("node").text == "0" and target.find("block").text == "2"
    capped = DefusedET.fromstring(build(tmp_path, host_memory=300, memory="128M"))
    assert capped.find("maxMemory").text == "300"


def test_explicit_maxima_and_no_room(tmp_path):
    root = DefusedET.fromstring(build(tmp_path, cpus=2, max_cpus=8, memory="1G", max_memory="3G"))
    assert (root.find("vcpu").get("current"), root.find("vcpu").text) == ("2", "8")
    assert root.find("devices/memory/target/size").text == "2048"
    flat = DefusedET.fromstring(build(tmp_path, cpus=2, max_cpus=2, memory="1G", max_memory="1G"))
    assert flat.find("vcpu").get("current") is None and flat.find("vcpu").text == "2"
    assert flat.find("maxMemory") is None and flat.find("devices/memory") is None
    assert flat.find("cpu/numa") is None  # no NUMA cell without a virtio-mem area


def test_the_xml_defines_on_libvirt(tmp_path):
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(build(tmp_path, cpus=1, memory="256M"))
    try:
        assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM) == 2
        assert "virtio-mem" in dom.XMLDesc()
    finally:
        dom.undefine()


@pytest.mark.parametrize("spec, field, reason", [
    ({"cpus": 4, "max_cpus": 2}, "max_cpus", "must be at least cpus (4)"),
    ({"memory": "1G", "max_memory": "512M"}, "max_memory", "must be at least memory (1024 MiB)"),
    ({"max_cpus": 300}, "max_cpus", "must be between 1 and 256"),
])
def test_maxima_below_the_current_values_are_refused(spec, field, reason):
    with pytest.raises(Invalid) as refused:
        specs.validate({"name": "web1", "image": "demo", **spec})
    assert (refused.value.field, refused.value.reason) == (field, reason)
