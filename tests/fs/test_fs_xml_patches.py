"""Domain XML patches through the mount (issue 14, part G): an operator's write
of spec.json that adds or drops patches is EACCES with a `refused` event and
changes nothing; the operator's write of another field of a patched VM works and
leaves the patches; root (an admin) sets them."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from appliance.access.principal import SYSTEM, acting_as
from tests.fs.conftest import Mount
from tests.fs.test_fs_identity import EACCES, OPERATOR, VMOPS, refusals, run_as, vmctl

SMBIOS = {"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='host'/>"}


@pytest.fixture
def ops(tmp_path, open_dir) -> Iterator[Mount]:
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    try:
        m.start()
        result = vmctl(m.home, "mount-map", "group", str(VMOPS), "--role", "operator",
                       "--project", "default")
        assert result.returncode == 0, result.stderr
        time.sleep(2.1)  # the mount reads its map again at most every 2 s (fs/identity.py)
        m.mkvm("web1")
        yield m
    finally:
        m.stop()


def spec_of(m: Mount) -> dict:
    with acting_as(SYSTEM):
        return m.service.get_vm("web1")["spec"]


def write_spec(m: Mount, uid: int | None, spec: dict):
    source = m.mnt.parent / "new-spec.json"  # open_dir: every uid reads it
    source.write_text(json.dumps(spec))
    source.chmod(0o644)
    command = f"cat {source} > vms/web1/spec.json"
    if uid is None:
        return m.sh(command)
    return run_as(uid, command, m.mnt, groups=(VMOPS,))


def test_an_operator_cannot_touch_patches_through_the_mount(ops):
    m = ops
    result = write_spec(m, OPERATOR, {**spec_of(m), "xml_patches": [SMBIOS]})
    assert result.returncode != 0 and EACCES in result.stderr, result.stderr
    assert spec_of(m)["xml_patches"] == []
    assert any("vms/web1/spec.json" in r and "xml_patches" in r for r in refusals(m)), refusals(m)

    result = write_spec(m, None, {**spec_of(m), "xml_patches": [SMBIOS]})  # root: an admin
    assert result.returncode == 0, result.stderr
    assert spec_of(m)["xml_patches"] == [SMBIOS]

    result = write_spec(m, OPERATOR, {**spec_of(m), "xml_patches": []})
    assert EACCES in result.stderr and spec_of(m)["xml_patches"] == [SMBIOS]
    result = run_as(OPERATOR, "echo 2 > vms/web1/cpus", m.mnt, groups=(VMOPS,))
    assert result.returncode == 0, result.stderr
    assert (spec_of(m)["cpus"], spec_of(m)["xml_patches"]) == (2, [SMBIOS])
