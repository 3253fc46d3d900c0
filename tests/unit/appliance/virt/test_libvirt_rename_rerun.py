"""A rename re-run after the appliance was killed mid-rename: libvirtd finishes the
killed process's rename after the new process looked the domain up (a domain object's
name is its lookup's), and the re-run's own rename met "Can't rename domain to itself":
the update answered 500 (found by `make soak PART=kill-serve`). Now it is done."""
import dataclasses
import uuid

import libvirt
import pytest

from appliance.virt import domain
from appliance.virt.driver import DriverError
from appliance.virt.libvirt_driver import LibvirtDriver
from tests.unit.appliance.virt.test_domain import plan


@pytest.fixture
def driver(tmp_path):
    drv = LibvirtDriver("local", "test:///default", lambda *event: None, tmp_path)
    drv.connect()
    vm_id = str(uuid.uuid4())
    old = plan(tmp_path)
    old.vm_id, old.domain_name = vm_id, f"old-{vm_id[:8]}"
    drv.conn.defineXML(domain.build(old))
    try:
        yield drv, old
    finally:
        for name in (old.domain_name, f"new-{vm_id[:8]}"):
            try:
                drv.conn.lookupByName(name).undefine()
            except libvirt.libvirtError:
                pass
        drv.disconnect()


def looked_up_before_a_rename(drv, vm_id, rename_to):
    """The driver's next lookup answers the domain as looked up before another caller's
    rename to rename_to ended (the lookups after it are fresh)."""
    stale = drv.conn.lookupByUUIDString(vm_id)
    drv.conn.lookupByUUIDString(vm_id).rename(rename_to, 0)
    lookups = iter([stale])
    original = type(drv.lv).lookup
    drv.lv.lookup = lambda vm_id: next(lookups, None) or original(drv.lv, vm_id)


def test_a_rename_another_call_finished_is_done(driver):
    drv, old = driver
    new = dataclasses.replace(old, domain_name=f"new-{old.vm_id[:8]}")
    looked_up_before_a_rename(drv, old.vm_id, new.domain_name)
    guest = drv.define(new)
    assert guest.dom.name() == new.domain_name
    assert drv.conn.lookupByUUIDString(old.vm_id).name() == new.domain_name


def test_a_rename_that_fails_for_another_reason_still_fails(driver):
    drv, old = driver
    new = dataclasses.replace(old, domain_name=f"new-{old.vm_id[:8]}")
    taken = dataclasses.replace(old, vm_id=str(uuid.uuid4()), domain_name=new.domain_name)
    drv.conn.defineXML(domain.build(taken))  # the name is another domain's
    with pytest.raises(DriverError):
        drv.define(new)
    assert drv.conn.lookupByUUIDString(old.vm_id).name() == old.domain_name
