"""The spec's cpu and hugepages fields (issue 14, part F)."""
import pytest

from appliance import spec as specs
from appliance.errors import Invalid
from appliance.model.cpu import topology


def valid(**extra):
    return specs.validate({"name": "web1", "image": "demo", **extra})


def refusal(**extra):
    with pytest.raises(Invalid) as err:
        valid(**extra)
    return err.value.field, err.value.reason


def test_defaults():
    spec = valid()
    assert spec["cpu"] == {"mode": "cluster", "dedicated": False} and spec["hugepages"] is False


def test_topology_must_equal_the_maximum_vcpus():
    assert valid(cpus=4, cpu={"sockets": 2, "cores": 2})["cpu"]["sockets"] == 2
    field, reason = refusal(cpus=4, cpu={"sockets": 3})
    assert field == "cpu.sockets" and "must equal the VM's maximum vCPUs (4)" in reason
    assert refusal(cpu={"threads": 0})[0] == "cpu.threads"
    assert refusal(cpu={"cores": 100000})[1] == "must be a whole number from 1 to 256"
    assert refusal(cpu={"cores": "2"})[0] == "cpu.cores"
    assert topology({"sockets": 2}, 2) == (2, 1, 1) and topology({}, 3) == (1, 3, 1)


def test_modes_and_unknown_fields():
    assert valid(cpu={"mode": "host-model"})["cpu"]["mode"] == "host-model"
    assert refusal(cpu={"mode": "max"}) == ("cpu.mode", "must be one of cluster, host-model, host-passthrough")
    assert refusal(cpu={"model": "Haswell"})[0] == "cpu"
    assert refusal(cpu="fast")[0] == "cpu"
    assert refusal(hugepages="yes") == ("hugepages", "must be true or false")
    assert refusal(cpu={"dedicated": 1})[0] == "cpu.dedicated"


def test_host_passthrough_only_for_a_vm_pinned_to_one_host():
    field, reason = refusal(cpu={"mode": "host-passthrough"})
    assert field == "cpu.mode" and "pinned to one host" in reason and "live migration" in reason
    spec = valid(cpu={"mode": "host-passthrough"}, node_selector={"appliance/host": "h1"})
    assert spec["cpu"]["mode"] == "host-passthrough"
