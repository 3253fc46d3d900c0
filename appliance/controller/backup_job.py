"""libvirt's backup job on a domain, as the backup handler (controller/backups.py) watches
it: an earlier job (a crashed controller's) aborted before a new one begins, the job's end
waited for with its progress written into the operation and a cancel turned into an
abort, and the domain's checkpoints dropped after a good backup."""
from __future__ import annotations

import logging

from appliance.controller.context import Context
from appliance.errors import Failed
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger("appliance.controller")

POLL_SECONDS = 0.5
# A small disk's or an incremental's job ends within a second or two: its end is looked
# for every 10 ms for the first 2 s (libvirt's job info, no QEMU), then every 0.5 s.
# (At 10 ms growing to 50 ms, noticing an incremental's ~70-120 ms job cost it ~15-50 ms,
# measured step by step on the benchmark's guest.) Progress is recorded, and a cancel
# looked for, at most every PROGRESS_SECONDS: each is a store write or read. A full's
# first at its first poll (its total says how much the job copies); an incremental's
# from PROGRESS_SECONDS after the job began: libvirt answers a progress query only
# after its own work on the job, and an incremental's (~50 ms) was then in its
# clean-up (~20-40 ms), which ended one poll before it was seen.
QUICK_POLL_SECONDS = 0.01
QUICK_POLL_FOR = 2.0
PROGRESS_SECONDS = 0.2
SETTLE_SECONDS = 30.0  # how long an earlier job (a crashed controller's) may take to abort


def drop_checkpoints(guest: Guest, keep: str | None = None) -> None:
    """Delete the domain's checkpoints but `keep`, newest first: for real (the
    bitmaps go), or their metadata only when the bitmaps are broken already."""
    for name in reversed(guest.checkpoint_names()):
        if name == keep:
            continue
        try:
            guest.checkpoint_delete(name)
        except DriverError as err:
            log.info("checkpoint %s: %s; dropping its metadata only", name, err)
            guest.checkpoint_delete(name, metadata_only=True)


def settle_earlier_job(ctx: Context, guest: Guest, vm_name: str) -> None:
    """A controller killed mid-backup leaves libvirt's job running: abort it."""
    if not guest.job_running():
        return
    try:
        guest.abort_job()
    except DriverError as err:
        log.info("aborting an earlier job of %s: %s", vm_name, err)
    deadline = ctx.monotonic() + SETTLE_SECONDS
    while True:
        try:
            if guest.backup_finished() is not None:
                return
        except DriverError:
            return  # ended (as cancelled): its outcome is of no use
        if ctx.monotonic() > deadline:
            raise Failed("an earlier job on the domain does not end")
        ctx.sleep(0.2)


def wait(ctx: Context, guest: Guest, op: dict, incremental: bool) -> None:
    """Until libvirt is done: progress into the operation; a cancel aborts the job."""
    aborted = False
    began = ctx.monotonic()
    reported = began if incremental else None  # see PROGRESS_SECONDS
    while not guest.backup_finished():
        now = ctx.monotonic()
        if reported is None or now - reported >= PROGRESS_SECONDS:
            reported = now
            if not aborted and ctx.op_cancelled(op):
                aborted = True
                guest.abort_job()
            progress = guest.job_progress()
            if progress is not None and progress[1]:
                done, total = progress
                ctx.store.update_operation(op["id"], bytes_done=done, bytes_total=total,
                                           progress=min(99, int(100 * done / total)))
        ctx.sleep(QUICK_POLL_SECONDS if now - began < QUICK_POLL_FOR else POLL_SECONDS)
    if aborted:  # the job ended as the abort came: still cancelled
        raise Failed("cancelled")
