"""The collector paused around large listings (appliance/gcpause.py), and the VM
lists sorted in Python as SQLite's ORDER BY name did (store/vms.py)."""
from __future__ import annotations

import gc
import threading

from appliance.gcpause import collector_paused
from tests.unit.appliance.test_store_queries import add_vm, db  # noqa: F401 - the fixture


def test_nested_and_concurrent_sections_resume_the_collector_once():
    assert gc.isenabled()
    inner_entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inner_entered.set()
            release.wait(10)

    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer section still runs
        t = threading.Thread(target=other)
        t.start()
        assert inner_entered.wait(10)
    assert not gc.isenabled()  # another thread's section still runs
    release.set()
    t.join(10)
    assert gc.isenabled()


def test_a_collector_off_before_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_exception_resumes_it():
    try:
        with collector_paused():
            raise ValueError
    except ValueError:
        pass
    assert gc.isenabled()


def test_vm_lists_keep_sqlites_order_by_name(db):  # noqa: F811 - the fixture
    names = ["b", "a10", "a9", "A", "z-1", "é", "ab", "_x", "ä1", "a"]
    for name in names:  # inserted out of order: a scan alone would not sort them
        add_vm(db, name, host="h1")
    expected = [r[0] for r in db.db.execute("SELECT name FROM vms ORDER BY name")]
    assert [r["name"] for r in db.list_vms(with_xml=False)] == expected
    assert [r["name"] for r in db.vms_on_host("h1")] == expected
