"""Counters of user-mode NICs from the guest agent (exporter/agent_net.py): the answer's
parsing, the bounds on a guest that answers late, lies or not at all, and the series."""
from __future__ import annotations

import json
import threading
import time

import libvirt
from prometheus_client import CollectorRegistry, generate_latest

from exporter.agent_net import COMMAND, AgentCounters, guest_counters, nic_macs, without_counters
from exporter.collector import LibvirtCollector, Target
from tests.exporter.fakes import RUNNING_QEMU_STATS, FakeConnection
from tests.exporter.test_collector import promtool_check

MAC = "52:54:00:76:34:d3"
# What the demo guest's qemu-ga 7.2 answered (virsh qemu-agent-command ... guest-network-get-interfaces).
DEMO_REPLY = json.dumps({"return": [
    {"name": "lo", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}],
     "statistics": {"tx-packets": 0, "tx-errs": 0, "rx-bytes": 0, "rx-dropped": 0, "rx-packets": 0,
                    "rx-errs": 0, "tx-bytes": 0, "tx-dropped": 0},
     "hardware-address": "00:00:00:00:00:00"},
    {"name": "eth0", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}],
     "statistics": {"tx-packets": 47, "tx-errs": 0, "rx-bytes": 4204, "rx-dropped": 0, "rx-packets": 55,
                    "rx-errs": 0, "tx-bytes": 3412, "tx-dropped": 0},
     "hardware-address": MAC}]})
# libvirt 9.0's interface stats of a running domain with one user-mode NIC: a slot, no counters.
USER_NIC_STATS = {k: v for k, v in RUNNING_QEMU_STATS.items() if not k.startswith("net.")} | {"net.count": 1}
DOMAIN_XML = f"""<domain type='kvm'><name>x</name><devices>
  <disk type='file' device='disk'><target dev='vda'/></disk>
  <interface type='user'><mac address='{MAC.upper()}'/><model type='virtio'/></interface>
  <interface type='network'><mac address='52:54:00:00:00:02'/><source network='n'/></interface>
</devices></domain>"""


def reply(*interfaces: dict) -> str:
    return json.dumps({"return": list(interfaces)})


def iface(mac: str, **stats) -> dict:
    return {"name": "x", "hardware-address": mac, "statistics": stats}


# -- parsing --------------------------------------------------------------------------------------
def test_the_demo_guests_answer_maps_to_its_nic_by_mac():
    macs = nic_macs(DOMAIN_XML)
    assert macs == [MAC, "52:54:00:00:00:02"]
    assert guest_counters(DEMO_REPLY, macs, [0]) == {0: {
        "rx.bytes": 4204, "rx.pkts": 55, "rx.errs": 0, "rx.drop": 0,
        "tx.bytes": 3412, "tx.pkts": 47, "tx.errs": 0, "tx.drop": 0}}
    # a NIC no guest interface carries the MAC of has none (lo's is all zeros)
    assert guest_counters(DEMO_REPLY, macs, [1]) == {}


def test_only_the_nics_libvirt_has_no_counters_for_are_asked_about():
    assert without_counters(USER_NIC_STATS) == [0]
    assert without_counters(RUNNING_QEMU_STATS) == []  # a tap NIC: libvirt's counters
    assert without_counters({"net.count": 2, "net.1.rx.bytes": 5}) == [0]
    assert without_counters({"state.state": 5}) == []


def test_what_a_guest_makes_up_is_left_out():
    macs = [MAC]
    bad = [-1, 1 << 64, True, "12", 1.5, None, [1]]
    for value in bad:
        assert guest_counters(reply(iface(MAC, **{"rx-bytes": value})), macs, [0]) == {}, value
    # one bad member costs that member only
    found = guest_counters(reply(iface(MAC, **{"rx-bytes": 10, "tx-bytes": -5, "rx-packets": "x"})), macs, [0])
    assert found == {0: {"rx.bytes": 10}}
    for text in ["", "[]", "nonsense", '{"return": 5}', '{"return": [5, null, {"hardware-address": 3}]}',
                 reply({"hardware-address": MAC}), reply({"hardware-address": MAC, "statistics": []})]:
        assert guest_counters(text, macs, [0]) == {}, text
    huge = reply(iface(MAC, **{"rx-bytes": 1}), *[iface("00:00:00:00:00:01")] * 30000)
    assert len(huge) > 1 << 20 and guest_counters(huge, macs, [0]) == {}
    # an index the domain has no NIC for
    assert guest_counters(DEMO_REPLY, macs, [3, -1]) == {}


def test_a_vlan_on_the_nic_shares_its_mac_and_the_nic_counts_most():
    text = reply(iface(MAC, **{"rx-bytes": 100, "tx-bytes": 50}),  # eth0.10
                 iface(MAC.upper(), **{"rx-bytes": 900, "tx-bytes": 700}),  # eth0 under it
                 iface(MAC, **{"rx-bytes": 10, "tx-bytes": 5}))
    assert guest_counters(text, [MAC], [0]) == {0: {"rx.bytes": 900, "tx.bytes": 700}}


# -- asking, in time ------------------------------------------------------------------------------
class AgentDomain:
    def __init__(self, xml: str):
        self.xml = xml

    def XMLDesc(self, flags: int) -> str:
        return self.xml


class AgentConnection:
    """The read-write connection the agent's commands go through."""

    def __init__(self, xml: str = DOMAIN_XML):
        self.xml = xml
        self.lookups: list[str] = []

    def lookupByUUIDString(self, uuid: str) -> AgentDomain:
        self.lookups.append(uuid)
        return AgentDomain(self.xml)

    def isAlive(self) -> int:
        return 1

    def close(self) -> int:
        return 0


class Agent:
    """A guest agent: answers, fails as libvirt does when there is none, or hangs."""

    def __init__(self, answer: str | None = DEMO_REPLY, hang: threading.Event | None = None):
        self.answer = answer
        self.hang = hang
        self.calls: list[tuple[str, int]] = []

    def __call__(self, dom: AgentDomain, command: str, timeout: int) -> str:
        self.calls.append((command, timeout))
        if self.hang is not None:
            self.hang.wait(30)
        if self.answer is None:
            raise libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")
        return self.answer


def counters(agent: Agent, conn: AgentConnection | None = None, **kwargs) -> AgentCounters:
    conn = conn or AgentConnection()
    return AgentCounters(open_connection=lambda uri: conn, command=agent, **kwargs)


def test_an_answering_agent_fills_the_nics_counters_with_its_fixed_command():
    agent = Agent()
    records = {"u1": dict(USER_NIC_STATS)}
    counters(agent).fill("qemu:///system", records)
    assert records["u1"]["net.0.source"] == "agent"
    assert records["u1"]["net.0.rx.bytes"] == 4204 and records["u1"]["net.0.tx.pkts"] == 47
    assert agent.calls == [(COMMAND, 5)]
    assert json.loads(COMMAND) == {"execute": "guest-network-get-interfaces"}


def test_no_agent_leaves_the_nic_without_counters():
    records = {"u1": dict(USER_NIC_STATS)}
    counters(Agent(answer=None)).fill("qemu:///system", records)
    assert records["u1"]["net.0.source"] == "agent"
    assert "net.0.rx.bytes" not in records["u1"]


def test_a_hung_agent_costs_the_scrape_the_wait_only_and_is_not_asked_twice():
    hang = threading.Event()
    agent = Agent(hang=hang)
    source = counters(agent, wait=0.3)
    try:
        took = []
        for _ in range(3):
            records = {"u1": dict(USER_NIC_STATS)}
            started = time.monotonic()
            source.fill("qemu:///system", records)
            took.append(time.monotonic() - started)
            assert "net.0.rx.bytes" not in records["u1"]
        assert len(agent.calls) == 1  # still in flight: not asked again
        # the first scrape waited for it (WAIT, not the agent's timeout), the next ones not
        assert 0.25 < took[0] < 1.0 and max(took[1:]) < 0.1, took
    finally:
        hang.set()
    deadline = time.monotonic() + 10
    while "net.0.rx.bytes" not in records["u1"]:
        assert time.monotonic() < deadline
        records = {"u1": dict(USER_NIC_STATS)}
        source.fill("qemu:///system", records)  # the late answer is kept for the next scrape
    assert records["u1"]["net.0.rx.bytes"] == 4204


def test_an_agent_that_failed_is_asked_again_but_not_waited_for():
    agent = Agent(answer=None)
    source = counters(agent, wait=5)
    source.fill("uri", {"u1": dict(USER_NIC_STATS)})
    agent.hang, agent.answer = threading.Event(), DEMO_REPLY  # hangs now
    try:
        started = time.monotonic()
        records = {"u1": dict(USER_NIC_STATS)}
        source.fill("uri", records)
        assert time.monotonic() - started < 1.0
        while len(agent.calls) < 2:  # asked again, in the pool
            assert time.monotonic() - started < 10
            time.sleep(0.01)
    finally:
        agent.hang.set()
    deadline = time.monotonic() + 10
    while "net.0.rx.bytes" not in records["u1"]:  # its answer, when it comes, is used
        assert time.monotonic() < deadline
        time.sleep(0.05)
        records = {"u1": dict(USER_NIC_STATS)}
        source.fill("uri", records)
    assert records["u1"]["net.0.rx.bytes"] == 4204


def test_a_last_answer_is_reported_for_max_age_then_dropped():
    now = [1000.0]
    agent = Agent()
    source = counters(agent, max_age=60, clock=lambda: now[0])
    source.fill("uri", {"u1": dict(USER_NIC_STATS)})
    agent.answer = None  # the agent stops answering
    now[0] += 59
    records = {"u1": dict(USER_NIC_STATS)}
    source.fill("uri", records)
    assert records["u1"]["net.0.rx.bytes"] == 4204
    now[0] += 2
    records = {"u1": dict(USER_NIC_STATS)}
    source.fill("uri", records)
    assert "net.0.rx.bytes" not in records["u1"] and records["u1"]["net.0.source"] == "agent"


def test_a_paused_guest_is_not_asked_and_keeps_its_last_answer():
    agent = Agent()
    source = counters(agent)
    source.fill("uri", {"u1": dict(USER_NIC_STATS)})
    paused = {"u1": {**USER_NIC_STATS, "state.state": libvirt.VIR_DOMAIN_PAUSED}}
    source.fill("uri", paused)
    assert len(agent.calls) == 1
    assert paused["u1"]["net.0.rx.bytes"] == 4204


def test_a_domain_with_counters_from_libvirt_is_never_asked():
    agent = Agent()
    records = {"u1": dict(RUNNING_QEMU_STATS)}
    counters(agent).fill("uri", records)
    assert agent.calls == [] and "net.0.source" not in records["u1"]


# -- the series -----------------------------------------------------------------------------------
def scrape(fake: FakeConnection, agent: Agent, names: dict[str, str],
           conn: AgentConnection | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(LibvirtCollector(
        lambda: [Target("local", "qemu:///x")], lambda: names, open_connection=lambda uri: fake,
        agent=counters(agent, conn)))
    return registry


def sample(registry: CollectorRegistry, family: str, vm: str, source: str) -> float | None:
    return registry.get_sample_value(family, {"vm": vm, "host": "local", "interface": "net0",
                                              "source": source})


def test_user_nic_series_come_from_the_agent_and_a_strangers_agent_is_not_asked():
    fake = FakeConnection([("u1", "pfx-web", USER_NIC_STATS), ("u2", "pfx-db", RUNNING_QEMU_STATS),
                           ("u3", "someone-elses", USER_NIC_STATS)])
    agent, conn = Agent(), AgentConnection()
    registry = scrape(fake, agent, {"u1": "web", "u2": "db"}, conn)
    text = generate_latest(registry)
    assert sample(registry, "vmappliance_vm_network_receive_bytes_total", "web", "agent") == 4204
    assert sample(registry, "vmappliance_vm_network_transmit_bytes_total", "web", "agent") == 3412
    assert sample(registry, "vmappliance_vm_network_stats_available", "web", "agent") == 1
    assert sample(registry, "vmappliance_vm_network_receive_bytes_total", "db", "host") == 1000
    assert sample(registry, "vmappliance_vm_network_stats_available", "db", "host") == 1
    # the stranger (not the appliance's: not in the store, no <metadata>) has no agent counters
    assert set(conn.lookups) == {"u1"} and len(agent.calls) == len(conn.lookups)
    assert sample(registry, "vmappliance_vm_network_stats_available", "someone-elses", "host") == 0
    assert b"someone-elses" in text and sample(
        registry, "vmappliance_vm_network_receive_bytes_total", "someone-elses", "agent") is None
    promtool_check(text)


def test_a_guest_without_agent_has_no_counter_series_and_says_so():
    fake = FakeConnection([("u1", "pfx-web", USER_NIC_STATS)])
    registry = scrape(fake, Agent(answer=None), {"u1": "web"})
    assert sample(registry, "vmappliance_vm_network_stats_available", "web", "agent") == 0
    text = generate_latest(registry).decode()
    assert "vmappliance_vm_network_receive_bytes_total{" not in text
    assert 'vmappliance_vm_state{host="local",reason="booted",state="running",vm="web"} 1.0' in text


def test_agent_counters_can_be_turned_off():
    fake = FakeConnection([("u1", "pfx-web", USER_NIC_STATS)])
    registry = CollectorRegistry()
    registry.register(LibvirtCollector(lambda: [Target("local", "qemu:///x")], lambda: {"u1": "web"},
                                       open_connection=lambda uri: fake, agent=False))
    assert sample(registry, "vmappliance_vm_network_stats_available", "web", "host") == 0
