"""A backup's quiesce: the guest's file systems frozen through its agent
(qemu-guest-agent's guest-fsfreeze-freeze, libvirt's fsFreeze) for the instant
of the checkpoint, and, when they cannot be, why: the backup is then
crash-consistent (as if the power were cut) and says so."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from appliance.virt.driver import DriverError, Guest

log = logging.getLogger(__name__)


def freeze(guest: Guest, vm_name: str, stopped: bool) -> tuple[bool, str]:
    """(must fs_thaw follow, why the file systems are not frozen: "" when they are)."""
    if stopped:  # started paused for the backup: nothing runs in it to freeze
        return False, "the VM was stopped (its disks are as it left them)"
    try:
        count = guest.fs_freeze()
    except DriverError as err:  # no agent, or it failed and thawed what it had frozen
        log.info("freezing %s: %s", vm_name, err)
        return False, f"the guest agent did not freeze its file systems: {err.reason}"
    # 0 (only virtual file systems, or all frozen already): the agent counts itself
    # frozen all the same and must be thawed, but it froze nothing
    return True, "" if count else "the guest agent froze no file system"


class Thaw:
    """The thaw of a guest frozen for a backup's checkpoint, started as soon as
    backupBegin returns (the checkpoint is taken: the guest is thawed as early as
    before) and run beside the backup job rather than ahead of it: under TCG the
    agent's thaw (and its fsfreeze hook) takes tens of milliseconds that an
    incremental's job, ~150 ms, need not wait for. join() before the backup is
    published; a failed thaw is reported, not hidden (the guest may stay frozen)."""

    def __init__(self, guest: Guest, vm_name: str):
        self.error = ""
        self._vm_name = vm_name
        self._thread = threading.Thread(target=self._run, args=(guest,),
                                        name=f"thaw-{vm_name}", daemon=True)
        self._thread.start()

    def _run(self, guest: Guest) -> None:
        try:
            guest.fs_thaw()
        except DriverError as err:
            log.warning("thawing %s: %s", self._vm_name, err)
            self.error = err.reason

    def join(self) -> str:
        """"" once thawed, else why the thaw failed."""
        self._thread.join()
        return self.error


class Beside:
    """Work run in a thread beside the freeze (the job's files made while the agent
    freezes: both ~20-50 ms under TCG, measured on the benchmark's guest). result()
    waits for it and raises what it raised; wait() only waits (a rollback must not
    race it for the folder it writes in)."""

    def __init__(self, work: Callable[[], None], vm_name: str):
        self._error: BaseException | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run, name=f"backup-files-{vm_name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as err:  # noqa: BLE001 - handed to result() in the caller's thread
            self._error = err

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
