"""Tiny guests for the console tests: a 1 MiB raw disk whose boot sector runs a few
bytes of code, as a transient 32 MiB domain with its serial port on a pty."""
from __future__ import annotations

import uuid
from pathlib import Path

import libvirt

from tests.soak.world import BOOT_SECTOR

HALTED = BOOT_SECTOR  # cli; hlt; jmp back

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>32</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='{image}'/><target dev='vda' bus='virtio'/></disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>"""


def boot_image(path: Path, code: bytes = HALTED) -> Path:
    """A disk that boots `code` (readable by QEMU's user)."""
    data = bytearray(1 << 20)
    data[:len(code)] = code
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))
    path.chmod(0o644)
    return path


def create(conn: libvirt.virConnect, name: str, image: Path,
           vm_id: str | None = None) -> libvirt.virDomain:
    """The guest, started (transient: gone once destroyed)."""
    return conn.createXML(DOMAIN_XML.format(name=name, uuid=vm_id or uuid.uuid4(), image=image), 0)
