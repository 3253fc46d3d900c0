"""Console mirroring: a host with storage of its own keeps each VM's console
log on its disks; what is new there is copied into the appliance's folder,
where the console files and the probes read it."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.controller.context import Context, HostLink
from appliance.model import VMState
from appliance.virt.driver import DriverError

if TYPE_CHECKING:  # files.py imports mirror_key from here
    from appliance.controller.files import VmFiles

log = logging.getLogger("appliance.controller")
# A guest writes to its console in these states.
MIRRORED_STATES = (VMState.RUNNING, VMState.PAUSED, VMState.STOPPING)


def mirror_key(vm_id: str, host: str) -> str:
    """Meta key: how much of the VM's console log on the host has been copied."""
    return f"console-mirror:{vm_id}:{host}"


class ConsoleMirror:
    def __init__(self, ctx: Context, files: VmFiles):
        self.ctx = ctx
        self.files = files

    def mirror(self, link: HostLink) -> None:
        if not self.files.own_storage(link.name) or not link.connected:
            return
        store = self.ctx.store
        for row in store.vms_on_host(link.name, include_deleted=True, observed=MIRRORED_STATES):
            key = mirror_key(row["id"], link.name)
            try:
                found = link.driver.read_console(row["id"], int(store.get_meta(key) or 0))
            except DriverError as err:
                log.info("console of %s on %s: %s", row["name"], link.name, err)
                continue
            if found is None or not found[1]:
                continue
            start, data = found
            with open(self.ctx.config.vm_dir(row["id"]) / "console.log", "ab") as out:
                out.write(data)
            store.set_meta(key, str(start + len(data)))
