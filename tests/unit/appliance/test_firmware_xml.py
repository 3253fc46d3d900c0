"""Firmware, machine, TPM and admin XML patches (issue 14, part G): the spec's
checks, the domain XML they give, the patches' operations, and the service's
rules (admins only, refused input changes nothing, the audit event)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lxml import etree

from appliance.access import Principal, Role, acting_as
from appliance.errors import Forbidden, Invalid
from appliance.model.spec import validate
from appliance.virt import domain, xml_patches

SYSINFO = {"op": "add", "xpath": "/domain", "xml": (
    "<sysinfo type='smbios'><system><entry name='manufacturer'>m</entry></system></sysinfo>")}
SMBIOS = {"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='sysinfo'/>"}
QEMU_ARG = {"op": "add", "xpath": "/domain", "xml": (
    "<qemu:commandline><qemu:arg value='-smbios'/><qemu:arg value='type=3,manufacturer=x'/>"
    "</qemu:commandline>")}
OPERATOR = Principal(user="olga", role=Role.OPERATOR, uid=None, source="token")


def spec(**fields) -> dict:
    return validate({"name": "vm1", "image": "demo", **fields})


def refusal(**fields) -> tuple[str | None, str]:
    with pytest.raises(Invalid) as caught:
        spec(**fields)
    return caught.value.field, caught.value.reason


def build(**fields) -> etree._Element:
    plan = domain.DomainPlan(
        vm_id=str(uuid.uuid4()), domain_name="vm1", vm_name="vm1", instance_id="i",
        spec=spec(**fields), domain_type="qemu", vm_dir=Path("/srv/vms/1"),
        mac="52:54:00:00:00:01", seed_iso=Path("/srv/vms/1/cidata.iso"), direct_io=False)
    return etree.fromstring(domain.build(plan).encode())


# -- the spec ------------------------------------------------------------------------------
def test_defaults_are_bios_q35_no_tpm_no_patches():
    got = spec()
    assert (got["firmware"], got["machine"], got["tpm"], got["xml_patches"]) == (
        "bios", "q35", False, [])


def test_secure_boot_is_refused_on_the_pc_machine_with_the_reason():
    field, reason = refusal(firmware="uefi-secure", machine="pc")
    assert field == "firmware" and "SMM" in reason and "q35" in reason
    assert refusal(firmware="efi") == ("firmware", "must be one of bios, uefi, uefi-secure")
    assert refusal(machine="virt")[0] == "machine"


@pytest.mark.parametrize("patch, field, words", [
    ({"op": "add", "xpath": "/domain", "xml": '<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'},
     "xml_patches[0].xml", "DTDs and entities"),
    ({"op": "add", "xpath": "/domain", "xml": "<a>&ext;</a>"}, "xml_patches[0].xml", "well-formed"),
    ({"op": "add", "xpath": "/domain/[", "xml": "<a/>"}, "xml_patches[0].xpath", "XPath"),
    ({"op": "remove", "xpath": "/domain/a", "xml": "<a/>"}, "xml_patches[0].xml", "no xml"),
    ({"op": "replace", "xpath": "/domain/a"}, "xml_patches[0].xml", "needs the XML"),
    ({"op": "add", "xpath": "/domain", "xml": "just text"}, "xml_patches[0].xml", "text outside"),
    ({"op": "zap", "xpath": "/domain"}, "xml_patches[0].op", "add, replace, remove"),
    ({"op": "add", "xpath": "x" * 513, "xml": "<a/>"}, "xml_patches[0].xpath", "512"),
    ({"op": "add", "xpath": "/domain", "xml": "<a>" + "x" * 16384 + "</a>"},
     "xml_patches[0].xml", "16384"),
])
def test_a_bad_patch_is_refused_naming_its_part(patch, field, words):
    got_field, reason = refusal(xml_patches=[patch])
    assert got_field == field and words in reason, reason


def test_at_most_32_patches():
    assert refusal(xml_patches=[SMBIOS] * 33) == ("xml_patches", "at most 32 patches")
    assert len(spec(xml_patches=[SMBIOS] * 32)["xml_patches"]) == 32


# -- the domain XML ------------------------------------------------------------------------
def test_bios_q35_has_no_firmware_nor_tpm():
    root = build()
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("os").get("firmware") is None and root.find("devices/tpm") is None


def test_uefi_secure_with_a_tpm():
    root = build(firmware="uefi-secure", tpm=True)
    os_el = root.find("os")
    assert os_el.get("firmware") == "efi"
    features = {f.get("name"): f.get("enabled") for f in os_el.findall("firmware/feature")}
    assert features == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert os_el.find("nvram").text == "/srv/vms/1/nvram-uefi-secure.fd"
    # The boot order is per device (<boot order> in the root disk: domain_devices.py).
    assert [c.tag for c in os_el] == ["type", "firmware", "nvram"]
    assert root.find("devices/disk/boot").get("order") == "1"
    assert root.find("features/smm").get("state") == "on"
    tpm = root.find("devices/tpm")
    assert tpm.get("model") == "tpm-crb" and tpm.find("backend").get("type") == "emulator"


def test_plain_uefi_says_no_secure_boot_and_has_its_own_nvram():
    root = build(firmware="uefi")
    assert {f.get("enabled") for f in root.findall("os/firmware/feature")} == {"no"}
    assert root.find("os/nvram").text == "/srv/vms/1/nvram-uefi.fd"
    assert root.find("features/smm") is None


def test_the_pc_machine_puts_the_restricted_nic_on_its_pci_bus():
    root = build(machine="pc", network={"type": "user", "outbound": "none"})
    assert root.find("os/type").get("machine") == "pc"
    args = " ".join(a.get("value") for a in root.iter(f"{{{xml_patches.QEMU_NS}}}arg"))
    assert '"bus": "pci.0"' in args and "pcie.0" not in args


def test_patches_add_replace_remove_and_merge_qemu_commandlines():
    root = build(network={"type": "user", "outbound": "none"}, xml_patches=[
        SYSINFO, SMBIOS, QEMU_ARG,
        {"op": "replace", "xpath": "//video/model", "xml": "<model type='virtio'/>"},
        {"op": "remove", "xpath": "/domain/devices/rng", "xml": None},
        {"op": "remove", "xpath": "//interface/rom/@enabled | //memballoon/stats", "xml": None},
    ])
    assert root.find("sysinfo/system/entry").text == "m"
    assert root.find("os/smbios").get("mode") == "sysinfo"
    assert root.find("devices/video/model").get("type") == "virtio"
    assert root.find("devices/rng") is None and root.find("devices/memballoon/stats") is None
    lines = root.findall(f"{{{xml_patches.QEMU_NS}}}commandline")
    assert len(lines) == 1  # the appliance's (restricted NIC) and the patch's, merged
    values = [a.get("value") for a in lines[0]]
    assert values[:1] == ["-netdev"] and values[-2:] == ["-smbios", "type=3,manufacturer=x"]
    assert xml_patches.libvirt_check(etree.tostring(root, encoding="unicode")) is None


@pytest.mark.parametrize("patch, words", [
    ({"op": "remove", "xpath": "/domain/devices/watchdog", "xml": None}, "selects nothing"),
    ({"op": "remove", "xpath": "/domain/metadata", "xml": None}, "name, uuid or metadata"),
    ({"op": "replace", "xpath": "/domain/uuid", "xml": "<uuid>x</uuid>"}, "name, uuid or metadata"),
    ({"op": "add", "xpath": "//*[local-name()='vm']", "xml": "<x/>"}, "name, uuid or metadata"),
    ({"op": "remove", "xpath": "/domain", "xml": None}, "can only be added to"),
    ({"op": "replace", "xpath": "//disk/@type", "xml": "<x/>"}, "only remove works"),
    ({"op": "remove", "xpath": "/domain/devices/rng/backend/text()", "xml": None}, "selects text"),
])
def test_a_patch_that_cannot_apply_is_named(patch, words):
    with pytest.raises(xml_patches.PatchError) as caught:
        build(xml_patches=[SMBIOS, patch])
    assert caught.value.field.startswith("xml_patches[1].") and words in caught.value.reason


def test_blame_names_the_first_patch_after_which_libvirt_says_what_it_says():
    base = xml_patches.XmlOf(etree.tostring(build(), encoding="unicode"))
    bogus = {"op": "add", "xpath": "/domain/devices", "xml": "<bogus/>"}
    index, message = xml_patches.blame(base, [SYSINFO, SMBIOS, bogus, QEMU_ARG])
    assert index == 2 and "schema" in message
    assert xml_patches.blame(base, [SYSINFO, SMBIOS, QEMU_ARG]) is None


# -- the service ---------------------------------------------------------------------------
def test_only_an_admin_sets_patches_and_anyone_changes_the_rest(service):
    with pytest.raises(Forbidden) as caught, acting_as(OPERATOR):
        service.create_vm({"name": "op1", "xml_patches": [SMBIOS], "state": "stopped"})
    assert caught.value.field == "xml_patches"
    assert not service.store.vm_exists("op1", "default")
    service.create_vm({"name": "vm1", "xml_patches": [SYSINFO, SMBIOS], "state": "stopped"})
    events = [e for e in service.list_events("vm1") if e["kind"] == "xml-patches"]
    assert len(events) == 1 and "2 domain XML patch(es)" in events[0]["message"]
    with acting_as(OPERATOR):
        for change in ({"xml_patches": []}, {"xml_patches": [SYSINFO]}):
            with pytest.raises(Forbidden):
                service.update_vm("vm1", change)
        view, _op = service.update_vm("vm1", {"cpus": 2})
    assert view["spec"]["cpus"] == 2 and view["spec"]["xml_patches"] == [SYSINFO, SMBIOS]
    service.update_vm("vm1", {"xml_patches": []})  # the admin's to drop
    assert len([e for e in service.list_events("vm1") if e["kind"] == "xml-patches"]) == 2


def test_a_patch_that_selects_nothing_or_that_libvirt_refuses_changes_nothing(service):
    service.create_vm({"name": "vm1", "state": "stopped"})
    before = service.get_vm("vm1")
    for patches, field in (
            ([SMBIOS, {"op": "remove", "xpath": "//watchdog", "xml": None}], "xml_patches[1].xpath"),
            ([SMBIOS, {"op": "add", "xpath": "/domain/devices", "xml": "<bogus/>"}],
             "xml_patches[1]")):
        with pytest.raises(Invalid) as caught:
            service.update_vm("vm1", {"xml_patches": patches})
        assert caught.value.field == field
    assert service.get_vm("vm1")["generation"] == before["generation"]
    with pytest.raises(Invalid):
        service.create_vm({"name": "vm2", "xml_patches": [
            {"op": "add", "xpath": "/domain/devices", "xml": "<bogus/>"}]})
    assert not service.store.vm_exists("vm2", "default")
