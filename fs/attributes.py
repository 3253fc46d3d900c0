"""What the mount's stat shows of a node (fs/operations.py's _attrs): its mode (what
anyone may do: the kernel checks it, default_permissions; the policy says who), its
owner, size and times, and how long the kernel may cache it."""
from __future__ import annotations

import stat

import pyfuse3

from appliance.access import policy
from fs import scratch
from fs.guard import makes_names
from fs.nodes import Node, Path

# Attribute and entry caches: the mount agrees with REST within this.
CACHE_SECONDS = 1.0


def entry_attributes(inode: int, node: Node, path: Path, uid: int, gid: int,
                     others: bool) -> pyfuse3.EntryAttributes:
    """Modes say what anyone may do (the kernel checks them, default_permissions), the
    policy who. While the map names nobody, nobody but the owner (and root) may: the
    kernel stops everyone else at the mount's root, and its caches serve as before. Once
    it names someone, what lies below the top directories is not cached: the kernel
    would answer the next caller's stat from it, whoever they are (and `vms/NAME` is
    another VM in another project). others: the mount is shared (allow_other) and its
    map names someone."""
    attrs = pyfuse3.EntryAttributes()
    attrs.st_ino = inode
    attrs.generation = 0
    attrs.entry_timeout = attrs.attr_timeout = 0 if others and len(path) > 1 else CACHE_SECONDS
    if node.volatile:  # its size is the next screenshot's (fs/screenshots.py)
        attrs.entry_timeout = attrs.attr_timeout = 0
    if node.is_dir:  # a VM's directory takes editors' temporary files (fs/scratch.py)
        mode = 0o777 if makes_names(path) or scratch.edit_dir(path) else 0o555
        attrs.st_nlink = 2
    else:
        changes = node.writable and (
            node.private or policy.mount_action(path, "write") is not None)
        mode = 0o666 if changes else 0o444
        attrs.st_nlink = 1
    attrs.st_mode = (stat.S_IFDIR if node.is_dir else stat.S_IFREG) | (
        mode if others else mode & 0o700)
    attrs.st_uid = uid
    attrs.st_gid = gid
    attrs.st_size = node.size
    attrs.st_blksize = 4096
    attrs.st_blocks = (node.size + 511) // 512
    attrs.st_atime_ns = int(node.created * 1e9)
    attrs.st_mtime_ns = int(node.changed * 1e9)
    attrs.st_ctime_ns = int(node.changed * 1e9)
    return attrs
