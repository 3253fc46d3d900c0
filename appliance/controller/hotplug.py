"""vCPUs and memory changed on a running VM (issue 14), for controller/live.py.

The mechanism per resource (virt/libvirt_hotplug.py says what was checked):

- vCPUs: the domain runs with `<vcpu current='cpus'>max_cpus</vcpu>`; more
  vCPUs are plugged with libvirt's setVcpusFlags(AFFECT_LIVE) (ACPI CPU
  hotplug on q35). Needs the guest's cooperation: a hot-added vCPU arrives
  offline, and the guest's userspace onlines it (udev's rule on distros, the
  demo guest's `uevent` handler). Fewer vCPUs wait for the next boot: live
  unplug times out in libvirt 9.0 + QEMU 7.2 and leaves QEMU unable to plug
  again.
- Memory: the domain boots with `memory` and a virtio-mem device over the
  area up to max_memory; a change sets the device's requested size (libvirt's
  updateDeviceFlags) to `new - boot memory`. Needs the guest's cooperation:
  its virtio_mem driver plugs (or unplugs) the blocks and its kernel onlines
  them (memhp_default_state=online, or a udev rule). Giving memory back works
  as far as the guest can empty the blocks; below the boot memory it waits
  for the next boot.

An applier that cannot apply a change raises NeedsRestart with the reason the
VM's events show; the change then waits for the next boot (RestartRequired).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from appliance.controller import live
from appliance.model.cpu import is_dedicated
from appliance.model.hotplug import MEMORY_BLOCK_MIB
from appliance.virt.driver import DomainGone, DriverError

# How long a guest may take to plug or unplug the memory asked for (TCG guests
# here take well under a second for a few hundred MiB).
MEMORY_SETTLE_SECONDS = 10.0


@contextmanager
def _hypervisor_refusal(what: str) -> Iterator[None]:
    """A hypervisor that cannot do it live (libvirt's test driver, an older
    QEMU) makes the change wait for the next boot rather than fail the update."""
    try:
        yield
    except DomainGone:
        raise
    except DriverError as err:
        raise live.NeedsRestart(f"{what} live refused by the host ({err.reason}); "
                                "applies at the next restart") from err


def _guarded(what: str) -> Callable[[live.Applier], live.Applier]:
    def wrap(applier: live.Applier) -> live.Applier:
        def apply(change: live.LiveChange) -> None:
            with _hypervisor_refusal(what):
                applier(change)
        apply.__doc__ = applier.__doc__
        return apply
    return wrap


@_guarded("vCPU hotplug")
def apply_cpus(change: live.LiveChange) -> None:
    """Plug vCPUs into the running domain, up to the maximum it booted with."""
    wanted = int(change.new)
    have, most = change.guest.live_vcpus()
    if wanted == have:
        return
    if wanted < have:
        raise live.NeedsRestart(
            f"fewer vCPUs ({have} -> {wanted}) apply at the next restart "
            "(live vCPU unplug is unreliable on this hypervisor)")
    if is_dedicated(change.running):
        # Its domain pins the vCPUs it booted with (one host CPU each); a VM
        # defined before max_cpus followed dedicated may still have room.
        raise live.NeedsRestart("a dedicated VM's vCPUs are pinned at boot; "
                                "applies at the next restart")
    if wanted > most:
        raise live.NeedsRestart(
            f"{wanted} vCPUs is more than the {most} this VM started with room for "
            "(max_cpus); applies at the next restart")
    change.guest.set_live_vcpus(wanted)


@_guarded("memory hotplug")
def apply_memory(change: live.LiveChange) -> None:
    """Resize the running domain's virtio-mem area so that the guest has `new`
    MiB, and wait until the guest took (or gave back) it."""
    wanted = int(change.new)
    device = change.guest.live_memory()
    if device is None:
        raise live.NeedsRestart(
            "this VM was started without hot-pluggable memory; applies at the next restart")
    requested = wanted - device.base
    if requested < 0:
        raise live.NeedsRestart(
            f"less than the {device.base} MiB it started with; applies at the next restart")
    if requested > device.size:
        raise live.NeedsRestart(
            f"more than the {device.base + device.size} MiB this VM started with room for "
            "(max_memory); applies at the next restart")
    if requested % MEMORY_BLOCK_MIB:
        raise live.NeedsRestart(
            f"memory changes live in steps of {MEMORY_BLOCK_MIB} MiB; applies at the next restart")
    if requested != device.requested:
        change.guest.request_live_memory(requested)
    ctx = change.ctx
    deadline = ctx.clock() + MEMORY_SETTLE_SECONDS
    current = device.current
    while True:
        now = change.guest.live_memory()
        current = now.current if now is not None else current
        if current == requested or ctx.clock() >= deadline:
            break
        ctx.sleep(0.1)
    if current != requested:
        # The request stays: a guest that catches up later still gets it.
        verb = "took" if requested > device.current else "kept"
        raise live.NeedsRestart(
            f"the guest {verb} {device.base + current} of {wanted} MiB within "
            f"{MEMORY_SETTLE_SECONDS:.0f} s (no virtio_mem driver, or memory it cannot "
            "give back); applies at the next restart")


live.APPLIERS["cpus"] = apply_cpus
live.APPLIERS["memory"] = apply_memory
