"""The metadata service's listeners follow the hosts (appliance/metadata/service.py):
one per network namespace of the local hosts, shared by hosts in one namespace,
none for a remote host, closed (and the address released) when its hosts are gone,
a namespace where the port is taken tried again without a warning each round, and
the machine's own namespace served only with metadata_host_namespace. The namespaces here are
stand-ins: netns.py's own calls are tested in tests/integration/test_metadata_namespace.py."""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket

import pytest

from appliance.metadata import netns, service

SOCKETS = "/var/lib/vm-appliance/local-hosts"
OWN = (1, 1)  # the namespace of this process: the machine's own


def uri(name: str) -> str:
    return f"qemu+unix:///system?socket={SOCKETS}/{name}/run/libvirt-sock"


class Hosts:
    def __init__(self, rows):
        self.rows = rows

    def list_hosts(self):
        return self.rows


class FakeDiag:
    closed = False

    def established_inode(self, *args):
        return None

    def neighbour_macs(self, address):
        return set()

    def close(self):
        self.closed = True


class FakeLoopback:
    def __init__(self, pid, released):
        self.pid, self.released = pid, released

    def release(self):
        self.released.append(self.pid)


@pytest.fixture
def world(monkeypatch, config):
    """pids of the libvirt sockets, namespaces of the pids; what _open was asked."""
    state = {"pids": {}, "spaces": {}, "opened": [], "released": [], "refuse": None}

    def listener_pid(path, timeout=2.0):
        if path not in state["pids"]:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        return state["pids"][path]

    def open_(pid, key):
        assert key == state["spaces"].get(pid, OWN)
        if state["refuse"]:
            raise OSError(state["refuse"], "taken")
        state["opened"].append(pid)
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock, FakeDiag(), FakeLoopback(pid, state["released"])

    monkeypatch.setattr(netns, "listener_pid", listener_pid)
    monkeypatch.setattr(netns, "namespace_key",
                        lambda pid: OWN if pid == os.getpid() else state["spaces"][pid])
    monkeypatch.setattr(service.MetadataService, "_open", staticmethod(open_))
    return state


def rounds(svc, *steps):
    """Run reconcile once per step, step() first; the listeners' hosts after each."""
    async def main():
        seen = []
        for step in steps:
            step()
            await svc.reconcile()
            seen.append(sorted(tuple(one.ns.hosts) for one in svc.listeners.values()))
        for listener in svc.listeners.values():
            listener.close()
        return seen
    return asyncio.run(main())


def test_hosts_in_one_namespace_share_a_listener_and_a_remote_host_has_none(world, config):
    rows = [{"name": "h1", "uri": uri("a")}, {"name": "h2", "uri": uri("b")},
            {"name": "far", "uri": "qemu+ssh://root@h9/system"}]
    svc = service.MetadataService(config, Hosts(rows))
    world["pids"] = {f"{SOCKETS}/a/run/libvirt-sock": 10, f"{SOCKETS}/b/run/libvirt-sock": 20}
    world["spaces"] = {10: (1, 100), 20: (1, 100)}

    def split():
        world["spaces"][20] = (1, 200)  # h2's libvirtd now in a namespace of its own

    def h1_gone():
        del world["pids"][f"{SOCKETS}/a/run/libvirt-sock"]

    seen = rounds(svc, lambda: None, split, h1_gone)
    assert seen == [[("h1", "h2")], [("h1",), ("h2",)], [("h2",)]]
    assert world["opened"] == [10, 20]  # the shared one kept, h2's new one opened once
    assert world["released"] == [10]  # the address left with h1's listener


def test_a_uri_the_allowlist_refuses_is_not_entered(world, config):
    rows = [{"name": "odd", "uri": "qemu+unix:///system?socket=/tmp/elsewhere/sock"}]
    svc = service.MetadataService(config, Hosts(rows))
    world["pids"] = {"/tmp/elsewhere/sock": 10}
    world["spaces"] = {10: (1, 100)}
    assert rounds(svc, lambda: None) == [[]]
    assert world["opened"] == []


def test_a_taken_port_is_tried_again_and_said_once(world, config, caplog):
    svc = service.MetadataService(config, Hosts([{"name": "h1", "uri": uri("a")}]))
    world["pids"] = {f"{SOCKETS}/a/run/libvirt-sock": 10}
    world["spaces"] = {10: (1, 100)}
    world["refuse"] = errno.EADDRINUSE
    with caplog.at_level(logging.WARNING, logger="appliance.metadata"):
        seen = rounds(svc, lambda: None, lambda: None, lambda: world.update(refuse=None))
    assert seen == [[], [], [("h1",)]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "a second appliance?" in warnings[0], warnings


def test_the_machines_own_namespace_is_served_only_when_the_admin_says_so(world, config, caplog):
    rows = [{"name": "default", "uri": uri("a")}, {"name": "lab", "uri": uri("b")}]
    world["pids"] = {f"{SOCKETS}/a/run/libvirt-sock": 10, f"{SOCKETS}/b/run/libvirt-sock": 20}
    world["spaces"] = {10: OWN, 20: (1, 200)}  # "default": qemu:///system's libvirtd
    assert config.metadata_host_namespace is False  # the default
    svc = service.MetadataService(config, Hosts(rows))

    def third():
        rows.append({"name": "other", "uri": uri("c")})
        world["pids"][f"{SOCKETS}/c/run/libvirt-sock"] = 30
        world["spaces"][30] = OWN

    with caplog.at_level(logging.INFO, logger="appliance.metadata"):
        seen = rounds(svc, lambda: None, lambda: None, third, lambda: None)
    assert seen == [[("lab",)]] * 4
    assert world["opened"] == [20]
    said = [r.getMessage() for r in caplog.records if "not serving" in r.getMessage()]
    assert len(said) == 2, said  # once, and once more when another host is there
    assert "hosts default:" in said[0] and "metadata_host_namespace" in said[0]
    assert "hosts default, other:" in said[1]

    caplog.clear()
    world["opened"].clear()
    on = service.MetadataService(dataclasses.replace(config, metadata_host_namespace=True),
                                 Hosts(rows))
    with caplog.at_level(logging.INFO, logger="appliance.metadata"):
        assert rounds(on, lambda: None) == [[("default", "other"), ("lab",)]]
    assert sorted(world["opened"]) == [10, 20]
    assert not [r for r in caplog.records if "not serving" in r.getMessage()]
