import pytest

from appliance import spec
from appliance.errors import Invalid


def valid(**extra):
    return spec.validate({"name": "web1", "image": "demo", **extra})


def test_defaults_are_filled_in():
    result = valid()
    assert result["cpus"] == 1 and result["memory"] == 128
    assert result["run_strategy"] == "Always"
    assert result["network"] == {"type": "user", "port_forwards": []}


@pytest.mark.parametrize("value, mib", [(512, 512), ("512M", 512), ("2G", 2048), ("1GiB", 1024),
                                        ("65536K", 64), (" 1g\n", 1024)])
def test_memory_units(value, mib):
    assert valid(memory=value)["memory"] == mib


@pytest.mark.parametrize("field, value", [
    ("name", "Web_1"), ("name", "-web"), ("name", "a" * 64), ("cpus", 0), ("cpus", "two"), ("cpus", True),
    ("memory", "12X"), ("memory", 8), ("memory", "1000K"), ("run_strategy", "Sometimes"),
    ("termination_grace_period", -1), ("labels", {"bad key!": "x"}), ("image", ""),
])
def test_bad_fields_name_the_field(field, value):
    with pytest.raises(Invalid) as err:
        valid(**{field: value})
    assert err.value.field.split(".")[0] == field


def test_unknown_field_is_refused():
    with pytest.raises(Invalid) as err:
        valid(colour="blue")
    assert err.value.field == "colour"


def test_port_forwards_stay_on_loopback():
    fwd = {"host_port": 2222, "guest_port": 22}
    assert valid(network={"type": "user", "port_forwards": [fwd]})["network"]["port_forwards"][0] == {
        "host_port": 2222, "guest_port": 22, "protocol": "tcp", "host_address": "127.0.0.1"}
    with pytest.raises(Invalid) as err:
        valid(network={"type": "user", "port_forwards": [{**fwd, "host_address": "0.0.0.0"}]})
    assert err.value.field == "network.port_forwards[0].host_address"
    with pytest.raises(Invalid) as err:
        valid(network={"type": "user", "port_forwards": [fwd, fwd]})
    assert err.value.field == "network.port_forwards[1].host_port"


def test_fixed_ip_needs_a_libvirt_network():
    assert valid(network={"type": "network", "name": "default", "ip": "192.168.122.50"})["network"]["ip"] == \
        "192.168.122.50"
    with pytest.raises(Invalid) as err:
        valid(network={"type": "user", "ip": "10.0.2.20"})
    assert err.value.field == "network.ip"


def test_disks_and_cloud_init():
    result = valid(disks=[{"name": "data", "size": "1G"}], cloud_init={"user_data": "#!/bin/sh\n"})
    assert result["disks"] == [{"name": "data", "size": 1024}]
    with pytest.raises(Invalid) as err:
        valid(disks=[{"name": "root", "size": "1G"}])
    assert err.value.field == "disks[0].name"
    with pytest.raises(Invalid) as err:
        valid(cloud_init={"user_data": 5})
    assert err.value.field == "cloud_init.user_data"
