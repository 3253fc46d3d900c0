"""The soak's second host (issue 17): its kill parts move VMs between two local hosts.

The soak's appliance runs on a private libvirtd from packaging/local-hosts ("local")
and, during the kill parts, knows a second one ("h2"), added over REST as an operator
would, both reached over 127.0.0.1 for migrations (the disks are in the appliance's
home: shared storage). The clients (tests/soak/clients.py) move VMs between them,
live when running and cold when stopped; after each kill `domain_orphans` looks at
both libvirtds: every VM's domain is defined on its host and nowhere else (none left
on a migration's source), active on one host at most (a guest never runs twice), and
no domain of ours is left that no VM accounts for.
"""
from __future__ import annotations

import libvirt

from tests.appliance_process import wait_for
from tests.local_hosts import LocalHost

SECOND = "h2"


def start_hosts() -> tuple[LocalHost, LocalHost]:
    """Two local hosts, up (the first is the appliance's own libvirt)."""
    first = LocalHost().up()
    try:
        return first, LocalHost().up()
    except BaseException:
        first.down()
        raise


def stop_hosts(hosts: tuple[LocalHost, ...]) -> None:
    """Down with them (their running domains destroyed, their folders removed)."""
    for host in hosts:
        try:
            host.down()
        except Exception as err:  # noqa: BLE001 - the other one still goes
            print(f"soak: local host {host.name} down: {err}", flush=True)


def add_second_host(world) -> None:
    """Host h2 into the appliance (once), migrations between the two over 127.0.0.1."""
    if world.second_host is None or SECOND in world.hosts:
        return
    app = world.app
    resp = app.api("PATCH", "/v1/hosts/local", json={"migration_address": "127.0.0.1"}, timeout=60)
    assert resp.status_code == 200, resp.text
    resp = app.api("POST", "/v1/hosts", json={"name": SECOND, "uri": world.second_host.uri,
                                              "migration_address": "127.0.0.1"}, timeout=60)
    assert resp.status_code in (201, 409), resp.text
    wait_for("h2 up", lambda: app.api("GET", f"/v1/hosts/{SECOND}", timeout=30).json().get("up"), 60)
    world.hosts = ["local", SECOND]


def remove_second_host(world) -> None:
    """h2 out of the appliance again (its VMs deleted first), as the parts after the
    kill parts expect one host."""
    if SECOND not in world.hosts:
        return
    world.delete_all_vms()
    resp = world.app.api("DELETE", f"/v1/hosts/{SECOND}", timeout=60)
    assert resp.status_code in (204, 404), resp.text
    world.hosts = ["local"]


def delete_images(world, prefix: str) -> None:
    """The images a kill part's clients uploaded (names starting with prefix)."""
    items = world.app.api("GET", "/v1/images", timeout=30).json()["items"]
    for image in items:
        if image["name"].startswith(prefix):
            world.app.api("DELETE", f"/v1/images/{image['name']}", timeout=60)


def uris(world) -> dict[str, str]:
    found = {"local": world.app.libvirt_uri}
    if SECOND in world.hosts:
        found[SECOND] = world.second_host.uri
    return found


def domains(world) -> dict[str, dict[str, bool]]:
    """host -> {domain name of ours: active}."""
    found: dict[str, dict[str, bool]] = {}
    for host, uri in uris(world).items():
        conn = libvirt.open(uri)
        try:
            found[host] = {d.name(): bool(d.isActive()) for d in conn.listAllDomains()
                           if d.name().startswith(world.app.prefix)}
        finally:
            conn.close()
    return found


def domain_orphans(world, vms: list[dict], names: set[str]) -> dict[str, list[str]]:
    """What the libvirtds hold that the VMs do not account for, or lack."""
    on = domains(world)
    prefix = world.app.prefix
    defined = {name for doms in on.values() for name in doms}
    found = {"domains": sorted(defined - names), "missing domains": [], "domains off their host": [],
             "guests active on two hosts": []}
    for vm in vms:
        name = prefix + vm["name"]
        home = vm.get("host") or "local"
        if name not in on.get(home, {}):
            found["missing domains"].append(f"{name} (on {home})")
        found["domains off their host"] += [f"{name} on {h} (placed on {home})" for h, doms in on.items()
                                            if h != home and name in doms]
        if sum(1 for doms in on.values() if doms.get(name)) > 1:
            found["guests active on two hosts"].append(name)
    return found
