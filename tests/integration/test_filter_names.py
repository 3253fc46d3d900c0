"""The orphan network-filter sweep's calls to the real libvirtd (controller/firewall.py
sweep; the sweep itself: tests/unit/appliance/controller/test_controller_firewall.py):
this appliance's filters listed by their prefix only, a filter whose uuid names a
domain found by that domain, a removed one gone. Define only, no boot. The sweep is not
run here: the system libvirtd is shared, and another test's filters are not this
test's to judge."""
from __future__ import annotations

import uuid

import pytest

from appliance.virt import nwfilter_xml
from appliance.virt.libvirt_driver import LibvirtDriver

pytestmark = pytest.mark.integration


def test_filters_are_listed_by_prefix_and_removed(tmp_path) -> None:
    orphan, with_domain = str(uuid.uuid4()), str(uuid.uuid4())
    driver = LibvirtDriver("local", "qemu:///system", lambda *_: None, tmp_path)
    driver.connect()
    conn = driver.conn
    dom = None
    try:
        for vm_id in (orphan, with_domain):
            assert driver.define_filter(nwfilter_xml.filter_xml(vm_id, []))
        dom = conn.defineXML(
            f"<domain type='qemu'><name>vmapp-test-filter-{with_domain[:8]}</name>"
            f"<uuid>{with_domain}</uuid><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>")
        names = driver.filter_names(nwfilter_xml.PREFIX)
        assert {nwfilter_xml.filter_name(orphan), nwfilter_xml.filter_name(with_domain)} <= set(names)
        assert all(n.startswith(nwfilter_xml.PREFIX) for n in names)
        assert "clean-traffic" in [f.name() for f in conn.listAllNWFilters()]  # libvirt's own: not listed
        assert [nwfilter_xml.vm_of(n) for n in names if n.endswith(orphan)] == [orphan]
        assert driver.lookup(orphan) is None and driver.lookup(with_domain) is not None
        driver.remove_filter(nwfilter_xml.filter_name(orphan))
        assert nwfilter_xml.filter_name(orphan) not in driver.filter_names(nwfilter_xml.PREFIX)
        driver.remove_filter(nwfilter_xml.filter_name(orphan))  # gone already: nothing to do
    finally:
        if dom is not None:
            dom.undefine()
        for vm_id in (orphan, with_domain):
            driver.remove_filter(nwfilter_xml.filter_name(vm_id))
        driver.disconnect()
