"""Disk images: recognised by their first bytes, checked with `qemu-img info`
at a pinned format, stored as fresh standalone qcow2 files, overlaid with
`qemu-img create`.

QEMU runs as root, so an image is hostile input. Several formats name other
files in their headers (a VMDK descriptor's extents, a qcow2 backing file or
external data file), and a guest booted from such an image reads those files
through its disk. So:

- The format is decided here from the magic bytes, never by letting qemu-img
  probe: probing opens the file with the detected driver, and that already
  follows the references. Only qcow2 and raw are accepted; every other format
  qemu would recognise is refused by name.
- A qcow2 header is read here first: a backing file, an external data file or
  encryption is refused before qemu-img opens the file at all.
- `qemu-img info` and `qemu-img convert` always get `-f FORMAT`.
- A raw file is only taken as a disk image when it looks like one (a boot
  sector, a GPT header or an ISO9660 volume): qemu-img calls *any* file raw,
  and an image store that accepts a text file as a disk helps nobody.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from appliance.errors import Failed, Invalid

log = logging.getLogger("vmctl.images")

QCOW2_MAGIC = b"QFI\xfb"
PROBE_BYTES = 2048  # what qemu's format probes look at (BLOCK_PROBE_BUF_SIZE)
CONVERT_TIMEOUT = 6 * 3600  # a 64 GiB image on a slow disk
# A conversion dies with the process that asked for it (util-linux's setpriv, an essential
# Debian package; PR_SET_PDEATHSIG is kept across exec): an API worker or the mount killed in
# the middle of an upload leaves no qemu-img writing into HOME/images behind it, whose output
# could appear after the dead writer's files were removed (image_store.remove_uploads_of).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]

# Magic bytes of the formats qemu-img would detect as something other than raw
# (qemu's block/*.c probe functions): (offset, bytes, format name).
_OTHER_FORMATS = (
    (0, b"QEF\x00", "qed"),
    (0, b"KDMV", "vmdk"),
    (0, b"COWD", "vmdk"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),  # VDI_SIGNATURE, little-endian
    (0, b"WithoutFreeSpace", "parallels"),
    (0, b"WithouFreSpacExt", "parallels"),
    (0, b"Bochs Virtual HD Image", "bochs"),
    (0, b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
    (0, b"LUKS\xba\xbe", "luks"),
)

# qcow2 header fields and extensions (docs/interop/qcow2.txt).
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
_QCOW2_EXT_END = 0
_QCOW2_EXT_DATA_FILE = 0x44415441
_QCOW2_EXT_CRYPTO = 0x0537BE77


def _run(args: list[str], what: str, timeout: float = 120) -> str:
    try:
        # args are this module's qemu-img command lines: an argument list, no shell
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)  # noqa: S603
    except FileNotFoundError:
        raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
    if result.returncode != 0:
        raise Failed(f"{what}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _query(verb: list[str], path: str | Path, fmt: str, timeout: float) -> dict:
    """`qemu-img VERB --output=json -f FMT PATH` on a file opened as `fmt` (never
    probed). Its error text stays in the log: it may quote what the file names."""
    try:
        out = subprocess.run(  # noqa: S603 - qemu-img from PATH (qemu-utils), no shell, the format pinned
            ["qemu-img", *verb, "--output=json", "-f", fmt, str(path)],  # noqa: S607
            capture_output=True, text=True, timeout=timeout,
        )
    except FileNotFoundError:
        raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
    if out.returncode != 0:
        log.warning("qemu-img %s -f %s %s: %s", verb[0], fmt, path, out.stderr.strip()[:2000])
        raise Invalid(f"not a readable {fmt} image", "image")
    return json.loads(out.stdout)


def info(path: str | Path, fmt: str) -> dict:
    """qemu-img's view of a file; --force-share so a running VM's disk can be read."""
    return _query(["info", "--force-share"], path, fmt, timeout=60)


def converted_size(path: str | Path, fmt: str) -> int:
    """What the file will take converted to qcow2 (`qemu-img measure`): a small
    compressed qcow2 may expand far beyond what was uploaded."""
    return int(_query(["measure", "-O", "qcow2"], path, fmt, timeout=600)["required"])


def _vmdk_descriptor(head: bytes) -> bool:
    """qemu's vmdk_probe for text: comments and blank lines, then `version=N`.
    Also any head that names descriptor fields, to say "vmdk" rather than "not a disk"."""
    lines = head.split(b"\n")
    for line in lines:
        if line.startswith(b"#") or line.strip(b" \r") == b"":
            continue
        if line.rstrip(b"\r") in (b"version=1", b"version=2", b"version=3"):
            return True
        break
    return b"createType" in head or b"# Disk DescriptorFile" in head


def _looks_like_raw_disk(head: bytes, iso: bytes) -> bool:
    return head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART" or iso == b"CD001"


def detect_format(path: str | Path) -> str:
    """"qcow2" or "raw" from the file's own bytes, or Invalid naming what it is."""
    with open(path, "rb") as f:
        head = f.read(PROBE_BYTES)
        f.seek(ISO9660_MAGIC_OFFSET)
        iso = f.read(len(ISO9660_MAGIC))
    if head.startswith(QCOW2_MAGIC):
        version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else 0
        if version in (2, 3):
            return "qcow2"
        raise Invalid(
            f"unsupported qcow version {version}; convert it to qcow2 or raw first", "image"
        )
    for offset, magic, fmt in _OTHER_FORMATS:
        if head[offset:offset + len(magic)] == magic:
            raise Invalid(
                f"unsupported image format {fmt}; only standalone qcow2 and raw are accepted "
                "(convert it with qemu-img convert -O qcow2 first)",
                "image",
            )
    if _vmdk_descriptor(head):
        raise Invalid("unsupported image format vmdk (a descriptor that names other files); "
                      "only standalone qcow2 and raw are accepted", "image")
    if not _looks_like_raw_disk(head, iso):
        raise Invalid(
            "not a disk image: no boot sector, partition table or ISO9660 volume", "image"
        )
    return "raw"


ISO9660_MAGIC = b"CD001"
ISO9660_MAGIC_OFFSET = 0x8001  # the first volume descriptor's identifier (sector 16, byte 1)


def is_iso9660(path: str | Path) -> bool:
    """Whether the file is an ISO 9660 volume (a CD/DVD image), by its signature
    alone; detect_format() still decides that it is nothing else."""
    with open(path, "rb") as f:
        f.seek(ISO9660_MAGIC_OFFSET)
        return f.read(len(ISO9660_MAGIC)) == ISO9660_MAGIC


def qcow2_header_refusal(path: str | Path) -> str | None:
    """Why a qcow2 file cannot stand alone (read from its header, without
    qemu opening anything), or None."""
    with open(path, "rb") as f:
        header = f.read(104)
        if len(header) < 72:
            return "its qcow2 header is truncated"
        version, backing_offset = struct.unpack(">IQ", header[4:16])
        cluster_bits = struct.unpack(">I", header[20:24])[0]
        crypt_method = struct.unpack(">I", header[32:36])[0]
        if backing_offset:
            return "it has a backing file"
        if crypt_method:
            return "it is encrypted"
        if not 9 <= cluster_bits <= 21:
            return "its qcow2 header is invalid (cluster size)"
        header_length = 72
        if version == 3:
            if len(header) < 104:
                return "its qcow2 header is truncated"
            incompatible = struct.unpack(">Q", header[72:80])[0]
            if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
                return "it has an external data file"
            header_length = struct.unpack(">I", header[100:104])[0]
        for ext_type, _length in _qcow2_extensions(f, header_length, cluster_bits):
            if ext_type == _QCOW2_EXT_DATA_FILE:
                return "it has an external data file"
            if ext_type == _QCOW2_EXT_CRYPTO:
                return "it is encrypted"
    return None


def _qcow2_extensions(f: BinaryIO, header_length: int, cluster_bits: int
                      ) -> Iterator[tuple[int, int]]:
    """(type, length) of each header extension, which follow the header inside the
    first cluster; on each, `f` stands at the extension's data."""
    pos, cluster = header_length, 1 << cluster_bits
    while pos + 8 <= cluster:
        f.seek(pos)
        raw = f.read(8)
        if len(raw) < 8:
            return
        ext_type, ext_length = struct.unpack(">II", raw)
        if ext_type == _QCOW2_EXT_END:
            return
        yield ext_type, ext_length
        pos += 8 + ((ext_length + 7) & ~7)


_QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
MAX_BACKING_NAME = 1023  # qcow2's limit on a backing file name


def qcow2_backing(path: str | Path | int) -> tuple[str | None, str | None]:
    """(backing file name, backing format) as a qcow2 file's header says them,
    read here without qemu opening anything (a backup's chain is checked
    against what the appliance wrote before qemu follows it; a descriptor is
    read and closed). Invalid when the
    file is not a qcow2 with a sane header, names an external data file or is
    encrypted."""
    with open(path, "rb") as f:
        header = f.read(104)
        if not header.startswith(QCOW2_MAGIC) or len(header) < 72:
            raise Invalid("not a qcow2 file", "image")
        version, backing_offset, backing_size, cluster_bits = struct.unpack(">IQII", header[4:24])
        crypt_method = struct.unpack(">I", header[32:36])[0]
        if version not in (2, 3) or not 9 <= cluster_bits <= 21 or crypt_method:
            raise Invalid("an unsupported or encrypted qcow2 header", "image")
        header_length = 72
        if version == 3:
            if len(header) < 104:
                raise Invalid("a truncated qcow2 header", "image")
            if struct.unpack(">Q", header[72:80])[0] & _QCOW2_INCOMPAT_DATA_FILE:
                raise Invalid("a qcow2 file with an external data file", "image")
            header_length = struct.unpack(">I", header[100:104])[0]
        backing_name = None
        if backing_offset:
            too_long = backing_size > MAX_BACKING_NAME
            if too_long or backing_offset + backing_size > (1 << cluster_bits):
                raise Invalid("a qcow2 backing file name out of bounds", "image")
            f.seek(backing_offset)
            backing_name = f.read(backing_size).decode("utf-8", "replace")
        backing_format = None
        for ext_type, ext_length in _qcow2_extensions(f, header_length, cluster_bits):
            if ext_type in (_QCOW2_EXT_DATA_FILE, _QCOW2_EXT_CRYPTO):
                raise Invalid("a qcow2 file with an external data file or encryption", "image")
            if ext_type == _QCOW2_EXT_BACKING_FORMAT and ext_length <= 32:
                backing_format = f.read(ext_length).decode("ascii", "replace")
    return backing_name, backing_format


def _references(details: dict) -> str | None:
    """What qemu-img reports the image needs besides itself, or None."""
    if details.get("backing-filename") or details.get("full-backing-filename"):
        return "it has a backing file"
    specific = (details.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        return "it has an external data file"
    if details.get("encrypted") or specific.get("encrypt"):
        return "it is encrypted"
    if specific.get("extents"):
        return "it names extent files"
    return None


def check(path: str | Path) -> dict:
    """{format, virtual_size, actual_size} of a standalone qcow2 or raw disk
    image, or Invalid. The file is only ever opened by qemu-img at the format
    read from its bytes, and only after its header was checked."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "qcow2":
        refusal = qcow2_header_refusal(path)
        if refusal:
            raise Invalid(f"an image must stand alone ({refusal})", "image")
    details = info(path, fmt)
    refusal = _references(details)
    if details.get("format") != fmt or refusal:
        raise Invalid(
            f"an image must stand alone ({refusal or 'its format is ambiguous'})", "image"
        )
    return {
        "format": fmt,
        "virtual_size": int(details.get("virtual-size", 0)),
        "actual_size": int(details.get("actual-size", 0)),
    }


def convert_to_qcow2(source: str | Path, source_format: str, dest: str | Path) -> dict:
    """A fresh qcow2 written by qemu-img from the guest-visible data of a
    checked image: none of the source's headers, extensions, snapshots or
    bitmaps survive. Returns check() of the result."""
    _run([*DIE_WITH_PARENT, "qemu-img", "convert", "-q", "-f", source_format, "-O", "qcow2",
          str(source), str(dest)], "converting the image", timeout=CONVERT_TIMEOUT)
    return check(dest)


def create_overlay(
    base: str | Path, base_format: str, dest: str | Path, size_bytes: int | None = None
) -> None:
    args = [
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        str(base),
        "-F",
        base_format,
        str(dest),
    ]
    if size_bytes:
        args.append(str(size_bytes))
    _run(args, "creating the root disk")


def create_blank(dest: str | Path, size_mib: int) -> None:
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(dest), f"{size_mib}M"], "creating a disk")


def create_blank_bytes(dest: str | Path, size_bytes: int) -> None:
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(dest), str(size_bytes)], "creating a disk")


def qcow2_virtual_size(path: str | Path) -> int:
    """The virtual size a qcow2 header records (bytes 24-31, big-endian): read at
    every define of a stopped VM, so without starting qemu-img. Our own files only."""
    with open(path, "rb") as f:
        header = f.read(32)
    if not header.startswith(QCOW2_MAGIC) or len(header) < 32:
        raise Failed(f"{Path(path).name} is not a qcow2 file")
    return int(struct.unpack(">Q", header[24:32])[0])


def grow(path: str | Path, size_bytes: int) -> None:
    """Grow a stopped VM's qcow2 disk (qemu-img refuses one a running QEMU holds)."""
    _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size_bytes)],
         "growing a disk")


def supports_direct_io(directory: str | Path) -> bool:
    """cache='none' (needed for safe live migration) requires O_DIRECT, which tmpfs lacks."""
    probe = Path(directory) / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True
