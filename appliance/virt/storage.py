"""A VM's files on a host that does not see the appliance's folders.

Hosts whose `storage` is "shared" see the appliance's home (its images and VM
folders) at the same path, and the controller writes those files itself. A
host with storage of its own gets the same files at the same paths on its own
disks, made through libvirt's storage API over the host's connection, so that
nothing but the libvirt URI is needed to reach it:

- a persistent dir pool per VM whose target is the VM's folder (created with
  the folder, removed with it), holding the root overlay, the extra disks, the
  cloud-init seed (uploaded) and the console log (virtlogd writes it there;
  the controller copies what is new into the appliance's own folder);
- one dir pool for base images (per appliance), where an image is uploaded
  once per host.
"""
from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

CHUNK = 1 << 20


def images_pool_name(images_dir: Path) -> str:
    """Named after the folder, so that two appliances using one host never share
    (or repoint) each other's image pool."""
    return "vmappliance-images-" + hashlib.sha256(str(images_dir).encode()).hexdigest()[:12]


def _pool_xml(name: str, path: Path) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = str(path)
    return ET.tostring(pool, encoding="unicode")


def _volume_xml(name: str, capacity: int, fmt: str, backing: tuple[str, str] | None = None) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    if fmt == "qcow2":
        # libvirt 9.0 makes qcow2 v2 (0.10) by default, which cannot store the
        # persistent dirty bitmaps of a backup's checkpoint: v3, as qemu-img's default.
        ET.SubElement(target, "compat").text = "1.1"
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def vm_pool_name(vm_id: str) -> str:
    return f"vmappliance-{vm_id}"


def ensure_pool(conn: libvirt.virConnect, name: str, path: Path) -> libvirt.virStoragePool:
    """The dir pool `name` at `path` on this host, defined, built and running."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        pool = conn.storagePoolDefineXML(_pool_xml(name, path), 0)
    if not pool.isActive():
        pool.build(0)  # a dir pool's build is mkdir -p: harmless when the folder exists
        pool.create(0)
    pool.setAutostart(1)
    return pool


def lookup(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
        return None


def create_volume(pool: libvirt.virStoragePool, name: str, capacity: int, fmt: str = "qcow2",
                  backing: tuple[str, str] | None = None) -> libvirt.virStorageVol:
    """A new volume (qcow2 with an optional backing file, or raw); an existing one is kept."""
    vol = lookup(pool, name)
    if vol is not None:
        return vol
    return pool.createXML(_volume_xml(name, capacity, fmt, backing), 0)


def grow_volume(pool: libvirt.virStoragePool, name: str, capacity: int) -> None:
    """A volume of a stopped VM grown to `capacity` bytes (qemu-img resize on the host;
    never shrunk: a larger one is left as it is). A missing volume is made by ensure_vm_files."""
    vol = lookup(pool, name)
    if vol is not None and vol.info()[1] < capacity:
        vol.resize(capacity, 0)


def upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, source: Path,
           replace: bool = False) -> libvirt.virStorageVol:
    """Copy a local file into a raw volume on the host (byte for byte, whatever its format)."""
    vol = lookup(pool, name)
    if vol is not None:
        if not replace:
            return vol
        vol.delete(0)
    size = source.stat().st_size
    vol = pool.createXML(_volume_xml(name, size, "raw"), 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    with open(source, "rb") as f:
        stream.sendAll(lambda _s, nbytes, fh: fh.read(min(nbytes, CHUNK)), f)
    stream.finish()
    return vol


def download_from(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int, length: int
) -> bytes:
    stream = conn.newStream(0)
    vol.download(stream, offset, length, 0)
    chunks: list[bytes] = []
    stream.recvAll(lambda _s, data, out: out.append(data) or 0, chunks)
    stream.finish()
    return b"".join(chunks)


def download_to(conn: libvirt.virConnect, vol: libvirt.virStorageVol, dest: Path) -> None:
    """A whole volume into a local file, streamed."""
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)  # length 0: to the end
    with open(dest, "wb") as out:
        stream.recvAll(lambda _s, data, fh: fh.write(data), out)
    stream.finish()


def delete_volumes(conn: libvirt.virConnect, pool_name: str, prefix: str) -> list[str]:
    """Every volume of the pool whose name starts with `prefix` (non-empty), deleted."""
    if not prefix:
        raise ValueError("an empty prefix would delete every volume")
    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return []
        raise
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    deleted = []
    for vol in pool.listAllVolumes(0):
        if vol.name().startswith(prefix):
            vol.delete(0)
            deleted.append(vol.name())
    return deleted


def remove_pool(conn: libvirt.virConnect, name: str) -> None:
    """Delete every volume of the pool, its folder and its definition; gone already is fine."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return
        raise
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    for vol in pool.listAllVolumes(0):
        vol.delete(0)
    pool.destroy()
    try:
        pool.delete(0)  # the (now empty) folder
    except libvirt.libvirtError:
        pass
    pool.undefine()
