"""What keeps the controller's idle cost flat in the number of VMs (issue 17,
`make scale`): the full resync's period grows with its cost while the VMs seen
lately and those waiting for a restart are still compared every RESYNC_SECONDS,
and the loop's frequent questions (the prober's running VMs, the console
mirroring's per host) are answered from an index, not by reading every row."""
from __future__ import annotations

import gc

from tests.unit.appliance.controller.controller_harness import settle

from appliance.controller import loop


def stopped_vms(service, controller, clock, count: int) -> None:
    for i in range(count):
        service.create_vm({"name": f"s{i:03d}", "state": "stopped"})
    settle(controller, clock, passes=2)


def slow_full_passes(controller, seconds: float, cpu_seconds: float = 0.0) -> list[float]:
    """Make every full resync report `seconds`, `cpu_seconds` of them the loop's own CPU
    (as 20,000 VMs would); the times it ran."""
    real = controller.vms.resync
    ran: list[float] = []

    def resync() -> None:
        real()
        controller.vms.reconcile_seconds = seconds
        controller.vms.reconcile_cpu_seconds = cpu_seconds
        ran.append(controller.ctx.clock())

    controller.vms.resync = resync
    return ran


def fake_domain(cloud, vm_id: str):
    with cloud.lock:
        return next(h.domains[vm_id] for h in cloud.hosts.values() if vm_id in h.domains)


def test_a_costly_full_resync_runs_less_often_and_recent_vms_are_still_compared(
        service, controller, cloud, clock):
    stopped_vms(service, controller, clock, 3)
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    ran = slow_full_passes(controller, 1.0)  # period: 1.0 / RESYNC_DUTY = 50 s
    clock.advance(5.0)
    controller.tick()
    assert len(ran) == 1
    for _ in range(5):  # 25 s: no full pass
        clock.advance(5.0)
        controller.tick()
    assert len(ran) == 1
    # web1 was observed lately (its start): a crash nobody reported is seen by the next
    # short pass, and its run strategy restarts it, without waiting for a full pass
    row = service.store.get_vm_by_id(vm["id"])
    fake_domain(cloud, row["id"]).state, fake_domain(cloud, row["id"]).reason = "stopped", "crashed"
    clock.advance(5.0)
    controller.tick()
    assert len(ran) == 1
    assert [o["kind"] for o in service.list_operations(vm="web1")][:1] == ["start"]
    assert service.store.get_vm_by_id(vm["id"])["observed_state"] in ("stopped", "running")
    clock.advance(loop.RESYNC_SECONDS * 10)
    controller.tick()
    assert len(ran) == 2


def test_a_vm_not_seen_lately_waits_for_the_full_pass(service, controller, cloud, clock):
    """The short passes cover the recent VMs only: an old stopped VM whose domain
    was started behind the controller's back is found by the next full pass."""
    stopped_vms(service, controller, clock, 2)
    ran = slow_full_passes(controller, 1.0)
    clock.advance(5.0)
    controller.tick()
    clock.advance(loop.RESYNC_SECONDS * 30)  # s000 is no longer recent
    controller.tick()
    assert len(ran) == 2
    row = service.store.get_vm("s000")
    fake_domain(cloud, row["id"]).state = "running"

    def stops() -> list[dict]:
        return [o for o in service.list_operations(vm="s000") if o["kind"] == "stop"]

    clock.advance(5.0)
    controller.tick()
    assert stops() == []  # not looked at yet
    clock.advance(50.0)
    controller.tick()
    assert len(ran) == 3
    assert len(stops()) == 1  # seen running, stopped again as its desired state says
    assert fake_domain(cloud, row["id"]).state == "stopped"


def test_a_cheap_full_resync_keeps_its_period(service, controller, clock):
    stopped_vms(service, controller, clock, 2)
    ran = slow_full_passes(controller, 0.01)
    for _ in range(4):
        clock.advance(loop.RESYNC_SECONDS)
        controller.tick()
    assert len(ran) == 4


def full_passes_over(controller, clock, seconds: float) -> None:
    for _ in range(int(seconds / loop.RESYNC_SECONDS)):
        clock.advance(loop.RESYNC_SECONDS)
        controller.tick()


def test_a_full_resync_takes_a_bounded_share_of_a_core(service, controller, clock):
    """0.25 s of CPU a pass (as ~15,000 VMs here): one pass per 50 s, RESYNC_CPU_BUDGET
    (0.5 %) of a core, although its wall time alone would allow one per 12.5 s."""
    stopped_vms(service, controller, clock, 2)
    ran = slow_full_passes(controller, 0.25, cpu_seconds=0.25)
    full_passes_over(controller, clock, 5.0)
    assert len(ran) == 1
    full_passes_over(controller, clock, 45.0)
    assert len(ran) == 1
    full_passes_over(controller, clock, 5.0)
    assert len(ran) == 2
    assert ran[1] - ran[0] == 0.25 / loop.RESYNC_CPU_BUDGET


def test_the_full_resync_period_has_a_ceiling(service, controller, clock):
    """However long a pass takes, the next one comes within RESYNC_MAX_SECONDS: what only
    a full pass notices (a change libvirt sent no event for) waits at most that long."""
    stopped_vms(service, controller, clock, 2)
    ran = slow_full_passes(controller, 60.0, cpu_seconds=30.0)
    full_passes_over(controller, clock, 5.0 + loop.RESYNC_MAX_SECONDS)
    assert len(ran) == 2
    assert ran[1] - ran[0] == loop.RESYNC_MAX_SECONDS


def test_the_full_resync_runs_with_the_cyclic_collector_paused(service, controller, clock):
    """Its rows and listings are no cyclic garbage; the collector's passes over the
    whole process were ~30 % of a pass at 40,000 VMs. It is back on afterwards."""
    stopped_vms(service, controller, clock, 2)
    real, seen = controller.vms._resync, []

    def resync() -> None:
        seen.append(gc.isenabled())
        real()

    controller.vms._resync = resync
    assert gc.isenabled()
    controller.vms.resync()
    assert seen == [False]
    assert gc.isenabled()
    assert controller.vms.reconcile_cpu_seconds > 0


def full_scans_of_vms(store, statements: list[str]) -> list[str]:
    scans = []
    for sql in statements:
        if not sql.lstrip().upper().startswith("SELECT") or " vms" not in sql:
            continue
        plan = store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        if any(str(step[-1]).startswith("SCAN v") and "vms" in str(step[-1]) or str(step[-1]) == "SCAN vms"
               for step in plan):
            scans.append(sql)
    return scans


def test_an_idle_pass_between_full_resyncs_reads_no_whole_vms_table(service, controller, cloud, clock):
    """The prober, the cluster CPU check and the console mirroring (on both hosts, whose
    storage is their own) find the running VMs through idx_vms_observed_state_host."""
    stopped_vms(service, controller, clock, 5)
    service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    slow_full_passes(controller, 1.0)
    clock.advance(5.0)
    controller.tick()  # a full pass, then 50 s without one
    controller.backup_schedule._next = clock() + 3600  # its own 30 s period, not this test's
    clock.advance(loop.RESYNC_SECONDS * 30)  # nothing recent any more
    controller.tick()
    seen: list[str] = []
    conn = service.store.db.conn
    conn.set_trace_callback(seen.append)
    try:
        clock.advance(5.0)
        controller.tick()
    finally:
        conn.set_trace_callback(None)
    assert any("observed_state IN" in s for s in seen), seen  # the prober asked
    assert full_scans_of_vms(service.store, seen) == []


def test_the_recent_vms_are_forgotten_even_when_only_full_passes_run(service, controller, clock):
    stopped_vms(service, controller, clock, 3)
    assert controller.vms._recent_ids()  # observed by their creates
    for _ in range(30):  # 150 s of 5 s full passes (cheap: no short pass between them)
        clock.advance(loop.RESYNC_SECONDS)
        controller.tick()
    assert controller.vms._recent == {}


def test_many_recent_vms_on_a_host_are_compared_from_one_listing(service, controller, cloud, clock):
    """After a burst of creates every new VM is recent: the short pass lists their host
    once instead of a look-up per VM (1,000 of them every 5 s took ~8 % of a core), and
    still sees what a look-up would (a VM whose domain crashed is restarted)."""
    from appliance.controller.vms import RECENT_LOOKUPS

    hosts = controller.ctx.links.all()
    stopped_vms(service, controller, clock, (RECENT_LOOKUPS + 4) * len(hosts) * 2)
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    slow_full_passes(controller, 1.0)  # the full pass far off: short passes only
    clock.advance(5.0)
    controller.tick()
    calls = {"lookup": 0, "list_ours": 0}

    def counted(kind, real):
        def call(*args, **kwargs):
            calls[kind] += 1
            return real(*args, **kwargs)
        return call

    for link in hosts:
        link.lookup = counted("lookup", link.lookup)
        link.driver.list_ours = counted("list_ours", link.driver.list_ours)
    row = service.store.get_vm_by_id(vm["id"])
    fake_domain(cloud, row["id"]).state, fake_domain(cloud, row["id"]).reason = "stopped", "crashed"
    clock.advance(loop.RESYNC_SECONDS)
    assert controller.vms.resync_recent() > RECENT_LOOKUPS
    per_host: dict[str, int] = {}
    for row in service.store.list_vms(with_xml=False):
        per_host[row["host"]] = per_host.get(row["host"], 0) + 1
    many = [h for h, n in per_host.items() if n > RECENT_LOOKUPS]
    assert many, per_host  # placement spreads them, but not evenly to the VM
    few = sum(n for h, n in per_host.items() if n <= RECENT_LOOKUPS)
    assert calls == {"lookup": few, "list_ours": len(many)}, (calls, per_host)
    assert any(o["kind"] == "start" for o in service.list_operations(vm="web1"))


def test_a_waiting_copy_brings_the_next_full_pass_sooner_but_not_back_to_back(
        service, controller, clock):
    """A copy left for a busy VM asks for an early full pass, but never back to back: one
    that takes 2 s waits 2 s / RESYNC_SOON_SHARE (security review, session 12: a live
    migration's incoming domain, hours long at 1 MiB/s, made every pass 5 s apart)."""
    stopped_vms(service, controller, clock, 2)
    ran = slow_full_passes(controller, 2.0)
    real = controller.vms.resync

    def resync() -> None:
        real()
        controller.vms.copies_waiting = 1

    controller.vms.resync = resync
    full_passes_over(controller, clock, 5.0)
    assert len(ran) == 1
    full_passes_over(controller, clock, 5.0)
    assert len(ran) == 1  # not 5 s after a 2 s pass
    full_passes_over(controller, clock, 5.0)
    assert len(ran) == 2  # 2.0 / RESYNC_SOON_SHARE = 10 s, not 2.0 / RESYNC_DUTY = 100 s


def test_a_live_migration_s_incoming_copy_is_no_waiting_copy(service, controller, cloud, clock):
    """The target's domain of a live migration under way is expected there: it does not
    bring full passes in every 5 s for as long as the migration lasts."""
    vm, _op = service.create_vm({"name": "web1", "state": "stopped"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    target = next(uri for uri, h in cloud.hosts.items() if vm["id"] not in h.domains)
    assert row["host"] != target
    with cloud.lock:
        cloud.hosts[target].domains[vm["id"]] = fake_domain(cloud, vm["id"])
    assert controller.ctx.busy.claim(vm["id"])
    try:
        controller.vms.resync()
        assert controller.vms.copies_waiting == 1  # busy, not migrating: a copy that waits
        controller.ctx.migrating.add(vm["id"])
        controller.vms.resync()
        assert controller.vms.copies_waiting == 0
    finally:
        controller.ctx.migrating.discard(vm["id"])
        controller.ctx.busy.release(vm["id"])
