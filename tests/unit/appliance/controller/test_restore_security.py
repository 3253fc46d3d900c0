"""Security review of issue 14: a backup's manifest lies on a target others may
write (SECURITY.md), so what it says of the VM's xml_patches (root's power) is
not trusted by a restore."""
from __future__ import annotations

import json

from tests.unit.appliance.controller.controller_harness import settle
from tests.unit.appliance.controller.test_controller_restores import (  # noqa: F401 - fixtures
    INCREMENTAL,
    backed_up_vm,
    shared,
    target,
)

from appliance import backup_chain

PATCHES = [{"op": "add", "xpath": "/domain/devices",
            "xml": "<disk type='file' device='disk'><source file='/etc/shadow'/>"
                   "<target dev='vdz' bus='virtio'/></disk>"}]


def tamper(target, vm_id: str, backup_id: str, patches: list) -> None:
    folder = backup_chain.backup_folder(target, vm_id, backup_id)
    manifest = json.loads((folder / backup_chain.MANIFEST).read_text())
    manifest["vm"]["spec"]["xml_patches"] = patches
    (folder / backup_chain.MANIFEST).write_text(json.dumps(manifest))


def test_a_restore_does_not_take_xml_patches_from_a_manifest(shared, controller, clock, target):
    """Finding: a restore into a new VM took the manifest's spec as it was, so whoever
    can write the target (a share) wrote xml_patches that the admin's restore then
    gave QEMU, as root (here: /etc/shadow as a disk). A manifest's patches are kept
    only when they are the patches the source VM has in the store."""
    source = backed_up_vm(shared, controller, clock, target)
    tamper(target, source["id"], INCREMENTAL, PATCHES)
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})  # an admin's
    assert vm["spec"]["xml_patches"] == []
    settle(controller, clock, passes=2)
    assert shared.store.get_operation(op["id"])["status"] == "succeeded"
    assert "/etc/shadow" not in (shared.store.get_vm_by_id(vm["id"])["domain_xml"] or "")
    assert any("xml_patches" in e["message"] and "not restored" in e["message"]
               for e in shared.list_events("web1-restored"))
    # the patches the source has (an admin's, in the store) are restored with it
    shared.update_vm("web1", {"xml_patches": PATCHES[:0] + [
        {"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='host'/>"}]})
    kept = shared.get_vm("web1")["spec"]["xml_patches"]
    tamper(target, source["id"], INCREMENTAL, kept)
    vm, _ = shared.restore_backup(INCREMENTAL, {"name": "web1-again"})
    assert vm["spec"]["xml_patches"] == kept
