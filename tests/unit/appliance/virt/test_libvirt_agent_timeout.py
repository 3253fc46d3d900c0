"""libvirt_backups' freeze and thaw bound libvirt's wait for the guest agent's answer
(libvirt waits forever by default): the domain's agent response timeout is set before
the first of them in each run of the domain, not before every one (libvirt writes the
domain's status file for it), and a driver without the call freezes all the same."""
from __future__ import annotations

import libvirt
import pytest

from appliance.virt import libvirt_backups


class Dom:
    def __init__(self, uuid: str, run: int, supported: bool = True):
        self.uuid, self.run, self.supported = uuid, run, supported
        self.calls: list[tuple] = []

    def connect(self):
        return CONN

    def UUIDString(self):  # noqa: N802 - libvirt's names
        return self.uuid

    def ID(self):  # noqa: N802
        return self.run

    def agentSetResponseTimeout(self, seconds, flags):  # noqa: N802
        self.calls.append(("timeout", seconds))
        if not self.supported:
            err = libvirt.libvirtError("this function is not supported by the connection driver")
            err.err = (libvirt.VIR_ERR_NO_SUPPORT, 0, "", 0, "", None, None, 0, 0)
            raise err

    def fsFreeze(self, mountpoints, flags):  # noqa: N802
        self.calls.append(("freeze",))
        return 1

    def fsThaw(self, mountpoints, flags):  # noqa: N802
        self.calls.append(("thaw",))
        return 1


CONN = object()


@pytest.fixture(autouse=True)
def _forget():
    libvirt_backups._bounded.clear()
    yield
    libvirt_backups._bounded.clear()


def test_the_timeout_is_set_once_per_run_of_the_domain():
    dom = Dom("u1", 7)
    assert libvirt_backups.fs_freeze(dom) == 1
    libvirt_backups.fs_thaw(dom)
    libvirt_backups.fs_freeze(Dom("u1", 7))  # another handle on the same run
    assert dom.calls == [("timeout", libvirt_backups.AGENT_RESPONSE_SECONDS), ("freeze",),
                         ("thaw",)]
    restarted = Dom("u1", 8)  # the domain was started again: a new run
    libvirt_backups.fs_freeze(restarted)
    assert restarted.calls == [("timeout", libvirt_backups.AGENT_RESPONSE_SECONDS), ("freeze",)]


def test_a_handle_without_a_run_id_sets_it_every_time():
    dom = Dom("u2", -1)
    libvirt_backups.fs_freeze(dom)
    libvirt_backups.fs_thaw(dom)
    assert [c[0] for c in dom.calls] == ["timeout", "freeze", "timeout", "thaw"]


def test_a_driver_without_the_call_freezes_all_the_same():
    dom = Dom("u3", 3, supported=False)
    assert libvirt_backups.fs_freeze(dom) == 1
    assert [c[0] for c in dom.calls] == ["timeout", "freeze"]
