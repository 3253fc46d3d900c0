"""vmctl get (disks, port forwards, addresses, conditions) and vmctl host set
(PATCH /v1/hosts/NAME), against the real REST app over HTTP (issue 16)."""
from __future__ import annotations

import json

import pytest


def rows(out: str) -> list[tuple[str, str]]:
    """`label         value` lines as (label, value)."""
    return [(line[:13].strip(), line[14:]) for line in out.splitlines()]


def test_get_shows_forwards_disks_addresses_and_conditions(vmctl, store):
    code, _, err = vmctl("create", "web1", "--stopped", "--no-wait", "--forward", "8022:22",
                         "--forward", "5353:53/udp", "--disk", "data:1G", "--label", "tier=web")
    assert code == 0, err
    vm = store.get_vm("web1")
    address = {"interface": "net0", "mac": "52:54:00:00:00:01", "address": "10.0.2.15",
               "prefix": 24, "source": "user-mode"}
    store.update_vm(vm["id"], bump=False, observed_state="running", desired_state="running",
                    addresses=json.dumps([address]), restart_required=True)
    code, out, err = vmctl("get", "web1")
    assert code == 0, err
    shown = rows(out)
    for row in [("name", "web1"), ("state", "running"), ("network", "user"),
                ("labels", "tier=web"),
                ("forward", "127.0.0.1:8022 -> 22/tcp"), ("forward", "127.0.0.1:5353 -> 53/udp"),
                ("address", "net0 10.0.2.15/24 (user-mode)"),
                ("disk", "root (image demo)"), ("disk", "data 1024M"),
                ("condition", "Converged yes")]:
        assert row in shown, (row, out)
    conditions = {value.split()[0]: value for label, value in shown if label == "condition"}
    assert set(conditions) == {"Ready", "Converged", "RestartRequired"}
    assert conditions["RestartRequired"].startswith("RestartRequired yes")
    assert [label for label, _ in shown].count("restart") == 1

    code, out, _ = vmctl("--json", "get", "web1")
    answer = json.loads(out)
    assert answer["spec"]["disks"] == [{"name": "data", "size": 1024}]
    assert answer["status"]["addresses"] == [address]


def test_get_of_a_stopped_vm_says_it_has_no_address(vmctl):
    vmctl("create", "web2", "--stopped", "--no-wait", "--network", "none")
    shown = rows(vmctl("get", "web2")[1])
    assert ("address", "-") in shown and ("network", "none") in shown
    assert not [row for row in shown if row[0] == "forward"]


def test_host_set_changes_what_it_is_given_and_keeps_the_rest(vmctl, service):
    assert vmctl("host", "add", "h2", "qemu+ssh://root@h2/system", "--label", "zone=b",
                 "--label", "gpu=yes", "--storage", "nfs1", "--migration-address",
                 "10.0.0.2")[0] == 0
    code, out, err = vmctl("host", "set", "h2", "--label", "zone=c", "--label", "ssd=yes",
                           "--unset-label", "gpu", "--cpu-ratio", "2", "--ram-ratio", "1.25",
                           "--uri", "qemu+ssh://root@h2.lab/system")
    assert (code, out) == (0, "h2: cpu_ratio, labels, ram_ratio, uri changed\n"), err
    host = service.get_host("h2")
    assert host["labels"] == {"zone": "c", "ssd": "yes"}
    assert (host["cpu_ratio"], host["ram_ratio"]) == (2.0, 1.25)
    assert host["uri"] == "qemu+ssh://root@h2.lab/system"
    assert (host["storage"], host["migration_address"]) == ("nfs1", "10.0.0.2")  # kept
    assert vmctl("host", "set", "h2", "--migration-address", "")[0] == 0
    assert service.get_host("h2")["migration_address"] is None
    code, out, _ = vmctl("--json", "host", "set", "h2", "--storage", "nfs2")
    assert json.loads(out)["storage"] == "nfs2"


def test_host_set_refusals(vmctl, capsys):
    code, _, err = vmctl("host", "set", "nope", "--cpu-ratio", "2")
    assert code == 1 and "HTTP 404" in err
    code, _, err = vmctl("host", "set", "local", "--ram-ratio", "1000")
    assert code == 1 and "(field: ram_ratio)" in err
    with pytest.raises(SystemExit) as exit_:
        vmctl("host", "set", "local")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("vmctl host set: nothing to change: give --uri, --label, "
                                       "--cpu-ratio... (see vmctl host set --help)\n")
