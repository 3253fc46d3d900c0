"""The fake driver's host CPUs (issue 14, part F): each FakeHost has a CPU
definition (`cpu`, custom CPU XML); the baseline of several is their common
model (qemu64 when they differ) with the features all of them require."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.virt.fake import FakeHost

DEFAULT_CPU = ("<cpu mode='custom' match='exact'><model fallback='forbid'>Fake</model>"
               "<vendor>Fake</vendor><feature policy='require' name='sse4.2'/></cpu>")
_MODEL = re.compile(r"<model[^>]*>([^<]+)</model>")
# libvirt's quotes (') and ElementTree's ("): both, as libvirt's parser takes them
_FEATURE = re.compile(r"""<feature policy=['"]require['"] name=['"]([^'"]+)['"] ?/>""")


def fake_cpu(model: str, features: list[str]) -> str:
    parts = "".join(f"<feature policy='require' name='{name}'/>" for name in sorted(features))
    return (f"<cpu mode='custom' match='exact'><model fallback='forbid'>{model}</model>"
            f"{parts}</cpu>")


def _model(cpu: str) -> str:
    found = _MODEL.search(cpu)
    return found.group(1) if found else ""


class FakeCpuMethods:
    def fake_host(self) -> FakeHost:
        raise NotImplementedError

    def cpu_xml(self, virttype: str) -> str | None:
        return self.fake_host().cpu

    def baseline_cpu(self, virttype: str, cpus: list[str]) -> str:
        self.fake_host().calls.append("baseline")
        models = {_model(cpu) for cpu in cpus}
        common = set.intersection(*(set(_FEATURE.findall(cpu)) for cpu in cpus))
        return fake_cpu(models.pop() if len(models) == 1 else "qemu64", sorted(common))

    def cpu_features(self, virttype: str, cpu: str) -> frozenset[str]:
        return frozenset(_FEATURE.findall(cpu))

    def runs_cpu(self, virttype: str, cpu: str) -> bool:
        own = self.fake_host().cpu or ""
        return set(_FEATURE.findall(cpu)) <= set(_FEATURE.findall(own))

    def cpu_inventory(self) -> dict:
        host = self.fake_host()
        return {"hugepages_mib": host.hugepages_mib, "hugepages_free_mib": host.hugepages_mib}
