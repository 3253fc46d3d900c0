"""The running domains' two calls (exporter/running_stats.py): the monitor groups
and the others, a domain whose monitor part was lost to our own plain call
asked once more, and other tenants' domains kept out of both."""
from __future__ import annotations

import libvirt
import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import MONITOR_CALL, PLAIN_CALL, LibvirtCollector, Target
from exporter.running_stats import OTHERS_CALL
from tests.exporter.fakes import RUNNING_QEMU_STATS, FakeConnection, FakeDomain

LOCAL = Target("local", "qemu:///system")
GROUP_PREFIXES = {
    libvirt.VIR_DOMAIN_STATS_STATE: ("state.",),
    libvirt.VIR_DOMAIN_STATS_CPU_TOTAL: ("cpu.",),
    libvirt.VIR_DOMAIN_STATS_BALLOON: ("balloon.",),
    libvirt.VIR_DOMAIN_STATS_VCPU: ("vcpu.",),
    libvirt.VIR_DOMAIN_STATS_INTERFACE: ("net.",),
    libvirt.VIR_DOMAIN_STATS_BLOCK: ("block.",),
}
# What libvirt answers for the balloon and block groups when it could not take
# the domain's job (NOWAIT): nothing read through QEMU's monitor.
WITHOUT_JOB = {key: value for key, value in RUNNING_QEMU_STATS.items()
               if key in ("balloon.current", "balloon.maximum", "block.count")
               or key.endswith((".name", ".path"))}


class GroupedConnection(FakeConnection):
    """Answers only the groups asked for; the monitor call of the domains in
    `lose` comes back as without the job, `times` times."""

    def __init__(self, domains, lose: dict[str, int] | None = None):
        super().__init__(domains)
        self.lose = dict(lose or {})

    def domainListGetStats(self, doms, groups: int, flags: int):
        answer = []
        for dom, stats in super().domainListGetStats(doms, groups, flags):
            prefixes = tuple(p for group, ps in GROUP_PREFIXES.items() if groups & group for p in ps)
            record = {k: v for k, v in stats.items() if k.startswith(prefixes)}
            uuid = dom.UUIDString()
            if groups == MONITOR_CALL[0] and self.lose.get(uuid, 0) > 0:
                self.lose[uuid] -= 1
                record = {k: v for k, v in WITHOUT_JOB.items() if k.startswith(prefixes)}
            answer.append((FakeDomain(uuid, dom.name()), record))
        return answer


class Scrape:
    """One scrape's samples (get_sample_value would scrape again at each look)."""

    def __init__(self, collector):
        registry = CollectorRegistry()
        registry.register(collector)
        self.samples = {(sample.name, frozenset(sample.labels.items())): sample.value
                        for family in registry.collect() for sample in family.samples}

    def get_sample_value(self, name: str, labels: dict[str, str]) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


def monitor_calls(conn: FakeConnection) -> list[tuple]:
    return [call for call in conn.calls if call[:3] == ("domainListGetStats", *MONITOR_CALL)]


def test_the_two_calls_together_give_every_family_of_one_call():
    conn = GroupedConnection([("u1", "d1", RUNNING_QEMU_STATS)])
    registry = Scrape(LibvirtCollector(lambda: [LOCAL], open_connection=lambda uri: conn, connections=1))
    value = registry.get_sample_value
    labels = {"vm": "d1", "host": "local"}
    assert value("vmappliance_vm_state", {**labels, "state": "running", "reason": "booted"}) == 1
    assert value("vmappliance_vm_cpu_seconds_total", labels) == pytest.approx(18.07)  # plain call
    assert value("vmappliance_vm_vcpu_wait_seconds_total", {**labels, "vcpu": "1"}) == pytest.approx(0.002)
    assert value("vmappliance_vm_network_receive_bytes_total", {**labels, "interface": "net0", "source": "host"}) == 1000
    assert value("vmappliance_vm_memory_rss_bytes", labels) == 150000 * 1024  # monitor call
    assert value("vmappliance_vm_block_capacity_bytes", {**labels, "disk": "vdb"}) == 67584
    assert len(monitor_calls(conn)) == 1


def test_a_domain_whose_job_the_plain_call_took_is_asked_once_more():
    domains = [("u1", "d1", RUNNING_QEMU_STATS), ("u2", "d2", RUNNING_QEMU_STATS)]
    conn = GroupedConnection(domains, lose={"u2": 1})
    registry = Scrape(LibvirtCollector(lambda: [LOCAL], open_connection=lambda uri: conn, connections=1))
    for name in ("d1", "d2"):
        assert registry.get_sample_value("vmappliance_vm_memory_rss_bytes", {"vm": name, "host": "local"}) == (
            150000 * 1024)
        assert registry.get_sample_value("vmappliance_vm_block_read_requests_total",
                                         {"vm": name, "host": "local", "disk": "vda"}) == 300
    calls = monitor_calls(conn)
    assert sorted(call[3] for call in calls) == [1, 1, 1]  # d1, d2, then d2 alone again


def test_the_second_ask_is_the_last_one():
    """Another client holding the domain's job (a long operation): the domain is
    reported with what libvirt gives without the job, after one more try."""
    conn = GroupedConnection([("u1", "d1", RUNNING_QEMU_STATS)], lose={"u1": 5})
    registry = Scrape(LibvirtCollector(lambda: [LOCAL], open_connection=lambda uri: conn, connections=1))
    labels = {"vm": "d1", "host": "local"}
    assert registry.get_sample_value("vmappliance_vm_cpu_seconds_total", labels) == pytest.approx(18.07)
    assert registry.get_sample_value("vmappliance_vm_memory_current_bytes", labels) == 131072 * 1024
    assert registry.get_sample_value("vmappliance_vm_memory_rss_bytes", labels) is None
    assert len(monitor_calls(conn)) == 2


def test_other_tenants_running_domains_are_only_counted():
    """The API reports the VMs the store knows: another tenant's running domain
    gets no monitor query from us, but still counts in the host's figures."""
    domains = [("u1", "ours", RUNNING_QEMU_STATS), ("u9", "theirs", RUNNING_QEMU_STATS)]
    conn = GroupedConnection(domains)
    registry = Scrape(LibvirtCollector(lambda: [LOCAL], lambda: {"u1": "web"}, open_connection=lambda uri: conn,
                                            connections=1, managed_only=True))
    assert registry.get_sample_value("vmappliance_vm_memory_rss_bytes", {"vm": "web", "host": "local"}) > 0
    assert registry.get_sample_value("vmappliance_vm_info", {"vm": "theirs", "host": "local", "domain": "theirs",
                                                             "managed": "false"}) is None
    stats_calls = [call for call in conn.calls if call[0] == "domainListGetStats"]
    assert sorted(stats_calls) == sorted([("domainListGetStats", *MONITOR_CALL, 1),
                                          ("domainListGetStats", *PLAIN_CALL, 1),
                                          ("domainListGetStats", *OTHERS_CALL, 1)])
    assert registry.get_sample_value("vmappliance_host_running_domains", {"host": "local"}) == 2
    assert registry.get_sample_value("vmappliance_host_vcpus_allocated", {"host": "local"}) == 4
