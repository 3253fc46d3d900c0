"""A start, pause or resume that finds the domain in that state already is done, not an
error: after an appliance is killed mid-start its libvirt job goes on, and the start the
next appliance runs again (operations are replayed after a crash) met "domain is already
running" and failed the operation, a 500 to the client (found by `make soak`)."""
import uuid

import libvirt
import pytest

from appliance.virt import domain
from appliance.virt.driver import DriverError
from appliance.virt.libvirt_driver import LibvirtGuest
from tests.unit.appliance.virt.test_domain import plan


@pytest.fixture
def guest(tmp_path):
    conn = libvirt.open("test:///default")
    name = f"already-{uuid.uuid4().hex[:6]}"
    xml = domain.build(plan(tmp_path)).replace("<name>p-web1</name>", f"<name>{name}</name>")
    xml = xml.replace("0f8fad5b-d9cb-469f-a165-70867728950e", str(uuid.uuid4()))
    dom = conn.defineXML(xml)
    try:
        yield LibvirtGuest(None, dom)  # type: ignore[arg-type]  # the driver is not used here
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()


def test_a_second_start_pause_or_resume_is_done(guest):
    guest.start()
    guest.start()  # another start landed first
    assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    guest.suspend()
    guest.suspend()
    assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    guest.resume()
    guest.resume()
    assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_what_the_state_does_not_explain_is_still_an_error(guest):
    with pytest.raises(DriverError):
        guest.resume()  # shut off: not running, so the refusal stands
    with pytest.raises(DriverError):
        guest.suspend()
    assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
