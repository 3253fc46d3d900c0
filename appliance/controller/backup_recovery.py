"""At the controller's start: the backups a crash cut short (controller/backups.py)."""
from __future__ import annotations

from appliance import backup_chain
from appliance.controller.context import Context
from appliance.controller.files import VmFiles
from appliance.controller.remote_backups import remove_interrupted
from appliance.errors import NotFound
from appliance.model.states import BackupStatus


def recover_interrupted(ctx: Context, files: VmFiles) -> None:
    """At start: a backup left running by a crash is failed and its partial
    folder removed, unless it was published already (then it is good, as its
    manifest says). Its operation, if still open, runs again (a new backup)."""
    store = ctx.store
    for backup in store.list_backups(statuses=[BackupStatus.RUNNING]):
        try:
            path = store.get_backup_target(backup["target"])["path"]
        except NotFound:
            path = None
        manifest = None
        if path is not None:
            folder = backup_chain.backup_folder(path, backup["vm_id"], backup["id"])
            try:
                manifest = backup_chain.read_manifest(folder)
            except backup_chain.BrokenChain:
                backup_chain.remove_backup(path, backup["vm_id"], backup["id"])
        remove_interrupted(ctx, files, backup)
        vm = store.get_vm_by_id(backup["vm_id"])
        if manifest is not None:
            # read_manifest checked these fields; only they are recorded
            disks = [{key: d[key] for key in ("name", "file", "virtual_size", "bytes")}
                     for d in manifest["disks"]]
            size = sum(d["bytes"] for d in disks)
            store.update_backup(backup["id"], status=BackupStatus.GOOD,
                                disks=disks, size=size,
                                quiesced=bool(manifest.get("quiesced")),
                                finished=manifest.get("finished"))
            store.add_event("backup-finished", f"backup {backup['id']} was complete when "
                            "the appliance stopped; recorded at its restart", vm,
                            project=backup["project"])
            continue
        store.update_backup(backup["id"], status=BackupStatus.FAILED,
                            error="interrupted: the appliance stopped during the backup",
                            finished=ctx.clock())
        store.add_event("backup-failed", f"backup {backup['id']} was interrupted by a stop "
                        "of the appliance; its partial folder was removed", vm,
                        project=backup["project"])
