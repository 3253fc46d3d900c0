"""Exporter fixtures: libvirt's test driver, with domains of our own, cleaned up after."""
from __future__ import annotations

import uuid

import libvirt
import pytest

from tests.appliance_process import remove_domains

DOMAIN_XML = """<domain type='test'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='KiB'>131072</memory><vcpu>1</vcpu>
  <os><type arch='i686'>hvm</type></os>
</domain>"""


@pytest.fixture
def test_conn():
    """test:///default is shared by the connections of one process while one stays open."""
    conn = libvirt.open("test:///default")
    made = []

    def define(name: str, state: str = "running") -> libvirt.virDomain:
        dom = conn.defineXML(DOMAIN_XML.format(name=name, uuid=uuid.uuid4()))
        made.append(dom)
        if state in ("running", "paused"):
            dom.create()
        if state == "paused":
            dom.suspend()
        return dom

    conn.define = define
    try:
        yield conn
    finally:
        remove_domains(made)
        conn.close()
