"""fs/scratch.py: editors' temporary files are their maker's own, bounded in size, number
and bytes held, kept a while after their last close (sed and Python close before the
rename), and decided by the policy as the write of their directory's file."""
from __future__ import annotations

import errno

import pyfuse3
import pytest

from appliance.errors import Invalid
from fs import scratch
from fs.scratch import ScratchFiles

ALICE, BOB = 1001, 1002
TMP = ("vms", "web1", "sedAbC123")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def errno_of(call, *args) -> int:
    with pytest.raises(pyfuse3.FUSEError) as caught:
        call(*args)
    return caught.value.errno


def test_which_names_are_temporary_and_how_the_policy_decides_them():
    assert scratch.is_scratch_name(TMP)
    assert scratch.is_scratch_name(("projects", "dev", "vms", "web1", ".spec.json.swp"))
    assert scratch.is_scratch_name(("pools", "web", "4913"))
    assert scratch.is_scratch_name(("templates", "small.json~"))
    for own in (("vms", "web1", "spec.json"), ("vms", "web1", "snapshots"), ("vms", "web1", "disks"),
                ("pools", "web", "replicas"), ("templates", "small.json"), ("hosts", "local", "x"),
                ("groups", "x"), ("vms", "x"), ("images", "x.img"), ("vms", "web1", "snapshots", "x")):
        assert not scratch.is_scratch_name(own), own
    assert scratch.decided_as(TMP, "create") == ("write", ("vms", "web1", "spec.json"))
    assert scratch.decided_as(("pools", "web", "t"), "unlink") == ("write", ("pools", "web", "template.json"))
    assert scratch.decided_as(("templates", "t"), "write") == ("create", ("templates", "NAME.json"))
    assert scratch.decided_as(TMP, "read") is None
    assert scratch.decided_as(("vms", "web1", "state"), "write") is None


def test_a_temporary_file_is_its_makers_own():
    files = ScratchFiles(Clock())
    file = files.create(TMP, ALICE)
    files.write(file, 0, b'{"cpus": 2}')
    assert files.stat(TMP, ALICE).size == 11 and files.stat(TMP, BOB) is None
    assert [name for name, _ in files.entries(TMP[:-1], ALICE)] == [TMP[-1]]
    assert files.entries(TMP[:-1], BOB) == []
    assert errno_of(files.create, TMP, BOB) == errno.EEXIST  # the name is taken (mkstemp tries another)
    for call in (files.open, files.remove, files.text):
        assert errno_of(call, TMP, BOB) == errno.ENOENT
    assert errno_of(files.move, TMP, TMP[:-1] + ("other",), BOB) == errno.ENOENT
    assert files.text(TMP, ALICE) == '{"cpus": 2}'


def test_sizes_numbers_and_bytes_held_are_bounded():
    files = ScratchFiles(Clock())
    file = files.create(TMP, ALICE)
    assert errno_of(files.write, file, scratch.MAX_BYTES, b"x") == errno.EFBIG
    assert errno_of(files.truncate, file, scratch.MAX_BYTES + 1) == errno.EFBIG
    files.truncate(file, scratch.MAX_BYTES)  # a file may be as large as a JSON file's value
    for i in range(1, scratch.PER_DIR):
        files.create(TMP[:-1] + (f"t{i}",), ALICE)
    assert errno_of(files.create, TMP[:-1] + ("more",), ALICE) == errno.ENOSPC
    # Bytes held in the whole mount: directories each at their count, files at their size.
    held = scratch.MAX_BYTES
    for vm in range(scratch.TOTAL_BYTES // scratch.MAX_BYTES + 1):
        big = files.create(("vms", f"vm{vm}", "big"), 2000 + vm)  # each its own uid (UID_BYTES)
        if held + scratch.MAX_BYTES > scratch.TOTAL_BYTES:
            assert errno_of(files.truncate, big, scratch.MAX_BYTES) == errno.ENOSPC
            break
        files.truncate(big, scratch.MAX_BYTES)
        held += scratch.MAX_BYTES
    else:
        pytest.fail("TOTAL_BYTES was never reached")


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "\x7f", "\udcff", "x" * 256])
def test_names_are_printable(name):
    with pytest.raises(Invalid):
        ScratchFiles(Clock()).create(("vms", "web1", name), ALICE)


def test_a_closed_file_lapses_an_open_one_does_not():
    clock = Clock()
    files = ScratchFiles(clock)
    kept = files.create(TMP, ALICE)
    closed = files.create(TMP[:-1] + ("closed",), ALICE)
    files.release(closed)
    clock.now += scratch.LINGER_SECONDS - 1
    assert files.stat(TMP[:-1] + ("closed",), ALICE) is not None  # time to rename it
    clock.now += 2
    assert files.stat(TMP[:-1] + ("closed",), ALICE) is None
    assert files.stat(TMP, ALICE) is not None  # still open
    files.release(kept)
    clock.now += scratch.LINGER_SECONDS + 1
    assert files.entries(TMP[:-1], ALICE) == [] and files.files == {}


def test_a_move_keeps_the_file_and_may_replace_only_the_makers_own():
    files = ScratchFiles(Clock())
    file = files.create(TMP, ALICE)
    files.write(file, 0, b"a")
    files.create(TMP[:-1] + ("bobs",), BOB)
    assert errno_of(files.move, TMP, TMP[:-1] + ("bobs",), ALICE) == errno.EACCES
    files.move(TMP, TMP[:-1] + ("moved",), ALICE)
    assert files.text(TMP[:-1] + ("moved",), ALICE) == "a" and files.stat(TMP, ALICE) is None
    files.write(file, 1, b"b")  # the handle still open on it writes the moved file
    assert files.text(TMP[:-1] + ("moved",), ALICE) == "ab"


def test_one_uid_cannot_take_every_users_bytes():
    files = ScratchFiles(Clock())
    for i in range(scratch.UID_BYTES // scratch.MAX_BYTES):
        files.truncate(files.create(("vms", f"vm{i}", "big"), ALICE), scratch.MAX_BYTES)
    more = files.create(("vms", "last", "big"), ALICE)
    assert errno_of(files.truncate, more, 1) == errno.ENOSPC
    files.truncate(files.create(("vms", "last", "bobs"), BOB), scratch.MAX_BYTES)  # bob still may


@pytest.mark.parametrize("away", ["remove", "replace"])
def test_a_file_removed_while_open_still_counts_until_its_last_release(away):
    """rm (or a rename over it) while a handle stays open: writes through that handle used to
    go uncounted, so create, rm, write 1 MiB, again... grew the root mount without bound
    (security review, this stop)."""
    files = ScratchFiles(Clock())
    kept = []
    refused = None
    for i in range(scratch.UID_BYTES // scratch.MAX_BYTES + 2):
        path = ("vms", f"vm{i}", "x")
        file = files.create(path, ALICE)  # open once
        if away == "remove":
            files.remove(path, ALICE)
        else:
            other = files.create(path[:-1] + ("y",), ALICE)
            files.release(other)
            files.move(path[:-1] + ("y",), path, ALICE)  # replaces the open one
        try:
            files.write(file, 0, b"x" * scratch.MAX_BYTES)
        except pyfuse3.FUSEError as err:
            refused = err.errno
            break
        kept.append(file)
    assert refused == errno.ENOSPC, "the bytes of removed files still open were not counted"
    assert len(kept) * scratch.MAX_BYTES <= scratch.UID_BYTES
    for file in kept:  # the last release frees them
        files.release(file)
    fresh = files.create(("vms", "web1", "again"), ALICE)
    files.write(fresh, 0, b"x" * scratch.MAX_BYTES)
