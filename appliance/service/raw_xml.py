"""Raw libvirt power (issue 14, part G): the rules of a spec's `xml_patches`.

Patches give root's power on the VM's host (QEMU runs as root and a patch can
say anything QEMU's command line can: SECURITY.md), so only an admin may add,
change or remove them, at create and at every change, by REST and by the mount
alike (the mount's spec.json write comes here too: Forbidden is EACCES and a
`refused` event). A change of another field by anyone else leaves them as they
are.

A spec with patches is checked before anything is recorded, so that bad
input is refused (422 naming the patch) and changes nothing: the VM's domain
XML is built as the controller would build it, each patch must select
something, and libvirt checks the result (its schema and its parser, in this
process: virt/xml_patches.libvirt_check). What only the VM's host can judge
(its QEMU's devices and machine types) is judged at the define there: the
operation fails with libvirt's message and the host keeps the previous
definition (README "Raw libvirt power").
"""
from __future__ import annotations

from typing import Any

from appliance.access.principal import caller
from appliance.config import Config
from appliance.errors import Forbidden, Invalid
from appliance.store import Row, Store
from appliance.virt import domain, xml_patches

# A MAC for the check of a VM that has none yet (a create): the XML's shape is the same.
CHECK_MAC = "52:54:00:00:00:00"


def patches_of(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((spec or {}).get("xml_patches") or [])


def admins_only(new: dict[str, Any] | None, old: dict[str, Any] | None,
                field: str = "xml_patches") -> bool:
    """Forbidden unless the caller is an admin, when the patches change; True if
    they do. Also for templates: a patch an operator put in a project template
    would be applied by the admin who creates a VM from it."""
    if patches_of(new) == patches_of(old):
        return False
    principal = caller()
    if not principal.is_admin:
        raise Forbidden(
            f"{principal.user} has the role {principal.role}: only an admin may set "
            "xml_patches (a patch can give QEMU, which runs as root, any argument)", field)
    return True


def check(config: Config, new: dict[str, Any], old: dict[str, Any] | None,
          vm_id: str, mac: str | None) -> bool:
    """Refuse a change of xml_patches by a non-admin (Forbidden) and a spec whose
    patches do not apply or that libvirt refuses (Invalid naming the patch).
    True when the patches change (the caller records the audit event)."""
    patches = patches_of(new)
    changed = admins_only(new, old)
    if patches and (changed or new != old):
        _check_applies(config, new, vm_id, mac or CHECK_MAC)
    return changed


def _check_applies(config: Config, spec: dict[str, Any], vm_id: str, mac: str) -> None:
    vm_dir = config.vm_dir(vm_id)
    plan = domain.DomainPlan(
        vm_id=vm_id, domain_name=config.domain_prefix + spec["name"], vm_name=spec["name"],
        instance_id="check", spec={**spec, "xml_patches": []}, domain_type="qemu",
        vm_dir=vm_dir, mac=mac, seed_iso=vm_dir / "cidata.iso", direct_io=False)
    xml_of = xml_patches.XmlOf(domain.build(plan))
    patches = patches_of(spec)
    try:
        xml_of(patches)
    except xml_patches.PatchError as err:
        raise Invalid(err.detail, err.field) from None
    blamed = xml_patches.blame(xml_of, patches)
    if blamed is not None:
        index, message = blamed
        raise Invalid(f"libvirt refuses the domain XML with this patch: {message}",
                      f"xml_patches[{index}]")


def summary(spec: dict[str, Any]) -> str:
    """What an audit event says of a VM's patches: each op and XPath (the XML is in the spec)."""
    patches = patches_of(spec)
    if not patches:
        return "no domain XML patches"
    shown = "; ".join(f"[{i}] {p['op']} {p['xpath'][:120]}" for i, p in enumerate(patches))
    return f"{len(patches)} domain XML patch(es): {shown}"


def record_change(store: Store, row: Row, spec: dict[str, Any], operation: str | None) -> None:
    """The audit event of a change of a VM's patches (who: the event's actor)."""
    store.add_event("xml-patches", f"domain XML patches changed: {summary(spec)}"[:2000],
                    row, operation)

