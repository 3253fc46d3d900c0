"""A backup's quiesce on the fake hypervisor: the guest's file systems frozen
through its agent around backupBegin and thawed after, and, when they are not
(no agent, the agent failed or froze nothing, a stopped VM), a crash-consistent
backup all the same, recorded quiesced false with an event saying why. The real
guest agent is tested in tests/integration/test_guest_agent.py."""
from __future__ import annotations

import json
from pathlib import Path

from appliance.controller import quiesce
from appliance.virt.driver import DriverError
from appliance.virt.fake import FakeGuest
from tests.unit.appliance.controller.backup_harness import HOSTS, back_up, events
from tests.unit.appliance.controller.controller_harness import settle


def calls_of(cloud, row, since: int = 0) -> list[str]:
    calls = cloud.host(HOSTS[row["host"]]).calls[since:]
    return [c.split()[0] for c in calls if row["id"] in c]


def manifest(backup: dict) -> dict:
    return json.loads((Path(backup["path"]) / "manifest.json").read_text())


def test_with_an_agent_the_checkpoint_is_taken_frozen_then_thawed(service, controller, cloud, vm):
    cloud.guest_agents.add(vm["id"])
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert backup["quiesced"] is True and manifest(backup)["quiesced"] is True
    mine = calls_of(cloud, vm)
    assert mine.index("fs-freeze") < mine.index("backup-begin") < mine.index("fs-thaw")
    assert not events(service, "backup-not-quiesced")
    assert "crash-consistent" not in events(service, "backup-finished")[0]


def test_without_an_agent_it_is_crash_consistent_and_says_why(service, controller, cloud, clock,
                                                             vm):
    clock.now += quiesce.RECENT_START_SECONDS + 1  # started long ago: its agent is not coming
    began = clock()
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["status"] == "good"
    assert backup["quiesced"] is False and manifest(backup)["quiesced"] is False
    assert calls_of(cloud, vm).count("fs-freeze") == 1 and clock() - began < 1  # no wait
    assert "fs-thaw" not in calls_of(cloud, vm)  # nothing froze
    [why] = events(service, "backup-not-quiesced")
    assert why == (f"backup {backup['id']} is crash-consistent: the guest agent did not freeze "
                   "its file systems: guest agent is not responding: QEMU guest agent is not "
                   "connected")
    assert "QEMU guest agent is not connected" in events(service, "backup-finished")[0]


def test_right_after_a_start_the_agent_is_waited_for_then_frozen(service, controller, cloud,
                                                                 clock, vm):
    """Its channel not connected yet: the channel is polled until the agent connects
    (here 3 s on), then the freeze is asked again, before backupBegin."""
    connects_at = clock() + 3

    def agent_comes() -> None:
        if clock() >= connects_at:
            cloud.guest_agents.add(vm["id"])
    clock.on_sleep.append(agent_comes)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["quiesced"] is True
    mine = calls_of(cloud, vm)
    assert mine.count("fs-freeze") == 2
    assert mine.index("fs-freeze") < mine.index("backup-begin") < mine.index("fs-thaw")
    assert [c for c in mine if c.startswith("fs-")] == ["fs-freeze", "fs-freeze", "fs-thaw"]
    assert connects_at <= backup["finished"] < connects_at + 2 * quiesce.AGENT_POLL_SECONDS + 1
    assert not events(service, "backup-not-quiesced")


def test_an_agent_that_does_not_come_is_waited_for_within_a_bound(service, controller, cloud,
                                                                  clock, vm):
    began = clock()
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["status"] == "good"
    assert backup["quiesced"] is False
    assert quiesce.AGENT_WAIT_SECONDS <= clock() - began < quiesce.AGENT_WAIT_SECONDS + 2
    assert calls_of(cloud, vm).count("fs-freeze") == 1  # never connected: not asked again
    [why] = events(service, "backup-not-quiesced")
    assert why == (f"backup {backup['id']} is crash-consistent: file systems not frozen: the "
                   "guest agent is not connected (waited 15 s for it after the VM's start)")


def test_libvirt_still_not_connected_as_the_channel_shows_connected_is_asked_again(
        service, controller, cloud, vm, monkeypatch):
    """libvirt shows the channel connected a moment before it opens the agent's socket."""
    cloud.guest_agents.add(vm["id"])
    real, answers = FakeGuest.fs_freeze, []

    def not_yet(self):
        answers.append(len(answers))
        if len(answers) < 3:
            self._backup_note("fs-freeze")
            raise DriverError("agent", "Guest agent is not responding: QEMU guest agent is "
                              "not connected")
        return real(self)
    monkeypatch.setattr(FakeGuest, "fs_freeze", not_yet)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["quiesced"] is True
    assert calls_of(cloud, vm).count("fs-freeze") == 3


def test_an_agent_that_fails_to_freeze_still_gives_a_backup(service, controller, cloud, vm,
                                                            monkeypatch):
    cloud.guest_agents.add(vm["id"])  # connected, and refusing (its fsfreeze hook, say)

    def refuse(self):
        raise DriverError("agent: failed to freeze /mnt/data: Device or resource busy",
                          "failed to freeze /mnt/data: Device or resource busy")
    monkeypatch.setattr(FakeGuest, "fs_freeze", refuse)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["status"] == "good"
    assert backup["quiesced"] is False
    [why] = events(service, "backup-not-quiesced")
    assert why.endswith("did not freeze its file systems: failed to freeze /mnt/data: "
                        "Device or resource busy")
    assert backup["finished"] - backup["created"] < 1  # its answer: not waited for


def test_an_agent_that_froze_nothing_is_thawed_and_not_quiesced(service, controller, cloud, vm,
                                                               monkeypatch):
    cloud.guest_agents.add(vm["id"])
    monkeypatch.setattr(FakeGuest, "fs_freeze", lambda self: 0)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["quiesced"] is False
    assert "fs-thaw" in calls_of(cloud, vm)  # the agent counts itself frozen all the same
    [why] = events(service, "backup-not-quiesced")
    assert why.endswith("crash-consistent: the guest agent froze no file system")


def test_a_stopped_vm_is_not_frozen(service, controller, cloud, clock, vm):
    cloud.guest_agents.add(vm["id"])
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    before = len(cloud.host(HOSTS[vm["host"]]).calls)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["quiesced"] is False
    assert "fs-freeze" not in calls_of(cloud, vm, before)
    [why] = events(service, "backup-not-quiesced")
    assert why.endswith("the VM was stopped (its disks are as it left them)")


def test_a_failed_thaw_is_the_vm_s_event_and_the_backup_still_good(service, controller, cloud,
                                                                    vm, monkeypatch):
    """The thaw runs beside the job (quiesce.Thaw) and is joined before the backup is
    published: its failure is reported, never lost in its thread."""
    cloud.guest_agents.add(vm["id"])

    def refuse(self):
        raise DriverError("agent: thaw failed", "thaw failed")
    monkeypatch.setattr(FakeGuest, "fs_thaw", refuse)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["status"] == "good"
    assert backup["quiesced"] is True  # the checkpoint was taken frozen
    [why] = events(service, "backup-thaw-failed")
    assert why.endswith("the guest agent did not thaw the file systems: thaw failed")


def test_a_refused_backup_begin_thaws_before_the_error(service, controller, cloud, vm,
                                                       monkeypatch):
    cloud.guest_agents.add(vm["id"])

    def refuse(self, files, incremental, checkpoint):
        raise DriverError("backup refused", "backup refused")
    monkeypatch.setattr(FakeGuest, "backup_begin", refuse)
    op, _ = back_up(service, controller)
    assert op["status"] == "failed"
    mine = calls_of(cloud, vm)
    assert mine.index("fs-freeze") < mine.index("fs-thaw")
