"""A backup's quiesce: the guest's file systems frozen through its agent
(qemu-guest-agent's guest-fsfreeze-freeze, libvirt's fsFreeze) for the instant
of the checkpoint, and, when they cannot be, why: the backup is then
crash-consistent (as if the power were cut) and says so.

A VM that started a moment ago may not have its agent connected yet: its guest
opens the agent's port some time after boot (the demo guest's qemu-ga ~0.3-1 s
after its ready line here, a distribution's with its other services). The freeze
then fails ("QEMU guest agent is not connected"), and if the backup job went on
and the agent connected during it, libvirt's handler of that event (on its one
event thread) would wait for a job the backup job does not admit, 30 s
(VIR_JOB_WAIT_TIME), give up and stay disconnected from that agent for the rest
of the domain's life: a first backup 30 s longer, not frozen, and every later
one silently crash-consistent (measured on libvirt 9.0: tests/integration/
test_backup_after_boot.py). So when the VM started recently (AgentWait) and its
live XML shows the agent's channel not connected, the freeze waits for it,
bounded, and is asked again; an agent that does not come makes a
crash-consistent backup that says so, as before.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from appliance.virt.domain import agent_channel_state
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger(__name__)

# How long a backup of a VM that started recently waits for its agent to connect:
# well past the demo guest's ~1 s and a systemd guest's few seconds after boot,
# and short beside the 30 s the backup would lose if the agent came during the job.
AGENT_WAIT_SECONDS = 15.0
AGENT_POLL_SECONDS = 0.2  # the channel's state in the live XML: one XMLDesc, no job
# A VM seen starting (state_changed to running) less than this ago may still be
# bringing its agent up; an older one without a connected agent has none running.
RECENT_START_SECONDS = 120.0
NOT_CONNECTED = "not connected"  # libvirt's "QEMU guest agent is not connected"


@dataclasses.dataclass(frozen=True)
class AgentWait:
    """The freeze may wait for the agent (the VM started recently), on these clocks."""

    sleep: Callable[[float], None]
    monotonic: Callable[[], float]


def agent_wait(row: dict | None, now: float, sleep: Callable[[float], None],
               monotonic: Callable[[], float]) -> AgentWait | None:
    """An AgentWait if the VM's record (read afresh) shows it started running
    less than RECENT_START_SECONDS ago, else None."""
    if row is None or row.get("observed_state") != "running" or not row.get("state_changed"):
        return None
    if now - float(row["state_changed"]) > RECENT_START_SECONDS:
        return None
    return AgentWait(sleep, monotonic)


def freeze(guest: Guest, vm_name: str, stopped: bool,
           wait: AgentWait | None = None) -> tuple[bool, str]:
    """(must fs_thaw follow, why the file systems are not frozen: "" when they are).
    With `wait`, an agent not connected yet is waited for (see the module's doc)."""
    if stopped:  # started paused for the backup: nothing runs in it to freeze
        return False, "the VM was stopped (its disks are as it left them)"
    try:
        count = guest.fs_freeze()
    except DriverError as err:  # no agent, or it failed and thawed what it had frozen
        log.info("freezing %s: %s", vm_name, err)
        if wait is None or not _agent_to_come(guest, err):
            return False, _did_not_freeze(err)
        return _freeze_once_connected(guest, vm_name, wait)
    return True, _froze(count)


def _froze(count: int) -> str:
    # 0 (only virtual file systems, or all frozen already): the agent counts itself
    # frozen all the same and must be thawed, but it froze nothing
    return "" if count else "the guest agent froze no file system"


def _did_not_freeze(err: DriverError) -> str:
    return f"the guest agent did not freeze its file systems: {err.reason}"


def _channel(guest: Guest) -> str | None:
    """The agent channel's state in the live XML (None: no channel, or no XML)."""
    try:
        return agent_channel_state(guest.xml())
    except DriverError:
        return None


def _agent_to_come(guest: Guest, err: DriverError) -> bool:
    """The freeze failed as it does before the agent connects: the domain has the
    channel and it is not connected yet (or libvirt, which shows the state a moment
    before it opens the agent's socket, still says "not connected")."""
    state = _channel(guest)
    return state is not None and (state != "connected" or NOT_CONNECTED in err.reason)


def _freeze_once_connected(guest: Guest, vm_name: str, wait: AgentWait) -> tuple[bool, str]:
    """Poll the channel until it is connected, then freeze again; within AGENT_WAIT_SECONDS."""
    began = wait.monotonic()
    while True:
        if _channel(guest) == "connected":
            try:
                count = guest.fs_freeze()
            except DriverError as err:
                if NOT_CONNECTED not in err.reason:  # it answered: its own failure
                    log.info("freezing %s once its agent connected: %s", vm_name, err)
                    return False, _did_not_freeze(err)
            else:
                log.info("%s: its guest agent connected %.1f s after the first freeze",
                         vm_name, wait.monotonic() - began)
                return True, _froze(count)
        if wait.monotonic() - began >= AGENT_WAIT_SECONDS:
            log.info("%s: no guest agent within %.0f s", vm_name, AGENT_WAIT_SECONDS)
            return False, (f"file systems not frozen: the guest agent is not connected "
                           f"(waited {AGENT_WAIT_SECONDS:.0f} s for it after the VM's start)")
        wait.sleep(AGENT_POLL_SECONDS)


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
