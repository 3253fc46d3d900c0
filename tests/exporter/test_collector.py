"""The libvirt collector: families, units, one bulk call, and failures that cost only their own series."""
from __future__ import annotations

import subprocess
import threading
import time

import libvirt
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import CHUNKS, INACTIVE_CALL, MONITOR_CALL, PLAIN_CALL, LibvirtCollector, Target
from exporter.running_stats import OTHERS_CALL
from tests.exporter.fakes import (
    PAUSED_STATS,
    RUNNING_QEMU_STATS,
    STOPPED_STATS,
    CountingConnection,
    FakeConnection,
)

LOCAL = Target("local", "test:///default")


def registry_of(collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def vm(registry, family, name, host="local", **labels):
    return registry.get_sample_value(family, {"vm": name, "host": host, **labels})


def promtool_check(text: bytes) -> None:
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode())


def test_test_driver_every_domain_present_with_state_and_name(test_conn):
    running = test_conn.define("exp-running")
    test_conn.define("exp-paused", "paused")
    test_conn.define("exp-stopped", "stopped")
    names = {running.UUIDString(): "web"}  # the store's name for the one the appliance manages
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], lambda: names, open_connection=libvirt.open))
    assert registry.get_sample_value("vmappliance_host_up", {"host": "local"}) == 1
    assert vm(registry, "vmappliance_vm_state", "web", state="running", reason="booted") == 1
    assert vm(registry, "vmappliance_vm_state", "exp-paused", state="paused", reason="user") == 1
    assert vm(registry, "vmappliance_vm_state", "exp-stopped", state="stopped", reason="unknown") == 1
    assert vm(registry, "vmappliance_vm_info", "web", domain="exp-running", managed="true") == 1
    assert vm(registry, "vmappliance_vm_info", "exp-paused", domain="exp-paused", managed="false") == 1
    assert vm(registry, "vmappliance_vm_info", "exp-running", domain="exp-running", managed="false") is None
    assert registry.get_sample_value("vmappliance_host_cpus", {"host": "local"}) == 16
    assert registry.get_sample_value("vmappliance_host_memory_total_bytes", {"host": "local"}) == 3072 * 2**20
    assert registry.get_sample_value("vmappliance_host_domains", {"host": "local"}) >= 4
    promtool_check(generate_latest(registry))


def test_bulk_calls_per_host_per_scrape_whatever_the_number_of_domains(test_conn):
    counting = CountingConnection(libvirt.open("test:///default"))
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=lambda uri: counting))
    for count in (5, 50):
        for i in range(count - (5 if count == 50 else 0)):
            test_conn.define(f"exp-bulk{count}-{i}")
        counting.calls.clear()
        generate_latest(registry)
        assert counting.calls.count("listAllDomains") == 1  # the test driver: one connection
        assert counting.calls.count("getAllDomainStats") == 1  # the shut-off half
        # the running half: the monitor groups in parts, and one call with the others
        assert 2 <= counting.calls.count("domainListGetStats") <= CHUNKS + 1
        assert counting.calls.count("getInfo") == counting.calls.count("getFreeMemory") == 1
    assert registry.get_sample_value("vmappliance_host_up", {"host": "local"}) == 1
    assert registry.get_sample_value("vmappliance_host_running_domains", {"host": "local"}) >= 50
    fake = FakeConnection([("u1", "d1", RUNNING_QEMU_STATS), ("u2", "d2", STOPPED_STATS)])
    generate_latest(registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=lambda uri: fake)))
    stats_calls = [c for c in fake.calls if c[0] in ("domainListGetStats", "getAllDomainStats")]
    # the shut-off half is asked for alongside the running half: in either order
    assert sorted(stats_calls) == sorted([("domainListGetStats", *MONITOR_CALL, 1), ("domainListGetStats", *PLAIN_CALL, 1),
                                          ("getAllDomainStats", *INACTIVE_CALL)])
    nowait = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    assert all(call[2] & nowait for call in stats_calls)


def test_the_two_halves_cover_every_domain_once(test_conn):
    test_conn.define("exp-half-on")
    test_conn.define("exp-half-off", "stopped")
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=libvirt.open))
    assert vm(registry, "vmappliance_vm_state", "exp-half-on", state="running", reason="booted") == 1
    assert vm(registry, "vmappliance_vm_state", "exp-half-off", state="stopped", reason="unknown") == 1
    assert registry.get_sample_value("vmappliance_exporter_domain_errors", {"host": "local"}) == 0


def test_units_converted_and_labels_stable():
    fake = FakeConnection([("u1", "pfx-db", RUNNING_QEMU_STATS)])
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], lambda: {"u1": "db"}, open_connection=lambda uri: fake))
    assert vm(registry, "vmappliance_vm_cpu_seconds_total", "db") == pytest.approx(18.07)
    assert vm(registry, "vmappliance_vm_cpu_user_seconds_total", "db") == pytest.approx(7.44)
    assert vm(registry, "vmappliance_vm_vcpus", "db") == 2
    assert vm(registry, "vmappliance_vm_vcpu_seconds_total", "db", vcpu="1") == pytest.approx(6.0)
    assert vm(registry, "vmappliance_vm_memory_current_bytes", "db") == 131072 * 1024
    assert vm(registry, "vmappliance_vm_memory_rss_bytes", "db") == 150000 * 1024
    assert vm(registry, "vmappliance_vm_memory_usable_bytes", "db") == 80000 * 1024
    assert vm(registry, "vmappliance_vm_memory_unused_bytes", "db") == 65536 * 1024
    assert vm(registry, "vmappliance_vm_memory_available_bytes", "db") == 120000 * 1024
    assert vm(registry, "vmappliance_vm_memory_major_faults_total", "db") == 120
    assert vm(registry, "vmappliance_vm_block_read_bytes_total", "db", disk="vda") == 4_000_000
    assert vm(registry, "vmappliance_vm_block_read_seconds_total", "db", disk="vda") == pytest.approx(0.25)
    assert vm(registry, "vmappliance_vm_block_write_requests_total", "db", disk="vda") == 5
    assert vm(registry, "vmappliance_vm_block_capacity_bytes", "db", disk="vdb") == 67584
    assert vm(registry, "vmappliance_vm_block_allocation_bytes", "db", disk="vda") == 200704
    # Interfaces by position, not by the tap name that changes at every start.
    tap = {"interface": "net0", "source": "host"}  # libvirt's counters, of the NIC's tap
    assert vm(registry, "vmappliance_vm_network_receive_bytes_total", "db", **tap) == 1000
    assert vm(registry, "vmappliance_vm_network_transmit_packets_total", "db", **tap) == 20
    assert vm(registry, "vmappliance_vm_network_receive_drops_total", "db", **tap) == 1
    assert vm(registry, "vmappliance_vm_network_stats_available", "db", **tap) == 1
    assert vm(registry, "vmappliance_vm_network_receive_bytes_total", "db", interface="vnet7",
              source="host") is None
    assert registry.get_sample_value("vmappliance_host_memory_free_bytes", {"host": "local"}) == 20 * 1024**3
    assert registry.get_sample_value("vmappliance_host_vcpus_allocated", {"host": "local"}) == 2
    promtool_check(generate_latest(registry))


def test_uptime_from_the_store_for_running_managed_vms():
    fake = FakeConnection([("u1", "pfx-a", RUNNING_QEMU_STATS), ("u2", "pfx-b", PAUSED_STATS)])
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], lambda: {"u1": "a", "u2": "b"},
                                            open_connection=lambda uri: fake,
                                            uptimes=lambda: {"u1": 42.0, "u2": 7.0}))
    assert vm(registry, "vmappliance_vm_uptime_seconds", "a") == 42.0
    assert vm(registry, "vmappliance_vm_uptime_seconds", "b") is None  # paused: not up
    assert vm(registry, "vmappliance_vm_state", "b", state="paused", reason="user") == 1


def test_a_broken_domain_costs_only_its_own_series():
    broken = {"vcpu.current": 1}  # no state at all
    odd = {**RUNNING_QEMU_STATS, "cpu.time": "not a number"}
    fake = FakeConnection([("u1", "good", RUNNING_QEMU_STATS), ("u2", "broken", broken), ("u3", "odd", odd),
                           ("u4", "off", STOPPED_STATS)])
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=lambda uri: fake))
    assert registry.get_sample_value("vmappliance_host_up", {"host": "local"}) == 1
    assert vm(registry, "vmappliance_vm_cpu_seconds_total", "good") == pytest.approx(18.07)
    assert vm(registry, "vmappliance_vm_state", "off", state="stopped", reason="shutdown") == 1
    for name in ("broken", "odd"):  # all or nothing: no half-reported VM
        assert vm(registry, "vmappliance_vm_info", name, domain=name, managed="false") is None
        assert vm(registry, "vmappliance_vm_vcpus", name) is None
    assert registry.get_sample_value("vmappliance_exporter_domain_errors", {"host": "local"}) == 2
    promtool_check(generate_latest(registry))


def test_an_unreachable_host_costs_only_its_own_series():
    good = FakeConnection([("u1", "a", RUNNING_QEMU_STATS)])

    def open_connection(uri):
        if uri == "qemu+tcp://127.0.0.1:1/system":
            raise libvirt.libvirtError("unable to connect")
        return good

    targets = [Target("down", "qemu+tcp://127.0.0.1:1/system"), Target("up", "fake:///")]
    registry = registry_of(LibvirtCollector(lambda: targets, open_connection=open_connection))
    assert registry.get_sample_value("vmappliance_host_up", {"host": "down"}) == 0
    assert registry.get_sample_value("vmappliance_host_up", {"host": "up"}) == 1
    assert vm(registry, "vmappliance_vm_cpu_seconds_total", "a", host="up") == pytest.approx(18.07)
    assert registry.get_sample_value("vmappliance_host_cpus", {"host": "down"}) is None
    promtool_check(generate_latest(registry))


def test_a_real_unreachable_uri_answers_quickly_with_up_zero():
    targets = [Target("gone", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"), LOCAL]
    registry = registry_of(LibvirtCollector(lambda: targets))
    started = time.monotonic()
    assert registry.get_sample_value("vmappliance_host_up", {"host": "gone"}) == 0
    assert registry.get_sample_value("vmappliance_host_up", {"host": "local"}) == 1
    assert time.monotonic() - started < 2


def test_a_hung_host_is_cut_off_at_the_deadline_and_not_queued_twice():
    release = threading.Event()
    hung = FakeConnection([("u1", "slow", RUNNING_QEMU_STATS)], block=release)
    fine = FakeConnection([("u2", "quick", RUNNING_QEMU_STATS)])
    targets = [Target("hung", "hung:///"), Target("fine", "fine:///")]
    collector = LibvirtCollector(lambda: targets, open_connection=lambda uri: hung if uri == "hung:///" else fine,
                                 deadline=0.3)
    registry = registry_of(collector)
    try:
        for _ in range(2):
            started = time.monotonic()
            text = generate_latest(registry).decode()
            assert time.monotonic() - started < 1.0
            assert 'vmappliance_host_up{host="hung"} 0.0' in text
            assert 'vmappliance_host_up{host="fine"} 1.0' in text
            assert 'vm="quick"' in text and 'vm="slow"' not in text
        assert hung.calls.count(("domainListGetStats", *MONITOR_CALL, 1)) == 1  # not queued a second time
    finally:
        release.set()
    time.sleep(0.1)
    assert registry.get_sample_value("vmappliance_host_up", {"host": "hung"}) == 1


def test_a_stranger_named_like_a_managed_vm_is_left_out():
    fake = FakeConnection([("u1", "pfx-web", RUNNING_QEMU_STATS), ("u9", "web", STOPPED_STATS)])
    registry = registry_of(LibvirtCollector(lambda: [LOCAL], lambda: {"u1": "web"}, open_connection=lambda uri: fake))
    assert vm(registry, "vmappliance_vm_state", "web", state="running", reason="booted") == 1
    assert vm(registry, "vmappliance_vm_state", "web", state="stopped", reason="shutdown") is None
    assert registry.get_sample_value("vmappliance_exporter_domain_errors", {"host": "local"}) == 1


def test_running_domains_are_spread_over_connections_each_once():
    """libvirtd serves one connection's requests 5 at a time: the running
    domains' stats go through CONNECTIONS connections, CHUNKS parts each."""
    from exporter.collector import CONNECTIONS

    domains = [(f"00000000-0000-0000-0000-{i:012d}", f"d{i}", RUNNING_QEMU_STATS) for i in range(30)]
    opened: list[FakeConnection] = []

    def open_connection(uri):
        opened.append(FakeConnection(domains))
        return opened[-1]

    registry = registry_of(LibvirtCollector(lambda: [Target("local", "qemu:///system")],
                                            open_connection=open_connection))
    generate_latest(registry)
    assert len(opened) == CONNECTIONS
    per_conn = [[c for c in conn.calls if c[:3] == ("domainListGetStats", *MONITOR_CALL)] for conn in opened]
    assert all(1 <= len(calls) <= CHUNKS for calls in per_conn)  # every connection used, within its limit
    assert sum(call[3] for calls in per_conn for call in calls) == 30  # each domain asked for once
    # and the groups that need no monitor, in one call for all of them
    assert [c for conn in opened for c in conn.calls if c[:3] == ("domainListGetStats", *PLAIN_CALL)] == [
        ("domainListGetStats", *PLAIN_CALL, 30)]
    assert registry.get_sample_value("vmappliance_host_running_domains", {"host": "local"}) == 30


APPLIANCE_DOMAIN_XML = (
    "<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>"
    "<metadata><vma:vm xmlns:vma='{ns}' appliance='{appliance}' id='{uuid}' name='web'/></metadata>"
    "<memory unit='KiB'>131072</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>")


def test_without_a_store_only_this_appliances_domains_are_reported(test_conn):
    """`vmctl exporter` has no store: the appliance's domains are those whose <metadata>
    names its instance id. Issue 10: another appliance's domains on the same libvirtd
    (a second home) were reported too; a stranger's never were."""
    import uuid as uuidlib

    from appliance.virt.domain import METADATA_NS

    made = []
    try:
        for name, appliance in (("exp-mine", "a1"), ("exp-other-appliance", "a2")):
            made.append(test_conn.defineXML(APPLIANCE_DOMAIN_XML.format(
                name=name, uuid=uuidlib.uuid4(), ns=METADATA_NS, appliance=appliance)))
            made[-1].create()
        test_conn.define("exp-theirs")

        def shown(registry, name):
            return vm(registry, "vmappliance_vm_info", name, domain=name, managed="false") == 1

        mine = registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=libvirt.open,
                                            ours_only=True, appliance="a1"))
        assert vm(mine, "vmappliance_vm_state", "exp-mine", state="running", reason="booted") == 1
        assert not shown(mine, "exp-other-appliance") and not shown(mine, "exp-theirs")
        # the host families still count every domain (they describe the host)
        assert mine.get_sample_value("vmappliance_host_running_domains", {"host": "local"}) >= 3
        any_appliance = registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=libvirt.open,
                                                     ours_only=True))
        assert shown(any_appliance, "exp-mine") and shown(any_appliance, "exp-other-appliance")
        assert not shown(any_appliance, "exp-theirs")
        everything = registry_of(LibvirtCollector(lambda: [LOCAL], open_connection=libvirt.open))
        assert shown(everything, "exp-theirs") and shown(everything, "exp-other-appliance")
    finally:
        for dom in made:
            dom.destroy()
            dom.undefine()
