"""An appliance on a libvirt host in a network namespace of its own (packaging/local-hosts
`up --netns`), started, with an appliance network made on it if asked: the module-scoped
fixtures of the tests whose guest traffic must stay inside that namespace. Both are
cleaned up however the block ends."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.appliance_process import Appliance
from tests.local_hosts import LocalHost


@contextlib.contextmanager
def netns_appliance(home: Path, metadata: bool = False,
                    network: dict | None = None) -> Iterator[tuple[LocalHost, Appliance]]:
    """(host, appliance); `network`: the body of a POST /v1/networks made first."""
    with LocalHost(netns=True) as host:
        app = Appliance(home, libvirt_uri=host.uri, metadata=metadata)
        try:
            app.start()
            if network is not None:
                resp = app.api("POST", "/v1/networks", json=network)
                assert resp.status_code == 201, resp.text
            yield host, app
        finally:
            app.cleanup()
