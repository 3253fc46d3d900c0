"""The metadata service's Linux side (appliance/metadata/netns.py) in a network
namespace this test makes (`unshare -n`, only its loopback): entering it from a
thread, 169.254.169.254/32 on its lo, the listener there, and the sock_diag lookup
that finds which process holds a local connection. No guest, well under a second;
the guests' journey is tests/integration/test_netns_metadata.py (slow)."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from appliance.metadata import netns

pytestmark = pytest.mark.integration


@pytest.fixture
def holder():
    """A process alone in a new network namespace, its lo up; killed after the test."""
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c",
                             "ip link set lo up && echo up && exec sleep 600"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def addresses(pid: int) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "-4", "addr", "show", "lo"],
                          capture_output=True, text=True, check=True).stdout


def test_the_listener_lives_in_the_hosts_namespace_and_knows_its_peers(holder):
    own = netns.namespace_key(os.getpid())
    assert netns.namespace_key(holder) != own
    assert "169.254.169.254" not in addresses(holder)

    def setup():
        return netns.add_loopback_address(), netns.add_loopback_address(), \
            netns.open_listener(), netns.SocketDiag()

    first, again, listener, diag = netns.in_namespace(holder, setup)
    try:
        assert (first, again) == (True, False)  # added once, found the second time
        assert "inet 169.254.169.254/32 scope host lo" in addresses(holder)
        # Not in this test's own namespace: the namespace of the thread was its own.
        assert netns.namespace_key(os.getpid()) == own
        assert "169.254.169.254" not in subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "lo"], capture_output=True, text=True).stdout
        client = netns.in_namespace(
            holder, lambda: socket.create_connection((netns.METADATA_ADDRESS, 80), timeout=5))
        with client:
            listener.setblocking(True)
            conn, peer = listener.accept()
            with conn:
                # The peer's socket is found by its four-tuple, and this process holds it.
                inode = diag.established_inode(peer[0], peer[1], netns.METADATA_ADDRESS, 80)
                assert inode == os.fstat(client.fileno()).st_ino
                assert netns.holds_socket(os.getpid(), inode)
                assert not netns.holds_socket(holder, inode)
                # Another port, or the listener's own end, is no peer's socket.
                assert diag.established_inode(peer[0], peer[1] + 1, netns.METADATA_ADDRESS,
                                              80) is None
                assert diag.established_inode(netns.METADATA_ADDRESS, 80, peer[0],
                                              peer[1]) != inode
    finally:
        listener.close()
        diag.close()


def test_the_libvirt_socket_names_its_root_process(tmp_path):
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        assert netns.listener_pid(str(path)) == os.getpid()  # the tests run as root
    assert netns.socket_path("qemu+unix:///system?socket=/x/libvirt-sock") == "/x/libvirt-sock"
    assert netns.socket_path("qemu:///system") in netns.SYSTEM_SOCKETS
    assert netns.socket_path("qemu+ssh://root@h2/system") is None
    assert netns.socket_path("qemu+tls://h2/system") is None
    assert netns.socket_path("test:///default") is None
    assert Path(f"/proc/{os.getpid()}/ns/net").exists()
