"""What a guest agent reports as its addresses, as the appliance keeps it."""
from appliance.virt.guestaddrs import checked

# As libvirt returns qemu-guest-agent 7.2's guest-network-get-interfaces from
# the demo guest on a user-mode NIC, a few seconds after boot.
DEMO_GUEST = {
    "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"type": 0, "addr": "127.0.0.1", "prefix": 8},
                                                    {"type": 1, "addr": "::1", "prefix": 128}]},
    "eth0": {"hwaddr": "52:54:00:12:34:56", "addrs": [
        {"type": 0, "addr": "10.0.2.15", "prefix": 24},
        {"type": 1, "addr": "fe80::5054:ff:fe12:3456", "prefix": 64}]},
}


def test_loopback_and_link_local_addresses_are_left_out():
    assert checked(DEMO_GUEST, "agent") == [{"interface": "eth0", "mac": "52:54:00:12:34:56",
                                             "address": "10.0.2.15", "prefix": 24,
                                             "source": "agent"}]


def test_an_ipv4_link_local_address_is_left_out_and_a_global_ipv6_kept():
    found = {"eth0": {"hwaddr": None, "addrs": [{"addr": "169.254.7.1", "prefix": 16},
                                                {"addr": "2001:db8::5", "prefix": 64}]}}
    assert [a["address"] for a in checked(found, "agent")] == ["2001:db8::5"]
