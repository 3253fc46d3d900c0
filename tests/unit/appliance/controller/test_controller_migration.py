"""Live migration as a task: a re-run after a crash (the earlier job finished,
failed, or is still running), and a cancel that leaves the guest on its source."""
from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import types

from appliance.controller import Controller
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, Inline, settle

HOSTS = {"local": URI_A, "b": URI_B}


def running_vm(service, controller, clock):
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    assert row["observed_state"] == "running"
    return row, row["host"], next(name for name in HOSTS if name != row["host"])


def interrupted_migration(service, row, target):
    """A migrate operation the controller had claimed when it died."""
    op = service.migrate_vm("web1", target)
    service.store.claim_operation(op["id"], 0.0)
    return op


def run_operations(controller):
    controller.operations.dispatch()  # inline: each operation runs to its end here


def migrated_events(service):
    return [e["message"] for e in service.list_events("web1") if e["kind"] == "migrated"]


def test_a_rerun_finds_the_guest_on_the_target_when_the_earlier_job_finished(service, controller, cloud, clock):
    row, home, other = running_vm(service, controller, clock)
    op = interrupted_migration(service, row, other)
    with cloud.lock:  # libvirt finished the migration while the controller was down
        dom = cloud.host(HOSTS[home]).domains.pop(row["id"])
        cloud.host(HOSTS[other]).domains[row["id"]] = dom
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert "the migration finished before the controller" in migrated_events(service)[0]
    assert cloud.where(row["id"]) == [HOSTS[other]]


def test_a_rerun_migrates_again_when_the_earlier_job_failed(service, controller, cloud, clock):
    row, home, other = running_vm(service, controller, clock)
    op = interrupted_migration(service, row, other)  # libvirt abandoned it: the guest is on the source
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert migrated_events(service)[0].startswith(f"live-migrated from {home} to {other}")
    assert cloud.where(row["id"]) == [HOSTS[other]]


def test_a_rerun_waits_for_a_job_still_running_in_libvirt(service, controller, cloud, clock):
    row, home, other = running_vm(service, controller, clock)
    op = interrupted_migration(service, row, other)
    source, target = cloud.host(HOSTS[home]), cloud.host(HOSTS[other])
    with cloud.lock:  # mid-job: active on both ends, the target's copy paused for the incoming migration
        source.domains[row["id"]].job = "migration"
        target.domains[row["id"]] = type(source.domains[row["id"]])(
            row["id"], source.domains[row["id"]].name, "unit-instance", state="paused", reason="migration")
    waited = []

    def libvirt_finishes() -> None:
        waited.append(clock())
        if len(waited) == 3:
            with cloud.lock:
                target.domains[row["id"]].state = "running"
                del source.domains[row["id"]]

    clock.on_sleep.append(libvirt_finishes)
    run_operations(controller)
    assert len(waited) == 3  # it waited for libvirt's outcome, without starting a second migration
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert "found running on the target" in migrated_events(service)[0]
    assert not [c for c in source.calls if c.startswith("migrate")]


def test_cancelling_a_running_migration_aborts_the_job_and_the_guest_stays(service, controller, cloud, clock):
    row, home, other = running_vm(service, controller, clock)
    op = service.migrate_vm("web1", other)
    cloud.hold_migrations = True  # the job runs until it is aborted
    cloud.on_migration_started = lambda: service.cancel_operation(op["id"])  # what DELETE /v1/operations/ID does
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "cancelled" and "stays on" in done["error"]
    assert service.store.get_vm_by_id(row["id"])["host"] == home
    assert cloud.where(row["id"]) == [HOSTS[home]]  # the target's incoming copy is gone
    assert cloud.host(HOSTS[home]).domains[row["id"]].job is None
    assert not migrated_events(service)


def test_progress_polled_after_libvirt_undefined_the_source_is_no_error(service, controller, cloud, clock):
    """libvirt undefines the source domain as the migration ends, before the job's
    call returns: the controller's progress poll in between finds no domain, and
    that is the job's end, not a failure (the race a loaded CI machine hit)."""
    row, home, other = running_vm(service, controller, clock)
    op = service.migrate_vm("web1", other)
    cloud.hold_migrations = True

    def source_undefined() -> None:  # runs in the migrating thread, which then waits for the release
        with cloud.lock:
            cloud.host(HOSTS[home]).domains.pop(row["id"])
        threading.Timer(0.5, cloud.release_migrations).start()  # the poll (every 0.2 s) runs meanwhile

    cloud.on_migration_started = source_undefined
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "succeeded", done["error"]
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert cloud.where(row["id"]) == [HOSTS[other]]


def test_a_stopped_vm_moves_offline_and_leaves_no_copy(service, controller, cloud, clock):
    row, home, other = running_vm(service, controller, clock)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    op = service.migrate_vm("web1", other)
    assert op["kind"] == "move"
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert row["id"] not in cloud.host(HOSTS[home]).domains and row["id"] in cloud.host(HOSTS[other]).domains


def recorded_before_the_crash(service, row, target):
    """A move or migrate operation the controller had claimed, and whose result (the VM
    on the target) it had recorded, when it died: the operation is still running."""
    op = interrupted_migration(service, row, target)
    service.store.update_vm(row["id"], bump=False, host=target)
    return op


def test_a_rerun_of_a_move_recorded_before_the_crash_keeps_the_vms_domain(service, controller, cloud, clock):
    """Found by `make soak` (serve SIGKILLed during a move): the re-run took the target
    for the source, defined the VM there and then undefined it: no domain anywhere."""
    row, home, other = running_vm(service, controller, clock)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    with cloud.lock:  # the first run defined it on the target; the source's copy was not undefined yet
        source = cloud.host(HOSTS[home]).domains[row["id"]]
        cloud.host(HOSTS[other]).domains[row["id"]] = type(source)(row["id"], source.name, "unit-instance")
    op = recorded_before_the_crash(service, row, other)
    assert op["kind"] == "move"
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert cloud.where(row["id"], active_only=False) == [HOSTS[other]]  # defined on the target only


def test_a_rerun_of_a_migration_recorded_before_the_crash_ends_at_once(service, controller, cloud, clock):
    """The same for a live migration: the re-run waited for the guest to leave the
    target for the target, 600 s, and then failed a migration that had succeeded."""
    row, home, other = running_vm(service, controller, clock)
    with cloud.lock:  # libvirt finished the migration, and the controller recorded it, then died
        cloud.host(HOSTS[other]).domains[row["id"]] = cloud.host(HOSTS[home]).domains.pop(row["id"])
    started = clock()
    op = recorded_before_the_crash(service, row, other)
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "succeeded", done["error"]
    assert clock() - started < 5
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert cloud.where(row["id"]) == [HOSTS[other]]


def test_a_migration_whose_target_is_not_connected_yet_waits_for_it(service, controller, cloud, clock):
    """Found by `make soak` (kill-serve with migrations): a migration re-run right after a
    restart, before the controller had connected to its target again, failed with "host
    h2 is unreachable" (a 500 to its caller); only the source was waited for."""
    row, home, other = running_vm(service, controller, clock)
    op = service.migrate_vm("web1", other)  # the store still says the target is up
    cloud.host(HOSTS[other]).up = False  # as after a restart: its link not connected yet
    controller.ctx.links.get(other).driver.disconnect()
    assert not controller.ctx.links.get(other).connected
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "pending"  # not failed: waiting
    cloud.host(HOSTS[other]).up = True
    settle(controller, clock, passes=3)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "succeeded", done["error"]
    assert cloud.where(row["id"]) == [HOSTS[other]]


def test_a_guest_gone_before_its_live_migration_ran_is_a_conflict_not_a_failure(service, controller, cloud,
                                                                                   clock):
    """`make soak` (kill-serve) answered 500 "migrate failed: the VM does not run on local;
    nothing to migrate live": the guest had stopped (there, crashed by a QEMU fault) between
    the request, which saw it running, and the operation. The VM's state changed under the
    request, as when a guest powers itself off: a 409 on `host` (a refusal, nothing changed),
    not a 500, which says the appliance failed."""
    from appliance.errors import Conflict

    row, home, other = running_vm(service, controller, clock)
    op = service.migrate_vm("web1", other)
    with cloud.lock:  # the guest powered itself off before the controller ran the migration
        dom = cloud.host(HOSTS[home]).domains[row["id"]]
        dom.state, dom.reason = "stopped", "shutdown"
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "failed" and done["error_field"] == "host", done
    assert "nothing to migrate live" in done["error"]
    try:
        service.finish(done, timeout=0)
    except Conflict as err:
        assert err.field == "host"
    else:
        raise AssertionError("a refused migration must be a Conflict (409)")
    assert service.store.get_vm_by_id(row["id"])["host"] == home  # nothing moved
    assert cloud.where(row["id"], active_only=False) == [HOSTS[home]]


def test_a_migration_refused_for_an_earlier_job_libvirt_still_holds_is_asked_again(
        service, controller, cloud, clock, monkeypatch):
    """`make soak` (kill-serve, 200 kills): a 500 "migrate failed: Requested operation is not
    valid: another migration job is already running for domain ...". serve was SIGKILLed in
    the middle of a live migration; its re-run found no job in jobInfo (libvirt was cancelling
    the job of the closed connection) and asked again while libvirt still held the domain.
    Nothing was done by that refusal: the migration waits and asks again, and succeeds."""
    from appliance.virt.driver import JobBusy
    from appliance.virt.fake import FakeGuest

    row, home, other = running_vm(service, controller, clock)
    op = interrupted_migration(service, row, other)
    real, refusals = FakeGuest.migrate, []

    def held_by_an_earlier_job(self, request):
        if len(refusals) < 2:
            refusals.append(request)
            raise JobBusy("Requested operation is not valid: another migration job is already "
                          f"running for domain '{row['id']}'")
        return real(self, request)

    monkeypatch.setattr(FakeGuest, "migrate", held_by_an_earlier_job)
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert len(refusals) == 2
    assert done["status"] == "succeeded", done
    assert service.store.get_vm_by_id(row["id"])["host"] == other
    assert cloud.where(row["id"]) == [HOSTS[other]]


def test_libvirts_refusal_for_another_migration_job_is_a_job_busy():
    import libvirt

    from appliance.virt.driver import DomainGone, JobBusy
    from appliance.virt.libvirt_errors import translate

    def error(code: int, message: str) -> libvirt.libvirtError:
        err = libvirt.libvirtError(message)
        err.err = (code, 0, message, 2, "", None, None, 0, 0)
        return err

    busy = error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: another "
                 "migration job is already running for domain 'x'")
    assert type(translate(busy)) is JobBusy
    other = error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: domain is "
                  "not running")
    assert type(translate(other)) is not JobBusy
    assert type(translate(error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found"))) is DomainGone


class HeldConnects(concurrent.futures.Executor):
    """A connector whose connects finish when the test says (the order hosts answer in
    just after a start)."""

    def __init__(self) -> None:
        self.held: list = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        self.held.append((fn, args))
        return concurrent.futures.Future()

    def finish(self, name: str) -> None:
        fn, args = next(item for item in self.held if item[1][0].name == name)
        self.held.remove((fn, args))
        fn(*args)


def restarted(controller, service, cloud, clock, connector):
    controller.stop()
    return Controller(service.store, service.config, "unit-instance", "qemu", drivers=cloud.drivers(),
                      clock=clock, pool=Inline(), connector=connector, monotonic=clock, sleep=clock.sleep)


@contextlib.contextmanager
def a_move_after_a_restart(service, controller, cloud, clock, source_up=True):
    """A stopped VM's move (web1 to the other host), asked of a controller just started
    again whose connects finish when the test says (HeldConnects), one loop pass in."""
    row, home, other = running_vm(service, controller, clock)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    cloud.host(HOSTS[home]).up = source_up
    connector = HeldConnects()
    fresh = restarted(controller, service, cloud, clock, connector)
    try:
        op = service.migrate_vm("web1", other)
        assert op["kind"] == "move"
        settle(fresh, clock, passes=1)
        yield types.SimpleNamespace(row=row, home=home, other=other, op=op, fresh=fresh,
                                    connector=connector)
    finally:
        fresh.stop()


def status(service, move):
    return service.store.get_operation(move.op["id"])["status"]


def test_a_move_waits_for_its_sources_first_connect_after_a_restart(service, controller, cloud, clock):
    """Found by `make soak PART=kill-serve` (kill 105): the new serve ran a move of a
    stopped VM as soon as its target answered, 0.3 s before its source did; the move
    took the source for unreachable and left the VM's definition there (a stale copy
    until resync removed it). A host whose first connect has not finished is unknown,
    not unreachable: what touches it waits for that connect."""
    with a_move_after_a_restart(service, controller, cloud, clock) as move:
        move.connector.finish(move.other)  # the target answers first
        settle(move.fresh, clock, passes=2)
        assert status(service, move) == "pending"
        assert move.row["id"] in cloud.host(HOSTS[move.home]).domains  # nothing done yet
        move.connector.finish(move.home)
        settle(move.fresh, clock, passes=1)
        assert status(service, move) == "succeeded"
        assert cloud.where(move.row["id"], active_only=False) == [HOSTS[move.other]]  # no copy left
        assert not [e for e in service.list_events("web1") if e["kind"] == "stale-copy-removed"]


def test_a_move_off_a_source_known_unreachable_does_not_wait_for_it(service, controller, cloud, clock):
    """The wait is for a first connect only: a source that answered no connect (down)
    does not hold a move of a VM whose disks the target sees (resync removes its copy
    when it is back)."""
    with a_move_after_a_restart(service, controller, cloud, clock, source_up=False) as move:
        move.connector.finish(move.other)
        move.connector.finish(move.home)  # refused: down
        settle(move.fresh, clock, passes=1)
        assert status(service, move) == "succeeded"
        assert service.store.get_vm_by_id(move.row["id"])["host"] == move.other


def test_a_move_does_not_wait_forever_for_a_first_connect_that_hangs(service, controller, cloud,
                                                                      clock):
    """Security review (session 14): the wait for a first connect had no bound. A source
    whose connect never ends (an ssh tunnel to a machine gone dark, a stopped libvirtd:
    the connector's own comment) held a move off it for ever after a restart, where it
    ran before the wait (as off a host known unreachable). The heartbeat counts a connect
    that hangs as down; after FIRST_CONNECT_WAIT of that, the host is unreachable."""
    from appliance.controller.operations import FIRST_CONNECT_WAIT

    with a_move_after_a_restart(service, controller, cloud, clock) as move:
        move.connector.finish(move.other)  # the target answers; the source's connect never ends
        settle(move.fresh, clock, passes=2)
        assert status(service, move) == "pending"  # waits, at first
        settle(move.fresh, clock, passes=int(FIRST_CONNECT_WAIT // 5) + 2)
        assert status(service, move) == "succeeded"
        assert service.store.get_vm_by_id(move.row["id"])["host"] == move.other
