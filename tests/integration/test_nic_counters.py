"""Traffic counters of a user-mode NIC (no host device: libvirt has none for it) in a
real `vmctl serve`'s /metrics, from the demo guest's agent (exporter/agent_net.py).

One TCG demo guest with the default user-mode NIC and a port forward to its
port 8000 (which answers "ok"). Connections through the forward are traffic
into and out of the guest's eth0: the series must grow by at least what they
carried, and agree with the guest's own /sys counters read on its console;
`vmctl exporter`'s registry (no store) counts it too; a hung agent (SIGSTOP)
costs the NIC's series, not the scrape.
"""
from __future__ import annotations

import socket
import time

import libvirt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.virt.domain import METADATA_NS, appliance_of
from exporter.agent_net import AGENT_TIMEOUT, MAX_AGE, WAIT
from exporter.registry import build_registry
from tests.appliance_process import READY_LINE, free_port
from tests.integration.test_backups import guest

pytestmark = pytest.mark.integration

VM = "nic1"
CONNECTIONS = 20
NET = "vmappliance_vm_network_"


def nic_series(app) -> dict[str, float]:
    """The VM's net0 series of one scrape, by family name (+ `_total`), with their source."""
    resp = app.api("GET", "/metrics")
    assert resp.status_code == 200, resp.text
    found = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            if s.name.startswith(NET) and s.labels.get("vm") == VM:
                assert s.labels["interface"] == "net0" and s.labels["source"] == "agent", s
                found[s.name] = s.value
    return found


def wait_series(app, check, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while not check(found := nic_series(app)):
        assert time.monotonic() < deadline, found
        time.sleep(1)
    return found


@pytest.fixture(scope="module")
def nic1(unmounted_appliance):
    port = free_port()
    unmounted_appliance.create_vm(VM, memory="128M", network={
        "type": "user", "port_forwards": [{"host_port": port, "guest_port": 8000}]})
    unmounted_appliance.wait_console(VM, READY_LINE, 300)
    return port


def test_a_user_mode_nics_counters_grow_with_its_traffic(unmounted_appliance, nic1):
    app = unmounted_appliance
    # The agent starts after the ready line: until it answers, no counters, and a 0 that says so.
    before = wait_series(app, lambda f: f.get(NET + "stats_available") == 1, 180)
    rx, tx = NET + "receive_bytes_total", NET + "transmit_bytes_total"
    rx_pkts, tx_pkts = NET + "receive_packets_total", NET + "transmit_packets_total"
    assert {rx, tx, rx_pkts, tx_pkts, NET + "receive_drops_total"} <= set(before)

    for _ in range(CONNECTIONS):
        with socket.create_connection(("127.0.0.1", nic1), timeout=30) as conn:
            conn.settimeout(30)
            assert conn.recv(16).startswith(b"ok")
    # Each connection: into the guest at least SYN and its ACK (54+ bytes each); out of
    # it the SYN-ACK and "ok\n" (54+ and 57+ bytes). "receive" is into the guest.
    after = wait_series(app, lambda f: f.get(tx_pkts, 0) - before[tx_pkts] >= 2 * CONNECTIONS
                        and f.get(rx_pkts, 0) - before[rx_pkts] >= 2 * CONNECTIONS, 120)
    assert after[rx] - before[rx] >= 2 * 54 * CONNECTIONS
    assert after[tx] - before[tx] >= (54 + 57) * CONNECTIONS

    # The guest's own counters (read on its console: no network traffic) lie between two
    # scrapes, the later one close to them (an answer may come a scrape late: waited for).
    seen = guest(app, VM, "cat /sys/class/net/eth0/statistics/rx_bytes "
                          "/sys/class/net/eth0/statistics/tx_bytes | tr '\\n' ' '")
    guest_rx, guest_tx = (int(v) for v in seen.split())
    assert after[rx] <= guest_rx and after[tx] <= guest_tx
    later = wait_series(app, lambda f: f[rx] >= guest_rx and f[tx] >= guest_tx, 60)
    assert later[rx] - guest_rx < 10_000 and later[tx] - guest_tx < 10_000


def test_vmctl_exporters_registry_counts_it_too(unmounted_appliance, nic1):
    """Without a store: the domain is the appliance's by its <metadata>, so its agent is asked."""
    app = unmounted_appliance
    conn = libvirt.open(app.libvirt_uri)
    try:
        dom = conn.lookupByName(app.prefix + VM)
        owner = appliance_of(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS))
    finally:
        conn.close()
    registry = build_registry(app.libvirt_uri, host_name="h", api_metrics=False, appliance=owner)
    labels = {"vm": app.prefix + VM, "host": "h", "interface": "net0", "source": "agent"}
    deadline = time.monotonic() + 60
    while registry.get_sample_value(NET + "stats_available", labels) != 1:
        assert time.monotonic() < deadline, registry.get_sample_value(NET + "stats_available", labels)
        time.sleep(1)
    assert registry.get_sample_value(NET + "receive_bytes_total", labels) > 0


# ~60 s (qemu-ga stopped in the guest and waited out, then resumed): in `make test-slow`, so
# that `make test` stays under CI's 30 minutes (ci3: 30.7 min with it); the bounded waits
# and the no-retry of a hung agent are proved in `make test` by tests/exporter/test_agent_net.py.
@pytest.mark.slow
def test_a_hung_agent_costs_its_nics_series_not_the_scrape(unmounted_appliance, nic1):
    """qemu-ga stopped (SIGSTOP) inside the guest: libvirt waits for it, the scrape does
    not; after MAX_AGE the NIC's counters go, stats_available says 0, and they come
    back once the agent runs again."""
    app = unmounted_appliance
    wait_series(app, lambda f: f.get(NET + "stats_available") == 1, 180)
    assert guest(app, VM, "kill -STOP $(pidof qemu-ga) && echo stopped") == "stopped"
    try:
        deadline = time.monotonic() + MAX_AGE + 60
        took = []
        while True:
            started = time.monotonic()
            found = nic_series(app)
            took.append(time.monotonic() - started)
            if found.get(NET + "stats_available") == 0:
                break
            assert time.monotonic() < deadline, found
            time.sleep(1)
        assert found == {NET + "stats_available": 0}  # no counter series, a 0 that says why
        # A scrape waits WAIT at most, never libvirt's AGENT_TIMEOUT for the agent, and
        # only until the agent has failed once (each gunicorn worker asks it).
        took.sort()
        assert took[-1] < AGENT_TIMEOUT and took[len(took) // 2] < WAIT, took
    finally:
        assert guest(app, VM, "kill -CONT $(pidof qemu-ga) && echo resumed") == "resumed"
    back = wait_series(app, lambda f: f.get(NET + "stats_available") == 1, 120)
    assert back[NET + "receive_bytes_total"] > 0
