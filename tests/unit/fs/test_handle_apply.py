"""A FLUSH that comes while a write is still applying the same bytes does not apply them
again (fs/handles.py, Handle.apply). Found by `make soak`: a client thread wrote
`force-stop` to vms/X/state while another thread of its process forked and exec'd (ps);
the exec closed the inherited fd, the kernel sent FLUSH, and the mount applied the
value a second time: the duplicate operation superseded the writer's own, whose write
then failed with EBUSY although its value was applied."""
import trio
import trio.testing

from fs.handles import Handle


def _write_and_flush(value: bytes) -> tuple[list[str], list[bool]]:
    """A write(2) of `value` whose operation waits, and the FLUSH of a forked child's
    close-on-exec meanwhile: what was applied, and whether the FLUSH was answered while
    the write still waited (a FLUSH that waited for the write would be cut after 5 s)."""
    applied: list[str] = []
    flushed_while_waiting: list[bool] = []

    async def main() -> None:
        done = trio.Event()

        async def write(path, text: str) -> None:
            applied.append(text)
            await done.wait()  # the write waits for its operation

        handle = Handle(path=("vms", "web1", "state"), writable=True)
        handle.take(0, value)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle.apply, False, write)  # write(2), waiting
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(5):
                await handle.apply(True, write)  # the child's FLUSH
                flushed_while_waiting.append(not done.is_set())
            done.set()
        assert not handle.buffer

    trio.run(main)
    return applied, flushed_while_waiting


def test_a_flush_during_a_write_applies_nothing_again():
    assert _write_and_flush(b"force-stop\n")[0] == ["force-stop\n"]


def test_a_flush_during_a_write_does_not_wait_for_its_operation():
    """The FLUSH of a forked child's close-on-exec while its parent's write waits for its
    operation: answered at once, not when the operation ends (its exec waited until then:
    `make soak`'s libvirtd part stalled 120 s, the child being the one that was to start
    the libvirtd the operation needed). The write still applies its value once."""
    applied, flushed_while_waiting = _write_and_flush(b"running\n")
    assert flushed_while_waiting == [True]
    assert applied == ["running\n"]
