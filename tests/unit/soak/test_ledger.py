"""The soak's ledger (tests/soak/clients.py) finds what it is there to find: an
acknowledged write missing, a VM lost, a VM no client asked for; and accepts either
outcome of an operation whose answer was lost."""
import threading

from tests.soak.clients import Client, Slot, check_images, check_ledger


def client(*slots: Slot) -> Client:
    c = Client(0, len(slots), world=None, go=threading.Event(), seed=1, mount=False)
    c.slots = list(slots)
    return c


def vm(name: str, vm_id: str, desired: str = "running") -> dict:
    return {"name": name, "id": vm_id, "desired_state": desired}


def no_snapshots(_name: str) -> list[str]:
    return []


def test_everything_acknowledged_and_there_is_no_finding():
    c = client(Slot(True, "a", "1", "running"), Slot())
    assert check_ledger([c], [vm("a", "1")], no_snapshots) == {}


def test_an_acknowledged_state_not_there_is_a_lost_write():
    c = client(Slot(True, "a", "1", "stopped"))
    found = check_ledger([c], [vm("a", "1", "running")], no_snapshots)
    assert list(found) == ["lost writes"]
    assert c.slots[0].desired == "running"  # the ledger follows what was seen


def test_a_vm_gone_is_lost_and_one_nobody_asked_for_is_unexpected():
    c = client(Slot(True, "a", "1", "running"))
    found = check_ledger([c], [vm("z", "9")], no_snapshots)
    assert found == {"lost VMs": [found["lost VMs"][0]], "unexpected VMs": ["z"]}


def test_a_pending_operation_may_have_happened_or_not():
    for seen in ([vm("a", "1", "running")], [vm("a", "1", "stopped")]):
        c = client(Slot(True, "a", "1", "running", pending=("state", "stopped")))
        assert check_ledger([c], seen, no_snapshots) == {}
    c = client(Slot(True, "a", "1", "running", pending=("rename", "b")))
    assert check_ledger([c], [vm("b", "1")], no_snapshots) == {}
    c = client(Slot(True, "a", "1", "running", pending=("rename", "b")))
    assert list(check_ledger([c], [vm("c", "1")], no_snapshots)) == ["lost writes"]  # neither name

def test_an_acknowledged_snapshot_must_be_there():
    c = client(Slot(True, "a", "1", "running", snapshots={"s1"}))
    assert list(check_ledger([c], [vm("a", "1")], no_snapshots)) == ["lost writes"]
    c = client(Slot(True, "a", "1", "running", snapshots={"s1"}))
    assert check_ledger([c], [vm("a", "1")], lambda _n: ["s1", "s2"]) == {}


def test_an_acknowledged_migration_must_have_left_the_vm_on_its_target():
    c = client(Slot(True, "a", "1", "running", host="h2"))
    found = check_ledger([c], [dict(vm("a", "1"), host="local")], no_snapshots)
    assert list(found) == ["lost writes"] and "@h2" in found["lost writes"][0]
    c = client(Slot(True, "a", "1", "running", host="local", pending=("host", "h2")))
    for host in ("local", "h2"):  # its answer lost: either host
        assert check_ledger([c], [dict(vm("a", "1"), host=host)], no_snapshots) == {}
        c.slots[0] = Slot(True, "a", "1", "running", host="local", pending=("host", "h2"))
    c = client(Slot(True, "a", "1", "running"))  # created through the mount: host not known
    assert check_ledger([c], [dict(vm("a", "1"), host="h2")], no_snapshots) == {}
    assert c.slots[0].host == "h2"  # known from now on


def test_an_acknowledged_upload_must_be_there_and_a_deleted_image_gone():
    c = client()
    c.images.present = {"ic0-1"}
    assert check_images([c], ["demo", "ic0-1"]) == {}
    assert list(check_images([c], ["demo"])) == ["lost images"]
    c.images.present = set()  # deleted, acknowledged
    assert list(check_images([c], ["demo", "ic0-1"])) == ["unexpected images"]
    c.images.present, c.images.pending = set(), ("upload", "ic0-2")
    assert check_images([c], ["ic0-2"]) == {} and c.images.present == {"ic0-2"}
    c.images.pending = ("delete", "ic0-2")
    assert check_images([c], []) == {} and c.images.present == set()
