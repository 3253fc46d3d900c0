"""vmctl network list | show | add | rm (issue 15), against the real REST app served
over HTTP in a thread (no controller)."""
from __future__ import annotations

import json


def test_add_list_show_rm(vmctl):
    code, out, err = vmctl("network", "add", "lab", "--subnet", "10.20.0.0/24",
                           "--dhcp", "10.20.0.100-10.20.0.199", "--domain", "lab.internal")
    assert (code, err) == (0, ""), err
    assert out == "lab: created (nat 10.20.0.0/24, gateway 10.20.0.1)\n"
    assert vmctl("network", "add", "lan", "--kind", "bridge", "--bridge", "br0")[1] == \
        "lan: created (bridge on br0)\n"
    code, out, _ = vmctl("network", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SUBNET", "DHCP", "DOMAIN", "BRIDGE", "VMS"]
    assert lines[1].split() == ["lab", "nat", "10.20.0.0/24", "10.20.0.100-10.20.0.199",
                                "lab.internal", "-", "-"]
    assert lines[2].split() == ["lan", "bridge", "-", "-", "-", "br0", "-"]
    shown = json.loads(vmctl("network", "show", "lab")[1])
    assert shown["dhcp"] == {"start": "10.20.0.100", "end": "10.20.0.199"}
    assert [n["name"] for n in json.loads(vmctl("--json", "network", "list")[1])] == ["lab", "lan"]
    assert vmctl("network", "rm", "lan")[:2] == (0, "lan: deleted\n")
    assert [n["name"] for n in json.loads(vmctl("--json", "network", "list")[1])] == ["lab"]


def test_refusals_say_the_field(vmctl):
    code, _, err = vmctl("network", "add", "lab", "--subnet", "10.20.0.1/24")
    assert code == 1 and "HTTP 422" in err and "subnet" in err and "10.20.0.0/24" in err
    code, _, err = vmctl("network", "add", "lab", "--subnet", "10.20.0.0/24", "--dhcp", "10.20.0.9")
    assert code == 1 and "dhcp.end" in err
    code, _, err = vmctl("network", "rm", "nosuch")
    assert code == 1 and "HTTP 404" in err
    vmctl("network", "add", "lab", "--subnet", "10.20.0.0/24")
    vmctl("create", "web1", "--stopped", "--no-wait", "--network", "network:lab")
    code, _, err = vmctl("network", "rm", "lab")
    assert code == 1 and "HTTP 409" in err and "web1" in err
