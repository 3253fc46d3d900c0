"""libvirt_backups.backup_sizes: the disks' virtual sizes from one call of the
domain's block stats (blockInfo asked QEMU three times per disk, after an
XMLDesc), found by the file each disk writes."""
from __future__ import annotations

import libvirt
import pytest

from appliance.virt import libvirt_backups
from appliance.virt.driver import DriverError

STATS = {"block.count": 3,
         "block.0.name": "vda", "block.0.path": "/vms/ID/root.qcow2", "block.0.capacity": 1 << 30,
         "block.1.name": "vdb", "block.1.path": "/vms/ID/disk-data.qcow2",
         "block.1.capacity": 5 << 30,
         "block.2.name": "sda", "block.2.path": "/vms/ID/cidata.iso", "block.2.capacity": 67584}


class Conn:
    def __init__(self, stats: dict):
        self.stats = stats
        self.calls: list = []

    def domainListGetStats(self, doms, stats, flags):  # noqa: N802 - libvirt's name
        self.calls.append((tuple(doms), stats, flags))
        return [(doms[0], self.stats)]


class Dom:
    """Only what one stats call needs: XMLDesc or blockInfo would fail the test."""

    def __init__(self, stats: dict):
        self.conn = Conn(stats)

    def connect(self):
        return self.conn


def test_every_disks_size_comes_from_one_stats_call():
    dom = Dom(STATS)
    assert libvirt_backups.backup_sizes(dom, ["root", "data"]) == {"root": 1 << 30,
                                                                   "data": 5 << 30}
    assert dom.conn.calls == [((dom,), libvirt.VIR_DOMAIN_STATS_BLOCK, 0)]


def test_a_disk_the_domain_does_not_have_is_an_error():
    with pytest.raises(DriverError, match="no disk logs"):
        libvirt_backups.backup_sizes(Dom(STATS), ["root", "logs"])
