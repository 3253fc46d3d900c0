"""The in-place restore handler (OpKind.RESTORE): a stopped VM's disks replaced
by a backup's chain, flattened.

The chain is verified first (appliance/backup_chain.py: manifests, backing
headers, qemu-img check), then each disk is flattened into a new standalone
qcow2 next to the live one (`.NAME.restore`), and only when every disk is
written are they renamed over the old files (each rename atomic): a failure
or a cancel before that leaves the VM's disks untouched. A disk the spec has
grown since the backup is grown back to the spec's size. The domain's
checkpoints described the old files: their metadata goes, and the next backup
is a full one. Internal snapshots live inside the disk files, so a VM with
snapshots is refused (delete them first).

On a host with storage of its own, every disk is staged here the same way
(the appliance's folder of the VM) and only then uploaded over the VM's
volumes on the host (remote_backups.py).
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from appliance import backup_chain, pinned_chain
from appliance.controller import remote_backups
from appliance.controller.context import Context, HostLink
from appliance.controller.files import VmFiles
from appliance.controller.operations import Handler
from appliance.errors import Failed
from appliance.model.states import BackupStatus
from appliance.pinned_chain import PinnedChain
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger("appliance.controller")


def grow(path: Path, size_bytes: int) -> None:
    """qemu-img resize of a standalone qcow2 we just wrote (never shrinks)."""
    out = subprocess.run(  # noqa: S603 - qemu-img from PATH, no shell, our own file
        ["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size_bytes)],  # noqa: S607
        capture_output=True, text=True, timeout=300,
    )
    if out.returncode != 0:
        raise Failed(f"growing {path.name} to {size_bytes} bytes: {out.stderr.strip()[:300]}")


class InPlaceRestore:
    def __init__(self, ctx: Context, files: VmFiles):
        self.ctx = ctx
        self.files = files

    def handlers(self) -> dict[str, Handler]:
        return {"restore": self.restore}

    def restore(self, op: dict, row: dict) -> None:
        store = self.ctx.store
        backup = store.get_backup(op["params"]["backup"])
        if backup["vm_id"] != row["id"]:
            raise Failed(f"backup {backup['id']} is of another VM ({backup['vm_name']})")
        if backup["status"] != BackupStatus.GOOD:
            raise Failed(f"backup {backup['id']} is {backup['status']}, not good")
        link = self.ctx.links.connected(row["host"])
        guest = link.lookup(row["id"])
        if guest is not None and guest.is_active():
            raise Failed("the VM runs; stop it before an in-place restore")
        snapshots = store.snapshot_count(row["id"])
        if snapshots:
            raise Failed(f"the VM has {snapshots} snapshot(s), which live in its disks and "
                         "would be lost; delete them first")
        target_path = store.get_backup_target(backup["target"])["path"]
        with backup_chain.open_chain(target_path, row["id"], backup["id"]) as chain:
            self._restore_from(op, row, link, guest, backup, chain)

    def _restore_from(self, op: dict, row: dict, link: HostLink, guest: Guest | None,
                      backup: dict,
                      chain: PinnedChain) -> None:
        store = self.ctx.store
        backed_up = {d["name"]: d for d in chain.manifests[-1]["disks"]}
        plan = self.files.plan(row)
        plan.vm_dir.mkdir(parents=True, exist_ok=True)  # the staging place of a remote VM
        # the sizes the quota counted (root: the image's): what a restored disk may be
        wanted: dict[str, tuple[Path, int]] = {
            name: (path, size) for name, (path, size) in zip(
                ["root", *(d["name"] for d in row["spec"]["disks"])],
                self.files.writable_disks(row, plan), strict=True)}
        missing = [name for name in wanted if name not in backed_up]
        if missing:
            raise Failed(f"backup {backup['id']} has no disk {missing[0]} (added since); "
                         "restore it into a new VM instead")
        written = self._write_all(op, chain, wanted, backed_up)
        if self.files.own_storage(link.name):  # staged here, every one: now onto the host
            remote_backups.upload_restored(link, self.files, row, written)
        else:
            for tmp, dest in written:
                tmp.replace(dest)
        if guest is not None:
            self._forget_checkpoints(guest)
        store.add_event("restored", f"disks restored in place from backup {backup['id']} "
                        f"({backup['kind']}, chain of {len(chain.manifests)})", row, op["id"])

    def _write_all(self, op: dict, chain: PinnedChain,
                   wanted: dict[str, tuple[Path, int]], backed_up: dict[str, dict]
                   ) -> list[tuple[Path, Path]]:
        """Every disk flattened beside the live one; all or nothing."""
        total = sum(int(backed_up[name]["virtual_size"]) for name in wanted) or 1
        store, done = self.ctx.store, 0
        written: list[tuple[Path, Path]] = []
        try:
            for name, (dest, spec_size) in wanted.items():
                size = int(backed_up[name]["virtual_size"])
                tmp = dest.with_name(f".{dest.name}.restore")
                written.append((tmp, dest))

                def progress(fraction: float, before: int = done, size: int = size) -> None:
                    now = before + int(fraction * size)
                    store.update_operation(op["id"], bytes_done=now, bytes_total=total,
                                           progress=min(99, 100 * now // total))

                checked = chain.flatten(name, tmp, progress, lambda: self.ctx.op_cancelled(op))
                pinned_chain.check_restored_size(name, checked, spec_size, tmp)
                if name != "root" and spec_size > checked["virtual_size"]:
                    grow(tmp, spec_size)
                done += size
        except BaseException:
            for tmp, _dest in written:
                tmp.unlink(missing_ok=True)
            raise
        return written

    def _forget_checkpoints(self, guest: Guest) -> None:
        """The bitmaps were in the replaced files: the records go, the next backup is full."""
        try:
            for name in reversed(guest.checkpoint_names()):
                guest.checkpoint_delete(name, metadata_only=True)
        except DriverError as err:
            log.warning("dropping checkpoint records after a restore: %s", err)
