"""Remote hosts for real (issue 16): qemu+ssh through Debian's sshd and qemu+tls
through libvirtd's TLS listener, each reaching private libvirtds of
packaging/local-hosts, with the credentials the appliance makes itself.

- ssh: `vmctl host ssh-key` makes and shows the appliance's key; a private sshd
  on 127.0.0.1 (tests/sshd_process.py) authorizes it; `vmctl host add` of two
  hosts through it records the server's key on first use and shows its
  fingerprint; heartbeat, placement, the serial console through the broker and
  a live migration (peer to peer: the source libvirtd dials the target over the
  same ssh transport) and the evacuation of a dead host all run over ssh; then the sshd comes back with another
  host key, and both a new add and libvirt itself refuse it.
- tls: `vmctl host trust` writes a server certificate from the appliance's CA,
  `local-hosts tls` opens the listener with it; the hosts are added as
  qemu+tls://127.0.0.1:PORT/system (a pkipath= from the user is refused), and
  heartbeat, placement, the console, a live migration between them and an
  evacuation run over TLS; a client
  with another CA's certificate is refused by the host.

Each test has its own appliance, whose first host ("local") is a third private
libvirtd over its unix socket. The sshd and the libvirtds are stopped by pid.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from appliance.config import Config
from appliance.consoles import client
from appliance.host_access import connection_uri
from tests.appliance_process import READY_LINE, ROOT, Appliance, free_port, remove_prefixed_domains, wait_for
from tests.local_hosts import SCRIPT, LocalHost
from tests.sshd_process import Sshd

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_SECONDS = 180  # TCG, next to other suites


@pytest.fixture(scope="module")
def lhosts():
    with LocalHost() as zero, LocalHost() as one, LocalHost() as two:
        yield zero, one, two


def vmctl(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def socket_of(host: LocalHost) -> str:
    return str(host.base / "run" / "libvirt-sock")


@pytest.fixture
def app(tmp_path, lhosts):
    home = tmp_path / "home"
    home.mkdir()
    Config(home=home, evacuate_after=5.0).save()
    appliance = Appliance(home, libvirt_uri=lhosts[0].uri)
    try:
        appliance.start()
        yield appliance
    finally:
        appliance.cleanup()
        for host in lhosts:
            remove_prefixed_domains(appliance.prefix, host.uri)


def domain_hosts(lhosts, vm_id: str, defined: bool = False) -> list[int]:
    """Indexes of the private libvirtds (that answer) where the VM's domain is active
    (or, with `defined`, defined at all), from libvirt."""
    found = []
    for index, host in enumerate(lhosts):
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError:
            continue  # a dead host shows nothing
        try:
            dom = conn.lookupByUUIDString(vm_id)
            if defined or dom.isActive():
                found.append(index)
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
    return found


def heartbeats(app: Appliance, name: str) -> None:
    """The host is up and its heartbeat moves on."""
    first = wait_for(f"{name} up", lambda: (lambda h: h if h["up"] else None)(
        app.api("GET", f"/v1/hosts/{name}").json()), 30)
    wait_for(f"{name} heartbeat", lambda: app.api("GET", f"/v1/hosts/{name}").json()["last_seen"]
             > first["last_seen"], 30)


def runs_and_migrates(app: Appliance, lhosts, name: str, source: str, target: str,
                      on: tuple[int, int], logins=None) -> None:
    """A running VM placed on `source` boots there, answers on its console through
    the broker, migrates live to `target` and keeps running (no second boot).
    logins: counts the sshd's logins, which the migration adds one to (the source
    libvirtd dialling the target, peer to peer)."""
    vm = app.create_vm(name, host=source, memory="128M")
    assert vm["host"] == source and domain_hosts(lhosts, vm["id"]) == [on[0]]
    app.wait_console(name, READY_LINE, BOOT_SECONDS)

    async def console() -> None:
        reader, writer = await client.open_console(app.home / "run" / "consoles.sock", vm["id"],
                                                    write=True)
        writer.write(b"echo $((6*7))-$(hostname)\n")
        data, deadline = b"", time.monotonic() + 60
        while f"42-{name}".encode() not in data:
            data += await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
        writer.close()
    asyncio.run(asyncio.wait_for(console(), 90))

    before = logins() if logins else 0
    resp = app.api("PUT", f"/v1/vms/{name}/host", json={"host": target})
    assert resp.status_code == 200, resp.text
    if logins:
        assert logins() > before
    after = app.api("GET", f"/v1/vms/{name}").json()
    assert after["host"] == target and after["state"] == "running", after
    assert domain_hosts(lhosts, vm["id"]) == [on[1]]
    assert app.console(name).count("vm-appliance demo guest: booted") == 1


def evacuates(app: Appliance, lhosts, name: str, dead: tuple[str, int],
              alive: tuple[str, int]) -> None:
    """The host a VM runs on dies (its libvirtd and the guest killed, as in a power
    loss): the VM is restarted on the other host over the same transport (the
    appliance's own host disabled, so it is the only choice); when the dead host
    comes back, the stale copy there is removed."""
    vm = app.api("GET", f"/v1/vms/{name}").json()
    assert vm["host"] == dead[0]
    patched = app.api("PATCH", "/v1/hosts/local", json={"state": "disabled"})
    assert patched.status_code == 200, patched.text
    host = lhosts[dead[1]]
    qemu = host.qemu_pid(app.prefix + name)
    host.kill_libvirtd()
    host.kill_pid(qemu)
    wait_for(f"{dead[0]} down", lambda: not app.api("GET", f"/v1/hosts/{dead[0]}").json()["up"], 30)
    wait_for(f"{name} evacuated", lambda: (lambda v: v["host"] == alive[0] and v["state"] == "running")(
        app.api("GET", f"/v1/vms/{name}").json()), BOOT_SECONDS)
    wait_for("second boot", lambda: app.console(name).count(READY_LINE) == 2, BOOT_SECONDS)
    assert domain_hosts(lhosts, vm["id"]) == [alive[1]]
    host.start_libvirtd()
    wait_for("stale copy removed", lambda: domain_hosts(lhosts, vm["id"], defined=True) == [alive[1]],
             60)


def test_ssh_hosts_with_the_appliance_s_key_and_known_hosts(app, lhosts, tmp_path):
    home = app.home
    shown = vmctl(home, "host", "ssh-key")
    assert shown.returncode == 0, shown.stderr
    public = shown.stdout.strip()
    assert public.startswith("ssh-ed25519 ") and public.endswith(" vm-appliance")
    key = home / "ssh" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    assert vmctl(home, "host", "ssh-key").stdout.strip() == public  # made once

    port = free_port()
    sshd = Sshd(tmp_path / "sshd", port, public)
    with sshd:
        uris = {name: f"qemu+ssh://root@127.0.0.1:{port}/system?socket={socket_of(host)}"
                for name, host in (("s1", lhosts[1]), ("s2", lhosts[2]))}
        first = vmctl(home, "host", "add", "s1", uris["s1"], "--migration-address", "127.0.0.1")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith(f"s1: added ({uris['s1']}), enabled\n"), first.stdout
        assert "recorded now (trust on first use)" in first.stdout
        assert f"ssh-ed25519 {sshd.fingerprint()}" in first.stdout and public in first.stdout
        known = (home / "ssh" / "known_hosts").read_text()
        assert known.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
        second = vmctl(home, "host", "add", "s2", uris["s2"], "--migration-address", "127.0.0.1")
        assert second.returncode == 0, second.stderr
        assert "enabled" in second.stdout.splitlines()[0], second.stdout
        assert "matches the recorded key" in second.stdout
        assert (home / "ssh" / "known_hosts").read_text() == known  # nothing added
        # Each is its own libvirtd at the far end of the same sshd.
        info = {n: app.api("GET", f"/v1/hosts/{n}").json() for n in ("s1", "s2")}
        assert info["s1"]["up"] and info["s2"]["up"]
        heartbeats(app, "s1")
        runs_and_migrates(app, lhosts, "sshvm", "s1", "s2", on=(1, 2),
                          logins=lambda: sshd.log_text(100_000).count("Accepted publickey for root"))
        evacuates(app, lhosts, "sshvm", dead=("s2", 2), alive=("s1", 1))
        assert vmctl(home, "delete", "sshvm", "--force").returncode == 0

    # The same address answers with another host key: refused, by the add and by libvirt.
    sshd.new_host_key()
    with sshd:
        other = f"qemu+ssh://root@127.0.0.1:{port}/system?socket={socket_of(lhosts[0])}"
        changed = vmctl(home, "host", "add", "s3", other)
        assert changed.returncode == 1, changed.stdout
        assert "ssh host key of [127.0.0.1]:" in changed.stderr and "changed" in changed.stderr
        assert sshd.fingerprint() in changed.stderr
        with pytest.raises(libvirt.libvirtError, match="(?i)host key"):
            libvirt.open(connection_uri(uris["s1"], Config.load(home)))
        wait_for("s1 down", lambda: not app.api("GET", "/v1/hosts/s1").json()["up"], 60)


def test_tls_hosts_with_the_appliance_s_ca(app, lhosts, tmp_path):
    home = app.home
    certs = tmp_path / "server-pki"
    made = vmctl(home, "host", "trust", "127.0.0.1", "localhost", "--out", str(certs))
    assert made.returncode == 0, made.stderr
    assert (certs / "serverkey.pem").stat().st_mode & 0o777 == 0o600
    assert (home / "pki" / "clientkey.pem").stat().st_mode & 0o777 == 0o600
    ports = {}
    for name, host in (("t1", lhosts[1]), ("t2", lhosts[2])):
        ports[name] = free_port()
        out = subprocess.run([str(SCRIPT), "tls", host.name, str(ports[name]), str(certs)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{host.name} qemu+tls://127.0.0.1:{ports[name]}/system\n"

    # pkipath= is the appliance's to set
    own = app.api("POST", "/v1/hosts", json={
        "name": "bad", "uri": f"qemu+tls://127.0.0.1:{ports['t1']}/system?pkipath=/tmp"})
    assert own.status_code == 422 and "pkipath" in own.text, own.text
    for name in ("t1", "t2"):
        uri = f"qemu+tls://127.0.0.1:{ports[name]}/system"
        added = vmctl(home, "host", "add", name, uri, "--migration-address", "127.0.0.1")
        assert added.returncode == 0, added.stderr
        assert added.stdout == f"{name}: added ({uri}), enabled\n", added.stdout
    heartbeats(app, "t1")
    assert json.loads(vmctl(home, "--json", "host", "show", "t2").stdout)["up"]

    # Another appliance's CA is not this host's: its client certificate is refused.
    stranger = tmp_path / "stranger"
    assert vmctl(stranger, "host", "trust", "127.0.0.1", "--out", str(tmp_path / "x")).returncode == 0
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(connection_uri(f"qemu+tls://127.0.0.1:{ports['t1']}/system",
                                    Config(home=stranger)))
    runs_and_migrates(app, lhosts, "tlsvm", "t1", "t2", on=(1, 2))
    evacuates(app, lhosts, "tlsvm", dead=("t2", 2), alive=("t1", 1))
