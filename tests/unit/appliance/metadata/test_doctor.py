"""`vmctl doctor` says whether the metadata service serves the machine's own network
namespace (metadata_host_namespace, off by default), so the admin knows why guests of
a host there (qemu:///system) have their seed only."""
from __future__ import annotations

import dataclasses

from appliance.doctor import _metadata_check


def test_doctor_says_the_machines_namespace_is_not_served_and_how_to_serve_it(config):
    default = _metadata_check(config)
    assert default["name"] == "metadata" and default["status"] == "ok"
    assert "this machine's namespace (qemu:///system) are not served" in default["detail"]
    assert "metadata_host_namespace = true" in default["fix"]
    assert "--metadata-host-namespace" in default["fix"]

    on = _metadata_check(dataclasses.replace(config, metadata_host_namespace=True))
    assert "this machine's own included" in on["detail"] and "fix" not in on

    off = _metadata_check(dataclasses.replace(config, metadata_service=False))
    assert off["detail"].startswith("off (--no-metadata)")
