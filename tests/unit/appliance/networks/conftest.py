"""What the networks' tests share: libvirt's test driver, with the networks the appliance
defined there (named vmapp.PROJECT.NAME) removed after each test."""
from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest


def remove_appliance_networks(conn: libvirt.virConnect) -> None:
    for net in conn.listAllNetworks():
        if net.name().startswith("vmapp."):
            if net.isActive():
                net.destroy()
            net.undefine()


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """A connection to test:///default; the appliance's networks there are gone after the test."""
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        remove_appliance_networks(conn)
        conn.close()
