"""appliance/backup_chain.py on chains built for real with qemu-img and qemu-io:
a good chain verifies and flattens to the guest-visible data; every way a
target's files could lie (a backing file pointing elsewhere, a manifest naming
a host file, a symlinked folder, a missing link) is refused with the reason."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import backup_chain as bc
from appliance.virt import images

VM = "0b7c0e9e-3a55-4b8e-9a55-000000000001"
FULL, INC1, INC2 = "20261130T010000Z-aaaaaa", "20261130T020000Z-bbbbbb", "20261130T030000Z-cccccc"
MIB = 1 << 20


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)  # noqa: S603


def _write(path: Path, offset: int, pattern: int) -> None:
    _run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} 1M", str(path))


def _manifest(backup_id: str, parent: str | None, disks=("root", "data")) -> dict:
    return {"format": bc.MANIFEST_FORMAT, "id": backup_id, "kind": "incremental" if parent else "full",
            "parent": parent, "chain": FULL, "checkpoint": backup_id,
            "vm": {"id": VM, "name": "web1", "project": "default", "spec": {}},
            "created": 1.0, "finished": 2.0, "quiesced": False,
            "disks": [{"name": d, "file": bc.disk_file(d), "virtual_size": 16 * MIB, "bytes": 0}
                      for d in disks]}


def _backup(target: Path, backup_id: str, parent: str | None, pattern: int) -> Path:
    folder = bc.backup_folder(target, VM, backup_id)
    folder.mkdir(parents=True)
    for disk in ("root", "data"):
        path = folder / bc.disk_file(disk)
        if parent:
            _run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b",
                 bc.parent_reference(parent, path.name), "-F", "qcow2", str(path), "16M")
        else:
            _run("qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M")
        _write(path, pattern * MIB, pattern)
    bc.write_manifest(folder, _manifest(backup_id, parent))
    return folder


@pytest.fixture(scope="module")
def built_chain(tmp_path_factory) -> Path:
    """full <- inc1 <- inc2, each writing 1 MiB of its own pattern to each disk; built once."""
    path = tmp_path_factory.mktemp("chain")
    _backup(path, FULL, None, 1)
    _backup(path, INC1, FULL, 2)
    _backup(path, INC2, INC1, 3)
    return path


@pytest.fixture
def target(built_chain, tmp_path) -> Path:
    shutil.copytree(built_chain / bc.TREE, tmp_path / bc.TREE, symlinks=True)
    return tmp_path


def test_a_good_chain_verifies_full_first(target):
    chain = bc.verify_chain(target, VM, INC2)
    assert [m["id"] for m in chain] == [FULL, INC1, INC2]
    assert [m["id"] for m in bc.verify_chain(target, VM, FULL)] == [FULL]


def test_flatten_gives_a_standalone_copy_of_every_write_in_the_chain(target, tmp_path):
    dest = tmp_path / "flat.qcow2"
    seen: list[float] = []
    with bc.open_chain(target, VM, INC2) as chain:
        checked = chain.flatten("data", dest, progress=seen.append)
    assert checked["format"] == "qcow2" and checked["virtual_size"] == 16 * MIB
    assert images.qcow2_backing(dest) == (None, None)
    for pattern in (1, 2, 3):
        _run("qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {pattern * MIB} 1M", str(dest))
    assert seen[-1] == 1.0
    # an older point of the chain has not seen the later writes
    older = tmp_path / "older.qcow2"
    with bc.open_chain(target, VM, INC1, check_images=False) as chain:
        chain.flatten("data", older)
    _run("qemu-io", "-f", "qcow2", "-c", f"read -P 0 {3 * MIB} 1M", str(older))


def test_flatten_cancelled_removes_the_file(target, tmp_path):
    dest = tmp_path / "flat.qcow2"
    with pytest.raises(Exception, match="cancelled"):
        with bc.open_chain(target, VM, INC2, check_images=False) as chain:
            chain.flatten("data", dest, cancelled=lambda: True)
    assert not dest.exists()


def test_the_files_checked_are_the_files_flattened(target, tmp_path):
    """A writer of the target swaps a checked file (a rename over it, a
    symlink) for one whose backing file is a host file: qemu still reads the
    checked file, through the chain the appliance states, not the header's."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"\x5a" * (16 * MIB))
    planted = tmp_path / "planted.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(secret), "-F", "raw",
         str(planted), "16M")
    top = bc.chain_file(target, VM, INC2, "data")
    full = bc.chain_file(target, VM, FULL, "data")
    with bc.open_chain(target, VM, INC2, check_images=False) as chain:
        os.replace(planted, full)  # the full's file replaced by a rename
        top.unlink()
        top.symlink_to(full)  # the top's by a symlink
        dest = tmp_path / "flat.qcow2"
        chain.flatten("data", dest)
    for pattern in (1, 2, 3):
        _run("qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {pattern * MIB} 1M", str(dest))
    _run("qemu-io", "-f", "qcow2", "-c", f"read -P 0 {5 * MIB} 1M", str(dest))
    assert all(fds == [] for fds in chain.fds.values())  # closed on leaving


def test_manifest_is_durable_and_partial_folders_are_not_backups(target):
    folder = bc.partial_folder(target, VM, "20261130T040000Z-dddddd")
    folder.mkdir()
    bc.write_manifest(folder, _manifest("20261130T040000Z-dddddd", INC2))
    assert not (folder / "manifest.json.tmp").exists()
    with pytest.raises(bc.BrokenChain, match="missing"):
        bc.verify_chain(target, VM, "20261130T040000Z-dddddd")
    bc.publish(folder, bc.backup_folder(target, VM, "20261130T040000Z-dddddd"))
    assert bc.read_manifest(bc.backup_folder(target, VM, "20261130T040000Z-dddddd"))["parent"] == INC2


def test_a_missing_link_breaks_the_chain(target):
    (bc.backup_folder(target, VM, INC1) / "manifest.json").unlink()
    with pytest.raises(bc.BrokenChain, match=f"{INC1}: missing"):
        bc.verify_chain(target, VM, INC2)


def test_a_backing_file_pointing_at_a_host_file_is_refused_before_qemu_opens_it(target, tmp_path):
    secret = tmp_path / "secret.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", str(secret), "16M")
    top = bc.chain_file(target, VM, INC2, "data")
    _run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(secret), "-F", "qcow2", str(top))
    with pytest.raises(bc.BrokenChain, match=f"{INC2}/disk-data.qcow2 does not apply on ../{INC1}"):
        bc.verify_chain(target, VM, INC2)


def test_a_full_backup_with_a_backing_file_is_refused(target):
    path = bc.chain_file(target, VM, FULL, "root")
    _run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "/var/lib/x.qcow2", "-F", "qcow2", str(path))
    with pytest.raises(bc.BrokenChain, match="a full backup stands alone"):
        bc.verify_chain(target, VM, INC2)


def test_a_manifest_naming_a_file_outside_the_layout_is_refused(target):
    folder = bc.backup_folder(target, VM, INC2)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["disks"][0]["file"] = "../../../../etc/shadow"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(bc.BrokenChain, match="outside the layout"):
        bc.verify_chain(target, VM, INC2)


def test_symlinks_are_not_followed(target, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    os.rename(bc.backup_folder(target, VM, INC1), elsewhere)
    os.symlink(elsewhere, bc.backup_folder(target, VM, INC1))
    with pytest.raises(bc.BrokenChain, match="not a folder"):
        bc.verify_chain(target, VM, INC2)
    os.unlink(bc.backup_folder(target, VM, INC1))
    os.rename(elsewhere, bc.backup_folder(target, VM, INC1))
    data = bc.chain_file(target, VM, INC1, "data")
    os.rename(data, tmp_path / "data.qcow2")
    os.symlink(tmp_path / "data.qcow2", data)
    with pytest.raises(bc.BrokenChain, match="not a regular file"):
        bc.verify_chain(target, VM, INC2)


def test_a_corrupt_image_fails_qemu_img_check(target):
    path = bc.chain_file(target, VM, INC1, "root")
    with open(path, "r+b") as f:  # the L1 table's offset pointed past the file's end
        f.seek(40)
        f.write((1 << 40).to_bytes(8, "big"))
    with pytest.raises(bc.BrokenChain, match=f"{INC1}/root.qcow2 fails qemu-img check"):
        bc.verify_chain(target, VM, INC2)
    assert bc.verify_chain(target, VM, INC2, check_images=False)


def test_a_disk_missing_from_an_ancestor_breaks_the_chain(target):
    folder = bc.backup_folder(target, VM, INC1)
    (folder / "manifest.json").write_text(json.dumps(_manifest(INC1, FULL, disks=("root",))))
    with pytest.raises(bc.BrokenChain, match=f"{INC1} has no disk data"):
        bc.verify_chain(target, VM, INC2)


def test_loops_and_foreign_ids_are_refused(target):
    folder = bc.backup_folder(target, VM, FULL)
    (folder / "manifest.json").write_text(json.dumps(_manifest(FULL, INC2)))
    with pytest.raises(bc.BrokenChain, match="loops"):
        bc.verify_chain(target, VM, INC2)
    (folder / "manifest.json").write_text(json.dumps(_manifest(INC1, None)))
    with pytest.raises(bc.BrokenChain, match="names another backup"):
        bc.verify_chain(target, VM, INC2)
    with pytest.raises(bc.BrokenChain, match="not a backup folder"):
        bc.verify_chain(target, VM, "../../etc")


def test_disk_file_names():
    assert bc.disk_file("root") == "root.qcow2"
    assert bc.disk_file("data") == "disk-data.qcow2"
    with pytest.raises(Exception, match="not a disk name"):
        bc.disk_file("../x")
    assert bc.BACKUP_ID.fullmatch(bc.new_backup_id(0.0))


def _planted_chain(target: Path, length: int, disks: tuple[str, ...]) -> str:
    """Manifests alone (no disk files), `length` long: what a target's writer can plant."""
    ids = [f"20261201T{n // 3600:02d}{n // 60 % 60:02d}{n % 60:02d}Z-eeeeee" for n in range(length)]
    for n, backup_id in enumerate(ids):
        folder = bc.backup_folder(target, VM, backup_id)
        folder.mkdir(parents=True)
        manifest = _manifest(backup_id, ids[n - 1] if n else None, disks)
        manifest["chain"] = ids[0]
        bc.write_manifest(folder, manifest)
    return ids[-1]


def test_a_planted_chain_too_long_or_with_too_many_files_is_refused_before_opening(target):
    """Bounded work for the controller (and the API worker's pre-check): a chain
    longer than full_every allows is refused when read, and one whose files
    would be more than MAX_CHAIN_FILES descriptors before any is opened."""
    longest = _planted_chain(target / "long", 130, ("root",))
    with pytest.raises(bc.BrokenChain, match="loops or is too long"):
        bc.verify_chain(target / "long", VM, longest)
    many = tuple(f"d{n}" for n in range(63)) + ("root",)
    wide = _planted_chain(target / "wide", 9, many)
    with pytest.raises(bc.BrokenChain, match="more files than a chain holds"):
        bc.verify_chain(target / "wide", VM, wide)


def test_rebase_onto_parent_rebases_every_file_at_once_and_names_a_failure(tmp_path):
    """Each held file gets its parent's relative path as backing file; a file qemu-img
    cannot rebase (not a qcow2) fails the whole with its name, after every qemu-img ended."""
    files = {}
    for name in ("root.qcow2", "disk-data.qcow2"):
        _run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/live/" + name, "-F", "qcow2",
             str(tmp_path / name), "16M")
        files[os.open(tmp_path / name, os.O_RDWR)] = name
    (tmp_path / "disk-junk.qcow2").write_bytes(b"not a qcow2" * 100)
    junk = os.open(tmp_path / "disk-junk.qcow2", os.O_RDWR)
    try:
        bc.rebase_onto_parent(files, FULL)
        for name in files.values():
            assert images.qcow2_backing(tmp_path / name) == (f"../{FULL}/{name}", "qcow2")
        with pytest.raises(bc.Failed, match="rebasing disk-junk.qcow2 onto "):
            bc.rebase_onto_parent({**files, junk: "disk-junk.qcow2"}, INC1)
    finally:
        for fd in [*files, junk]:
            os.close(fd)
