"""vmctl host / group / migrate, and create's placement options, against the real
REST app served over HTTP in a thread (the service on the test driver, no controller)."""
import json
import time

import pytest

from appliance.model import OPEN_OP_STATES
from tests.unit.conftest import TEST_HOST_INFO

def heartbeat(store, name: str) -> None:
    store.upsert_host({"name": name, "up": 1, "last_seen": time.time(), "info": TEST_HOST_INFO})


def settle(store, name: str, state: str) -> None:
    vm = store.get_vm(name)
    store.update_vm(vm["id"], bump=False, observed_state=state, desired_state=state)
    for op in store.operations_of_vm(vm["id"], OPEN_OP_STATES):
        store.update_operation(op["id"], status="succeeded", finished=time.time())


def test_host_add_list_show_remove(vmctl, store):
    code, out, _ = vmctl("host", "add", "h2", "qemu+ssh://root@h2/system", "--label", "zone=b", "--label", "gpu=yes",
                         "--storage", "nfs1", "--cpu-ratio", "4", "--migration-address", "10.0.0.2")
    assert code == 0 and out == "h2: added (qemu+ssh://root@h2/system), down: not connected yet\n"
    heartbeat(store, "h2")
    code, out, _ = vmctl("host", "list")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "STATE", "VMS", "CPUS", "MEMORY", "DISK", "STORAGE", "LABELS", "URI"]
    h2 = rows[0].split()
    assert h2[:4] == ["h2", "enabled", "0", f"0/{TEST_HOST_INFO['cpus'] * 4}"]
    assert h2[6:] == ["nfs1", "gpu=yes,zone=b", "qemu+ssh://root@h2/system"]
    assert rows[1].split()[0] == "local"
    code, out, _ = vmctl("host", "show", "h2")
    shown = {line[:13].strip(): line[14:] for line in out.splitlines()}  # "label         value"
    assert shown["admin state"] == "enabled" and shown["storage"] == "nfs1"
    assert shown["labels"] == "gpu=yes,zone=b" and shown["migration"] == "10.0.0.2"
    assert shown["cpus"] == f"0/{TEST_HOST_INFO['cpus'] * 4} (ratio 4)"
    code, out, _ = vmctl("--json", "host", "list")
    assert [h["name"] for h in json.loads(out)] == ["h2", "local"]
    assert vmctl("host", "remove", "h2")[:2] == (0, "h2: removed\n")
    code, _, err = vmctl("host", "show", "h2")
    assert code == 1 and "HTTP 404" in err


def test_host_add_refused_names_the_field(vmctl):
    code, _, err = vmctl("host", "add", "h2", "no-uri-here")
    assert code == 1 and "HTTP 422" in err and "(field: uri)" in err
    code, _, err = vmctl("host", "add", "h2", "qemu:///system", "--ram-ratio", "1000")
    assert code == 1 and "(field: ram_ratio)" in err


def test_bad_pair_is_a_usage_error(vmctl):
    with pytest.raises(SystemExit) as exit_:
        vmctl("host", "add", "h2", "qemu:///system", "--label", "novalue")
    assert exit_.value.code == 2


def test_host_state_prints_the_drain(vmctl, store):
    vmctl("create", "web1", "--stopped", "--no-wait")
    settle(store, "web1", "stopped")
    code, out, _ = vmctl("host", "state", "local", "maintenance")
    assert code == 1  # web1 has nowhere to go
    assert out.splitlines()[0] == "local: maintenance" and "web1: stays: no host fits web1" in out
    vmctl("host", "state", "local", "enabled")
    vmctl("host", "add", "h2", "qemu+ssh://root@h2/system")
    heartbeat(store, "h2")
    code, out, _ = vmctl("host", "state", "local", "maintenance")
    assert code == 0 and "  web1: moving (stopped) to h2 (operation " in out


def test_create_with_host_group_and_node_selector(vmctl, store):
    vmctl("host", "add", "h2", "qemu+ssh://root@h2/system", "--label", "gpu=yes")
    heartbeat(store, "h2")
    assert vmctl("group", "create", "web", "anti-affinity")[:2] == (0, "web: created (anti-affinity)\n")
    code, out, _ = vmctl("create", "web1", "--stopped", "--no-wait", "--group", "web", "--host", "local")
    assert code == 0 and out.startswith("accepted: operation ")
    vmctl("create", "web2", "--stopped", "--no-wait", "--group", "web", "--node-selector", "gpu=yes")
    code, out, _ = vmctl("list")
    hosts = {line.split()[0]: line.split()[6] for line in out.splitlines()[1:]}
    assert hosts == {"web1": "local", "web2": "h2"}
    code, _, err = vmctl("create", "web3", "--stopped", "--no-wait", "--node-selector", "gpu=no")
    assert code == 1 and "HTTP 409" in err and "LabelsFilter" in err
    code, out, _ = vmctl("group", "list")
    assert out.splitlines()[1].split(None, 2) == ["web", "anti-affinity", "web1@local, web2@h2"]
    code, _, err = vmctl("group", "delete", "web")
    assert code == 1 and "HTTP 409" in err


def test_group_create_delete(vmctl):
    vmctl("group", "create", "db", "soft-affinity")
    assert json.loads(vmctl("--json", "group")[1])[0]["policy"] == "soft-affinity"
    assert vmctl("group", "delete", "db")[:2] == (0, "db: deleted\n")
    assert vmctl("group")[1] == "NAME  POLICY  MEMBERS\n"


def test_migrate(vmctl, store, service):
    vmctl("create", "web1", "--stopped", "--no-wait")
    settle(store, "web1", "running")
    assert vmctl("migrate", "web1", "local")[1] == "web1: already on local\n"
    code, _, err = vmctl("migrate", "web1", "h2")
    assert code == 1 and "HTTP 404" in err
    vmctl("host", "add", "h2", "qemu+ssh://root@h2/system")
    code, _, err = vmctl("migrate", "web1", "h2", "--no-wait")
    assert code == 1 and "h2 is down" in err
    heartbeat(store, "h2")
    code, out, _ = vmctl("migrate", "web1", "h2", "--force", "--no-wait")
    assert code == 0 and out.startswith("accepted: operation ")
    op = service.get_operation(out.split()[-1])
    assert op["kind"] == "migrate" and op["params"]["target"] == "h2" and op["params"]["force"] is True
