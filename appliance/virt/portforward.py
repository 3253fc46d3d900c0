"""Port forwards of user-mode NICs: QEMU's slirp `hostfwd`, added over HMP after start.

QEMU (root) binds each forward on the host's loopback. A forward QEMU cannot
bind must fail the start, not leave the guest running without it: a free-port
check before the start catches what is already taken, and a failure to add a
forward after the start (someone took the port in between, or the host is not
this machine) is answered by the caller destroying the domain.
"""
from __future__ import annotations

import socket
import urllib.parse

import libvirt
import libvirt_qemu

from appliance.errors import Failed
from appliance.virt.domain import USER_NETDEV

# The netdev id the forwards are added to: libvirt names the user-mode netdev of
# the interface aliased "ua-net0" "hostua-net0", and domain.py gives the
# restricted NIC (outbound "none") the same id.
NETDEV = USER_NETDEV
PRIVILEGED_BELOW = 1024


def rule(fwd: dict) -> str:
    """The hostfwd rule, as QEMU parses it: PROTO:ADDR:PORT-:GUESTPORT (IPv4
    only; spec.py refuses IPv6, which QEMU 7.2's slirp cannot bind)."""
    return f"{fwd['protocol']}:{fwd['host_address']}:{fwd['host_port']}-:{fwd['guest_port']}"


def describe(fwd: dict) -> str:
    return f"host port {fwd['host_address']}:{fwd['host_port']}/{fwd['protocol']}"


def on_this_machine(uri: str) -> bool:
    """Whether the host's QEMU binds its forwards in this machine's network
    namespace: a local libvirt (no server in the URI). Only then does a free-port
    check here say anything about the host."""
    parts = urllib.parse.urlsplit(uri)
    return parts.scheme.split("+")[0] == "qemu" and not parts.hostname


def in_use(fwd: dict) -> bool:
    """Bind-test the forward's address as QEMU will bind it (slirp sets
    SO_REUSEADDR, so connections in TIME_WAIT do not count; a listener does)."""
    kind = socket.SOCK_STREAM if fwd["protocol"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((fwd["host_address"], fwd["host_port"]))
        except OSError:
            return True
    return False


def check_free(forwards: list[dict]) -> None:
    """Raise Failed naming the first forward whose host port is taken."""
    for fwd in forwards:
        if in_use(fwd):
            raise Failed(f"{describe(fwd)} is in use on the host; the VM was not started")


def parse_usernet(text: str) -> set[tuple[str, str, int, int]]:
    """The forwards in place, from HMP `info usernet`:
    (protocol, host address, host port, guest port) of each HOST_FORWARD row."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0].endswith("[HOST_FORWARD]"):
            protocol = fields[0].split("[", 1)[0].lower()
            found.add((protocol, fields[2], int(fields[3]), int(fields[5])))
    return found


def _hmp(dom: libvirt.virDomain, command: str) -> str:
    return libvirt_qemu.qemuMonitorCommand(
        dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    )


def apply(dom: libvirt.virDomain, forwards: list[dict]) -> None:
    """Add every forward not yet in place (safe to repeat on a running guest:
    an operation run again after a crash must not fail on its own forwards)."""
    if not forwards:
        return
    try:
        present = parse_usernet(_hmp(dom, "info usernet"))
    except libvirt.libvirtError:
        present = set()  # the add below reports what is wrong
    for fwd in forwards:
        key = (fwd["protocol"], fwd["host_address"], fwd["host_port"], fwd["guest_port"])
        if key in present:
            continue
        try:
            out = _hmp(dom, f"hostfwd_add {NETDEV} {rule(fwd)}").strip()
        except libvirt.libvirtError:
            # No QEMU monitor (another driver), or QEMU went away: a fixed
            # reason; libvirt's own text stays out of events.
            out = "the QEMU monitor refused the command"
        if out:
            raise Failed(
                f"{describe(fwd)} could not be forwarded to guest port {fwd['guest_port']} "
                f"(in use?): {out[:200]}"
            )
