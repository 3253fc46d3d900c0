"""vmctl create --allow / --allow-out and vmctl firewall (issue 15), against the real
REST app served over HTTP in a thread (no controller)."""
from __future__ import annotations

import json

import pytest


def test_create_allow_and_the_firewall_command(vmctl):
    vmctl("network", "add", "lab", "--subnet", "10.20.0.0/24")
    code, _, err = vmctl("create", "web1", "--stopped", "--no-wait", "--network", "network:lab",
                         "--allow", "tcp:22:10.0.0.0/8", "--allow", "icmp",
                         "--allow-out", "udp:53:10.20.0.1")
    assert (code, err) == (0, ""), err
    rules = json.loads(vmctl("--json", "firewall", "web1")[1])
    assert rules == [{"direction": "in", "proto": "tcp", "port": 22, "from": "10.0.0.0/8"},
                     {"direction": "in", "proto": "icmp"},
                     {"direction": "out", "proto": "udp", "port": 53, "to": "10.20.0.1/32"}]
    code, out, _ = vmctl("firewall", "web1", "--allow", "tcp:8000-8100")
    assert code == 0 and out.splitlines()[1].split() == ["in", "tcp", "8000-8100", "any"]
    assert vmctl("firewall", "web1", "--clear")[1] == \
        "web1: no rules (traffic open; anti-spoofing on)\n"
    # a server group's rules
    vmctl("group", "create", "webs", "anti-affinity")
    code, out, _ = vmctl("firewall", "--group", "webs", "--allow", "tcp:80")
    assert code == 0 and out.splitlines()[1].split() == ["in", "tcp", "80", "any"]


def test_refusals_say_the_field(vmctl):
    code, _, err = vmctl("create", "web1", "--stopped", "--no-wait", "--allow", "tcp:22")
    assert code == 1 and "HTTP 422" in err and "firewall" in err and "user mode" in err
    with pytest.raises(SystemExit):  # a usage error: nothing sent
        vmctl("create", "web1", "--stopped", "--allow", "ssh")
    vmctl("network", "add", "lab", "--subnet", "10.20.0.0/24")
    code, _, err = vmctl("create", "web1", "--stopped", "--no-wait", "--network", "network:lab",
                         "--allow", "tcp:22:10.0.0.1/8")
    assert code == 1 and "firewall[0].from" in err and "10.0.0.0/8" in err
