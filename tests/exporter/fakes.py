"""Stand-ins for a libvirt connection, for what the test driver cannot show.

libvirt's test:///default driver reports only state stats; the stats below are
what qemu:///system reports for a running TCG guest of the demo image (keys
and units as libvirt documents them: ns, KiB, bytes).
"""
from __future__ import annotations

import threading

import libvirt

RUNNING_QEMU_STATS = {
    "state.state": 1, "state.reason": 1,
    "cpu.time": 18_070_000_000, "cpu.user": 7_440_000_000, "cpu.system": 10_630_000_000,
    "balloon.current": 131072, "balloon.maximum": 131072, "balloon.swap_in": 0, "balloon.swap_out": 0,
    "balloon.major_fault": 120, "balloon.minor_fault": 9000, "balloon.unused": 65536,
    "balloon.available": 120000, "balloon.usable": 80000, "balloon.rss": 150000, "balloon.disk_caches": 1024,
    "balloon.last-update": 1700000000,
    "vcpu.current": 2, "vcpu.maximum": 2,
    "vcpu.0.state": 1, "vcpu.0.time": 5_000_000_000, "vcpu.0.wait": 1_000_000,
    "vcpu.1.state": 1, "vcpu.1.time": 6_000_000_000, "vcpu.1.wait": 2_000_000,
    "net.count": 1, "net.0.name": "vnet7", "net.0.rx.bytes": 1000, "net.0.rx.pkts": 10, "net.0.rx.errs": 0,
    "net.0.rx.drop": 1, "net.0.tx.bytes": 2000, "net.0.tx.pkts": 20, "net.0.tx.errs": 0, "net.0.tx.drop": 0,
    "block.count": 2,
    "block.0.name": "vda", "block.0.path": "/x/root.qcow2", "block.0.rd.reqs": 300, "block.0.rd.bytes": 4_000_000,
    "block.0.rd.times": 250_000_000, "block.0.wr.reqs": 5, "block.0.wr.bytes": 20480, "block.0.wr.times": 3_000_000,
    "block.0.fl.reqs": 2, "block.0.fl.times": 1_000_000, "block.0.allocation": 200704,
    "block.0.capacity": 67108864, "block.0.physical": 196616,
    "block.1.name": "vdb", "block.1.path": "/x/cidata.iso", "block.1.rd.reqs": 10, "block.1.rd.bytes": 40960,
    "block.1.rd.times": 1_000_000, "block.1.wr.reqs": 0, "block.1.wr.bytes": 0, "block.1.wr.times": 0,
    "block.1.fl.reqs": 0, "block.1.fl.times": 0, "block.1.allocation": 36864, "block.1.capacity": 67584,
    "block.1.physical": 67584,
}
STOPPED_STATS = {"state.state": 5, "state.reason": 1, "vcpu.current": 1, "vcpu.maximum": 1,
                 "balloon.current": 131072, "balloon.maximum": 131072}
PAUSED_STATS = {**RUNNING_QEMU_STATS, "state.state": 3, "state.reason": 1}


class FakeDomain:
    def __init__(self, uuid: str, name: str):
        self._uuid, self._name = uuid, name

    def UUIDString(self) -> str:
        return self._uuid

    def name(self) -> str:
        return self._name


class FakeConnection:
    """Only the calls the collector may make; anything else fails loudly."""

    def __init__(self, domains: list[tuple[str, str, dict]], block: threading.Event | None = None):
        self.domains = domains
        self.block = block
        self.calls: list[tuple] = []

    def getAllDomainStats(self, groups: int, flags: int):
        self.calls.append(("getAllDomainStats", groups, flags))
        if self.block is not None:
            self.block.wait()
        return self._select(flags)

    def _select(self, flags: int):
        wanted = []
        for uuid, name, stats in self.domains:
            inactive = stats.get("state.state") in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED)
            if flags & libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE and inactive:
                continue
            if flags & libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE and not inactive:
                continue
            wanted.append((FakeDomain(uuid, name), stats))
        return wanted

    def listAllDomains(self, flags: int = 0):
        self.calls.append(("listAllDomains", flags))
        return [dom for dom, _ in self._select(libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)]

    def domainListGetStats(self, doms, groups: int, flags: int):
        self.calls.append(("domainListGetStats", groups, flags, len(doms)))
        if self.block is not None:
            self.block.wait()
        wanted = {dom.UUIDString() for dom in doms}
        return [(FakeDomain(uuid, name), stats) for uuid, name, stats in self.domains if uuid in wanted]

    def getInfo(self):
        self.calls.append(("getInfo",))
        return ["x86_64", 24105, 2, 2400, 1, 1, 2, 1]

    def getFreeMemory(self):
        self.calls.append(("getFreeMemory",))
        return 20 * 1024**3

    def close(self) -> int:
        return 0


class CountingConnection:
    """A real connection (the test driver) that records what the collector calls."""

    ALLOWED = frozenset({"listAllDomains", "domainListGetStats", "getAllDomainStats", "getInfo", "getFreeMemory",
                         "close"})

    def __init__(self, conn: libvirt.virConnect):
        self._conn = conn
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        if name not in self.ALLOWED:
            raise AssertionError(f"the collector called {name}: only the bulk calls are allowed")
        self.calls.append(name)
        return getattr(self._conn, name)
