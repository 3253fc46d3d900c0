"""Which VM a metadata request comes from (appliance/metadata/identify.py), with a
fake store, libvirt and /proc: the source address on an appliance network (fixed IP,
else DHCP lease), or the QEMU process holding a local connection."""
from __future__ import annotations

import pytest

from appliance.metadata.identify import Identifier
from tests.unit.appliance.metadata.fakes import (
    LIBVIRTD_PID,
    FakeConnection,
    FakeStore,
    namespace,
    vm,
)

ALPHA, BETA, GAMMA = ("11111111-1111-1111-1111-111111111111",
                      "22222222-2222-2222-2222-222222222222",
                      "33333333-3333-3333-3333-333333333333")
LAB = "vmapp.default.lab"
QEMU_PIDS = {"t-gamma": 700, "t-alpha": 701}
ARP = {"10.20.0.10": "52:54:00:00:00:01", "10.20.0.150": "52:54:00:aa:00:02"}  # alpha, beta


@pytest.fixture
def proc(tmp_path):
    """libvirt's pid files as the host's libvirtd sees them, under /proc/PID/root."""
    run = tmp_path / str(LIBVIRTD_PID) / "root/run/libvirt/qemu"
    run.mkdir(parents=True)
    for name, pid in QEMU_PIDS.items():
        (run / f"{name}.pid").write_text(str(pid))
    return tmp_path


def identifier(store, proc, conns=None, owners=None, cmdlines=None, uids=None):
    conns = conns or {"h1": FakeConnection({ALPHA: "t-alpha", GAMMA: "t-gamma"},
                                           {LAB: [{"ipaddr": "10.20.0.150",
                                                   "mac": "52:54:00:AA:00:02"}]})}
    owners = owners or {}  # inode -> pid holding it
    cmdlines = cmdlines if cmdlines is not None else {
        700: ["qemu-system-x86_64", "-name", "guest=t-gamma", "-uuid", GAMMA],
        701: ["qemu-system-x86_64", "-uuid", ALPHA]}
    uids = uids if uids is not None else {700: {0}, 701: {0}}  # QEMU as root
    return Identifier(store, conns.__getitem__, proc,
                      holds_socket=lambda pid, inode: owners.get(inode) == pid,
                      cmdline=lambda pid: cmdlines.get(pid, []),
                      uids=lambda pid: uids.get(pid, set()))


def lab_vms(**beta):
    return [vm(ALPHA, "alpha", {"type": "network", "name": "lab", "ip": "10.20.0.10"}),
            vm(BETA, "beta", {"type": "network", "name": "lab"}, mac="52:54:00:aa:00:02", **beta),
            vm(GAMMA, "gamma", {"type": "user"}, mac="52:54:00:aa:00:03")]


def test_a_nat_guest_is_its_fixed_ip_and_another_its_dhcp_lease(proc):
    ids = identifier(FakeStore(lab_vms()), proc)
    alpha = ids.identify(namespace(arp=ARP), "10.20.0.10", 40000)
    assert alpha.row["name"] == "alpha" and alpha.local_ipv4 == "10.20.0.10"
    assert alpha.nics == [{"mac": "52:54:00:00:00:01", "address": "10.20.0.10", "prefix": 24,
                           "gateway": "10.20.0.1", "dns": "10.20.0.1"}]
    beta = ids.identify(namespace(arp=ARP), "10.20.0.150", 40001)  # the lease's MAC, any case
    assert beta.row["name"] == "beta" and beta.local_ipv4 == "10.20.0.150"


@pytest.mark.parametrize("ip", ["10.20.0.151",  # in the subnet, leased to no one
                                "10.20.0.1",  # the host's own address on the bridge
                                "10.99.0.10",  # no appliance network's
                                "not-an-ip"])
def test_an_address_no_vm_has_is_nobody(proc, ip):
    assert identifier(FakeStore(lab_vms()), proc).identify(namespace(arp=ARP), ip, 40000) is None


def test_a_vm_on_another_host_or_stopped_or_of_another_project_is_not_found(proc):
    for changed in ({"host": "h2"}, {"state": "stopped"}, {"project": "other"}):
        vms = lab_vms()
        vms[0].update({"observed_state" if k == "state" else k: v for k, v in changed.items()})
        ids = identifier(FakeStore(vms), proc)
        assert ids.identify(namespace(arp=ARP), "10.20.0.10", 40000) is None, changed
    # The other host's listener (its own namespace) finds it there.
    vms = lab_vms()
    vms[0]["host"] = "h2"
    conns = {"h2": FakeConnection()}
    found = identifier(FakeStore(vms), proc, conns).identify(namespace(("h2",), arp=ARP), "10.20.0.10", 1)
    assert found.row["name"] == "alpha"


def test_a_further_nic_is_found_by_its_own_fixed_ip():
    row = vm(ALPHA, "alpha", {"type": "user"},
             networks=[{"network": "lab", "ip": "10.20.0.30", "mac": "52:54:00:bb:00:01"}])
    ids = Identifier(FakeStore([row]), lambda host: FakeConnection())
    found = ids.identify(namespace(arp={"10.20.0.30": "52:54:00:bb:00:01"}), "10.20.0.30", 5)
    assert found.row["name"] == "alpha" and found.local_ipv4 == "10.20.0.30"


def test_a_user_mode_guest_is_the_qemu_that_holds_the_connection(proc):
    local = {("169.254.169.254", 50000): 9001}
    ids = identifier(FakeStore(lab_vms()), proc, owners={9001: 700})
    found = ids.identify(namespace(local=local), "169.254.169.254", 50000)
    assert found.row["name"] == "gamma" and found.local_ipv4 == "10.0.2.15"
    # A local connection is never taken for a nat guest's: alpha's QEMU holds none of it.
    assert found.row["id"] == GAMMA


def test_a_local_process_that_is_no_managed_qemu_gets_nothing(proc):
    local = {("127.0.0.1", 50000): 9001}
    # Held by some other process (pid 555), not by gamma's QEMU (700).
    ids = identifier(FakeStore(lab_vms()), proc, owners={9001: 555})
    assert ids.identify(namespace(local=local), "127.0.0.1", 50000) is None
    # A local connection from an address of the nat subnet is still a local one.
    local = {("10.20.0.1", 50001): 9002}
    ids = identifier(FakeStore(lab_vms()), proc, owners={9002: 555})
    assert ids.identify(namespace(local=local), "10.20.0.1", 50001) is None


def test_a_reused_pid_or_a_restricted_nic_is_not_the_vm(proc):
    local = {("169.254.169.254", 50000): 9001}
    # The pid file names 700, but 700 is now another process (no -uuid GAMMA).
    ids = identifier(FakeStore(lab_vms()), proc, owners={9001: 700},
                     cmdlines={700: ["sleep", "-uuid", ALPHA]})
    assert ids.identify(namespace(local=local), "169.254.169.254", 50000) is None
    # outbound none (QEMU restrict=on) reaches nothing: never taken for the connection.
    vms = lab_vms()
    vms[2]["spec"]["network"]["outbound"] = "none"
    ids = identifier(FakeStore(vms), proc, owners={9001: 700})
    assert ids.identify(namespace(local=local), "169.254.169.254", 50000) is None


def test_a_domain_name_that_could_leave_the_run_folder_is_not_read(proc, tmp_path):
    (tmp_path / "secret.pid").write_text("700")
    conns = {"h1": FakeConnection({GAMMA: "../../../../../../secret"})}
    local = {("169.254.169.254", 50000): 9001}
    ids = identifier(FakeStore(lab_vms()), proc, conns, owners={9001: 700})
    assert ids.identify(namespace(local=local), "169.254.169.254", 50000) is None


def test_a_reused_pid_whose_argv_names_the_vm_is_not_its_qemu(proc):
    """A user's process that took a stopped QEMU's pid (its pid file still there) and
    put `-uuid UUID` in its own argv, holding a connection to the service: it is not
    the domain's QEMU, whose user (the DAC label, root here) it does not run as. It
    was taken for the VM (the command line was the only check)."""
    local = {("169.254.169.254", 50000): 9001}
    forged = {700: ["sleep", "-uuid", GAMMA], 701: ["qemu-system-x86_64", "-uuid", ALPHA]}
    ids = identifier(FakeStore(lab_vms()), proc, owners={9001: 700}, cmdlines=forged,
                     uids={700: {1000}, 701: {0}})
    assert ids.identify(namespace(local=local), "169.254.169.254", 50000) is None
    # QEMU under libvirt's own user (qemu.conf user = "libvirt-qemu"): its uid, not root.
    conns = {"h1": FakeConnection({GAMMA: "t-gamma"})}
    conns["h1"].uid = 64055
    ids = identifier(FakeStore(lab_vms()), proc, conns, owners={9001: 700},
                     uids={700: {64055}})
    assert ids.identify(namespace(local=local), "169.254.169.254", 50000).row["id"] == GAMMA
    ids = identifier(FakeStore(lab_vms()), proc, conns, owners={9001: 700}, uids={700: {0}})
    assert ids.identify(namespace(local=local), "169.254.169.254", 50000) is None


def test_a_lease_under_a_neighbours_mac_is_not_the_neighbour(proc):
    """A lease's MAC is the chaddr of the guest's DHCP request: a guest (MAC ...:09)
    that releases its address and leases it again under beta's MAC is, by the lease,
    beta. The host's neighbour table has the address at the guest's own MAC (nwfilter
    no-arp-spoofing), so it is nobody; beta itself, at its MAC, still is beta. The
    same for a fixed IP answered from another MAC. Before: beta's documents."""
    lease = {LAB: [{"ipaddr": "10.20.0.160", "mac": "52:54:00:aa:00:02"},
                   {"ipaddr": "10.20.0.150", "mac": "52:54:00:aa:00:02"}]}
    arp = {"10.20.0.160": "52:54:00:aa:00:09", "10.20.0.150": "52:54:00:AA:00:02",
           "10.20.0.10": "52:54:00:aa:00:09"}
    conns = {"h1": FakeConnection({ALPHA: "t-alpha", BETA: "t-beta"}, lease)}
    ids = identifier(FakeStore(lab_vms()), proc, conns)
    assert ids.identify(namespace(arp=arp), "10.20.0.160", 40000) is None
    assert ids.identify(namespace(arp=arp), "10.20.0.150", 40000).row["name"] == "beta"
    assert ids.identify(namespace(arp=arp), "10.20.0.10", 40000) is None  # alpha's IP
