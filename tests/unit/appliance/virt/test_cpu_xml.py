"""The CPU parts of domain XML (issue 14, part F): model per mode, topology,
pinning, hugepages; each checked by defining the domain on libvirt's test driver."""
from pathlib import Path

import defusedxml.ElementTree as DefusedET
import libvirt
import pytest

from appliance import spec as specs
from appliance.virt import cpu_xml, domain

BASELINE = """<cpu mode='custom' match='exact'>
  <model fallback='forbid'>Haswell-noTSX</model>
  <vendor>Intel</vendor>
  <feature policy='require' name='vme'/>
  <feature policy='disable' name='rdrand'/>
</cpu>"""


def plan(tmp_path, domain_type="qemu", cluster_cpu=None, pinned=None, shared=None, **spec_extra):
    spec = specs.validate({"name": "web1", "image": "demo", **spec_extra})
    return domain.DomainPlan(
        vm_id="0f8fad5b-d9cb-469f-a165-70867728950e", domain_name="p-web1", vm_name="web1",
        instance_id="inst", spec=spec, domain_type=domain_type, vm_dir=Path(tmp_path),
        mac="52:54:00:0f:8f:ad", seed_iso=Path(tmp_path) / "cidata.iso", direct_io=True,
        cluster_cpu=cluster_cpu, pinned_cpus=pinned, shared_cpus=shared)


def parsed(p):
    return DefusedET.fromstring(domain.build(p))


def defined_xml(p) -> str:
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(domain.build(p))
    try:
        return dom.XMLDesc()
    finally:
        dom.undefine()


def test_cluster_mode_uses_the_baseline_model_and_features(tmp_path):
    root = parsed(plan(tmp_path, cluster_cpu=BASELINE))
    cpu = root.find("cpu")
    assert cpu.attrib == {"mode": "custom", "match": "exact", "check": "partial"}
    assert cpu.findtext("model") == "Haswell-noTSX" and cpu.findtext("vendor") == "Intel"
    assert [(f.get("policy"), f.get("name")) for f in cpu.findall("feature")] == [
        ("require", "vme"), ("disable", "rdrand")]
    live = defined_xml(plan(tmp_path, cluster_cpu=BASELINE))
    assert "<model fallback='forbid'>Haswell-noTSX</model>" in live


def test_cluster_mode_without_a_baseline_keeps_the_old_behaviour(tmp_path):
    assert parsed(plan(tmp_path, domain_type="kvm")).find("cpu").get("mode") == "host-model"
    assert parsed(plan(tmp_path)).find("cpu").get("mode") is None  # TCG's default model


@pytest.mark.parametrize("bad", [
    "<cpu><model>Has well</model></cpu>",  # not a cpu_map name
    "<cpu><model>Haswell</model><feature name='x' policy='sometimes'/></cpu>",
    "<cpu/>", "not xml",
])
def test_a_malformed_baseline_is_not_copied(tmp_path, bad):
    assert cpu_xml.model_parts(bad) is None
    assert parsed(plan(tmp_path, cluster_cpu=bad)).find("cpu/model") is None


def test_host_passthrough_and_host_model(tmp_path):
    pinned = {"node_selector": {"appliance/host": "h1"}, "cpu": {"mode": "host-passthrough"}}
    assert parsed(plan(tmp_path, domain_type="kvm", **pinned)).find("cpu").get("mode") == "host-passthrough"
    # TCG cannot pass a host CPU through: 'maximum' is what it can do
    assert parsed(plan(tmp_path, **pinned)).find("cpu").get("mode") == "maximum"
    assert parsed(plan(tmp_path, cpu={"mode": "host-model"})).find("cpu").get("mode") == "host-model"


def test_topology_given_and_default(tmp_path):
    topo = parsed(plan(tmp_path, cpus=4, cpu={"sockets": 2, "cores": 1, "threads": 2})).find("cpu/topology")
    assert (topo.get("sockets"), topo.get("cores"), topo.get("threads")) == ("2", "1", "2")
    default = parsed(plan(tmp_path, cpus=3)).find("cpu/topology")
    assert (default.get("sockets"), default.get("cores"), default.get("threads")) == ("1", "3", "1")
    live = defined_xml(plan(tmp_path, cpus=4, cpu={"sockets": 2, "cores": 2}))
    assert "<topology sockets='2' dies='1' cores='2' threads='1'/>" in live


def test_dedicated_vcpus_are_pinned_and_the_emulator_stays_on_shared_cpus(tmp_path):
    p = plan(tmp_path, cpus=2, cpu={"dedicated": True}, pinned=(2, 3), shared=(0, 1))
    root = parsed(p)
    pins = {pin.get("vcpu"): pin.get("cpuset") for pin in root.findall("cputune/vcpupin")}
    assert pins == {"0": "2", "1": "3"}
    assert root.find("cputune/emulatorpin").get("cpuset") == "0-1"
    live = defined_xml(p)
    assert "<vcpupin vcpu='1' cpuset='3'/>" in live


def test_a_shared_vm_never_lands_on_dedicated_cpus(tmp_path):
    root = parsed(plan(tmp_path, cpus=2, shared=(0, 1, 5)))
    assert root.find("vcpu").get("cpuset") == "0-1,5"
    assert root.find("cputune/vcpupin") is None
    assert root.find("cputune/emulatorpin").get("cpuset") == "0-1,5"
    # a host without a dedicated set: nothing pinned, as before
    assert parsed(plan(tmp_path)).find("cputune") is None


def test_hugepages(tmp_path):
    assert parsed(plan(tmp_path, hugepages=True)).find("memoryBacking/hugepages") is not None
    assert parsed(plan(tmp_path)).find("memoryBacking") is None


def test_cpuset_text():
    assert cpu_xml.cpuset([3, 0, 1, 2, 6, 8, 9]) == "0-3,6,8-9"
    assert cpu_xml.cpuset([]) == ""
