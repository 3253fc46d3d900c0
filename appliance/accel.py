"""Choosing KVM or TCG, safely.

/dev/kvm can exist and QEMU can report KVM enabled while guests never get
past the firmware (nested virtualisation gone wrong, as on our CI machines).
`auto` therefore boots the demo image once under KVM with a short deadline and
keeps KVM only if the guest kernel prints; the verdict is remembered in the
store (per host kernel) and shown by `vmctl doctor`.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

from appliance.store import Store
from appliance.virt import domain, images

BOOT_MARKERS = (b"Linux version", b"vm-appliance demo guest: booted")
PROBE_SECONDS = 15.0


def _kvm_offered(conn: libvirt.virConnect) -> bool:
    try:
        caps = conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
    except libvirt.libvirtError:
        return False
    return "<domain>kvm</domain>" in caps


def probe_kvm(
    conn: libvirt.virConnect, image: Path, image_format: str, seconds: float = PROBE_SECONDS
) -> tuple[bool, str]:
    """Boot `image` under KVM for up to `seconds`; True if the guest kernel printed."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not _kvm_offered(conn):
        return False, "libvirt does not offer KVM on this host"
    with tempfile.TemporaryDirectory(prefix="vmapp-kvm-probe-") as tmp:
        vm_dir = Path(tmp)
        vm_id = str(uuid.uuid4())
        plan = domain.DomainPlan(
            vm_id=vm_id,
            domain_name=f"vmapp-kvm-probe-{vm_id[:8]}",
            vm_name="kvm-probe",
            instance_id="probe",
            spec={"cpus": 1, "memory": 128, "disks": [], "network": {"type": "none"}},
            domain_type="kvm",
            vm_dir=vm_dir,
            mac="52:54:00:00:00:01",
            seed_iso=None,
            direct_io=images.supports_direct_io(vm_dir),
        )
        images.create_overlay(image, image_format, plan.root_disk)
        try:
            dom = conn.createXML(domain.build(plan), 0)
        except libvirt.libvirtError as err:
            # Seen on nested hosts: QEMU aborts setting an MSR under KVM.
            return (
                False,
                f"a KVM guest failed to start: {err.get_error_message().splitlines()[-1][:200]}",
            )
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    text = plan.console_log.read_bytes()
                except FileNotFoundError:
                    text = b""
                if any(marker in text for marker in BOOT_MARKERS):
                    return (
                        True,
                        f"a KVM guest booted in {seconds - (deadline - time.monotonic()):.1f} s",
                    )
                time.sleep(0.2)
            return False, f"/dev/kvm is present but a KVM guest printed nothing in {seconds:.0f} s"
        finally:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass


def resolve(store: Store, conn: libvirt.virConnect, requested: str, image: dict | None) -> dict:
    """Return {"accel": "kvm"|"tcg", "reason": ...}, probing once per host kernel for auto."""
    if requested in ("kvm", "tcg"):
        return {"accel": requested, "reason": "chosen with --accel", "probed": False}
    kernel = platform.release()
    cached = store.get_meta("accel_verdict")
    if cached:
        verdict = json.loads(cached)
        if verdict.get("kernel") == kernel:
            return verdict
    if image is None:
        # Not a verdict: kept, it would hold TCG for good on this kernel where KVM may
        # work (a .deb install starts with no image). A start that finds one probes.
        return {"accel": "tcg", "probed": False,
                "reason": "no image named demo to probe KVM with yet; TCG until a start finds one"}
    ok, reason = probe_kvm(conn, Path(image["path"]), image["format"])
    verdict = {"accel": "kvm" if ok else "tcg", "reason": reason, "kernel": kernel, "probed": True,
               "time": time.time()}
    store.set_meta("accel_verdict", json.dumps(verdict))
    store.add_event("accel", f"accelerator {verdict['accel']}: {reason}")
    return verdict
