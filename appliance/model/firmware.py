"""A VM's firmware, machine type and virtual TPM, and the domain XML patches
an admin may give it (issue 14, part G): the spec's values and how each is
checked. appliance/virt/firmware.py and appliance/virt/xml_patches.py turn them
into domain XML; appliance/service/raw_xml.py keeps patches to admins.

A patch's `xml` is parsed here with defusedxml (no DTD, no entities: the
appliance runs as root and libvirt would read what it is given), and its
`xpath` is compiled with lxml (real XPath 1.0; ElementTree's subset has no
predicates on values, no unions and no attributes as results). The `qemu:`
prefix is known to both without a declaration.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException
from lxml import etree
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from appliance.model.fields import refused, says

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NAMESPACES = {"qemu": QEMU_NS}
MAX_XML_PATCHES = 32
MAX_XPATH = 512
MAX_PATCH_XML = 16 * 1024


class Firmware(StrEnum):
    """bios: SeaBIOS; uefi: OVMF without Secure Boot; uefi-secure: OVMF with
    Secure Boot and Microsoft's keys enrolled (needs SMM, so q35)."""

    BIOS = "bios"
    UEFI = "uefi"
    UEFI_SECURE = "uefi-secure"


class Machine(StrEnum):
    """q35: PCIe, what modern guests expect; pc: i440FX + PIIX, for old guests."""

    Q35 = "q35"
    PC = "pc"


FIRMWARES: tuple[str, ...] = tuple(Firmware)
MACHINES: tuple[str, ...] = tuple(Machine)
DEFAULT_FIRMWARE = Firmware.BIOS
DEFAULT_MACHINE = Machine.Q35
PATCH_OPS = ("add", "replace", "remove")


def parse_fragment(text: str) -> list[etree._Element]:
    """The elements of a patch's `xml`, in a wrapper that declares the qemu: prefix.
    defusedxml refuses a DTD and entities first; lxml then parses with entities off
    and no network, so nothing outside the text is ever read."""
    if "<!doctype" in text.lower() or "<!entity" in text.lower():
        raise ValueError("DTDs and entities are not allowed")
    wrapped = f'<patch xmlns:qemu="{QEMU_NS}">{text}</patch>'
    try:
        DefusedET.fromstring(wrapped, forbid_dtd=True)
    except DefusedXmlException:
        raise ValueError("DTDs and entities are not allowed") from None
    except DefusedET.ParseError as err:
        raise ValueError(f"not well-formed XML: {err}") from None
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False)
    root = etree.fromstring(wrapped.encode(), parser=parser)
    if root.text and root.text.strip():
        raise ValueError("text outside an element")
    elements = [child for child in root if isinstance(child.tag, str)]
    if not elements:
        raise ValueError("holds no element")
    return elements


def compile_xpath(text: str) -> etree.XPath:
    return etree.XPath(text, namespaces=NAMESPACES)


class XmlPatch(BaseModel):
    """One change to the domain XML the appliance built: add `xml` as children of
    each element `xpath` selects, replace each selected element by `xml`, or
    remove each selected element or attribute."""

    model_config = ConfigDict(extra="forbid")
    op: Annotated[Literal["add", "replace", "remove"], says("must be one of add, replace, remove")]
    xpath: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_XPATH),
                     says(f"must be an XPath of 1 to {MAX_XPATH} characters")]
    xml: Annotated[str | None, Field(strict=True, max_length=MAX_PATCH_XML),
                   says(f"must be XML text of at most {MAX_PATCH_XML} characters, or null")] = None

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise refused("must be an object with op, xpath and xml")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> XmlPatch:
        try:
            compile_xpath(self.xpath)
        except etree.XPathSyntaxError as err:
            raise refused(f"not a valid XPath: {err}", ".xpath") from None
        if self.op == "remove":
            if self.xml is not None:
                raise refused("remove takes no xml (null)", ".xml")
            return self
        if self.xml is None:
            raise refused(f"{self.op} needs the XML to {self.op}", ".xml")
        try:
            parse_fragment(self.xml)
        except ValueError as err:
            raise refused(str(err), ".xml") from None
        return self


def _patch_list(value: Any) -> Any:
    if not isinstance(value, list):
        raise refused("must be a list of patches")
    if len(value) > MAX_XML_PATCHES:
        raise refused(f"at most {MAX_XML_PATCHES} patches")
    return value


XmlPatches = Annotated[
    list[XmlPatch],
    BeforeValidator(_patch_list),
    Field(max_length=MAX_XML_PATCHES, description=(
        f"admins only: at most {MAX_XML_PATCHES} changes to the domain XML, applied in order "
        "after the appliance builds it (README: Raw libvirt power)")),
]
