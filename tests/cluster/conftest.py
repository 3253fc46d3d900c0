"""Cluster fixtures: two real libvirt hosts from packaging/local-hosts and a real
`vmctl serve` that knows both (see tests/cluster_helpers.py).

The hosts live for the module (starting a libvirtd takes a second or two); each
test gets an appliance of its own. Every domain with the test's prefix is
removed from both hosts afterwards, and the hosts are taken down after the
module whatever happens.
"""
from __future__ import annotations

import pytest

from tests.appliance_process import require_demo_image
from tests.cluster_helpers import start_cluster
from tests.local_hosts import LocalHost

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session", autouse=True)
def _demo_image():
    require_demo_image()


@pytest.fixture(scope="module")
def hosts():
    with LocalHost() as one, LocalHost() as two:
        yield one, two


@pytest.fixture
def cluster(tmp_path, hosts):
    cluster = start_cluster(tmp_path, hosts)
    try:
        yield cluster
    finally:
        cluster.app.cleanup()
        cluster.remove_domains()
