"""An admin's domain XML patches, applied to the XML the appliance built
(domain.build's last step), and the check libvirt makes of the result.

Operations (model/firmware.py validates their shape): `add` appends the
patch's elements as the last children of each element the XPath selects;
`replace` puts them in place of each selected element; `remove` removes each
selected element or attribute. A patch whose XPath selects nothing is refused
(PatchError names it): a patch that silently did nothing would hide a typo.

The appliance's own identity is out of reach: a patch may not select the
domain's <name>, <uuid> or <metadata> (or inside it), by which the controller
finds and owns its domains. Everything else is the admin's, QEMU's command
line included: that is the point (README "Raw libvirt power"; SECURITY.md).

lxml rather than ElementTree: ElementTree's XPath subset has no predicates on
values beyond equality, no functions, no unions and no attributes as results,
so `//disk[target/@dev='vdb']/driver/@cache` could not be said.
"""
from __future__ import annotations

import copy
import uuid

import libvirt
from lxml import etree

from appliance.errors import Failed
from appliance.model.firmware import QEMU_NS, compile_xpath, parse_fragment

PROTECTED = ("name", "uuid", "metadata")  # children of <domain> the appliance owns
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          remove_blank_text=True)


class PatchError(Failed):
    """A patch that cannot apply, named by its field (xml_patches[INDEX].xpath). The
    service turns it into Invalid before anything is recorded; at a define in the
    controller (a patch the VM's changed XML no longer matches) it fails the operation."""

    def __init__(self, index: int, reason: str, part: str = "xpath"):
        super().__init__(f"xml_patches[{index}]: {reason}", f"xml_patches[{index}].{part}")
        self.index = index
        self.detail = reason


def _protected(node: etree._Element) -> bool:
    chain = [node, *node.iterancestors()]
    # chain[-1] is <domain>; chain[-2] the child of <domain> the node is in (or is)
    return len(chain) >= 2 and chain[-2].tag in PROTECTED


def _apply_one(root: etree._Element, index: int, patch: dict) -> None:
    found = compile_xpath(patch["xpath"])(root)
    if not isinstance(found, list) or not found:
        raise PatchError(index, f"the XPath {patch['xpath']!r} selects nothing in the domain XML")
    for node in found:
        attribute = isinstance(node, etree._ElementUnicodeResult) and node.is_attribute
        element = node.getparent() if isinstance(node, etree._ElementUnicodeResult) and attribute \
            else node
        if not isinstance(element, etree._Element) or isinstance(element, etree._Comment):
            raise PatchError(index, "selects text; patches work on elements and attributes")
        if element is root and patch["op"] != "add":
            raise PatchError(index, "the <domain> element itself can only be added to")
        if _protected(element):
            raise PatchError(index, "selects the domain's name, uuid or metadata, by which "
                             "the appliance knows its domains")
        if attribute:
            assert isinstance(node, etree._ElementUnicodeResult)  # noqa: S101 - for mypy
            if patch["op"] != "remove" or node.attrname is None:
                raise PatchError(index, "selects an attribute: only remove works on "
                                 "attributes (replace the element to change one)")
            del element.attrib[node.attrname]
            continue
        if patch["op"] == "remove":
            parent = element.getparent()
            assert parent is not None  # noqa: S101 - only <domain> has none, refused above
            parent.remove(element)
            continue
        new = [copy.deepcopy(e) for e in parse_fragment(patch["xml"])]
        if patch["op"] == "add":
            element.extend(new)
        else:  # replace
            parent = element.getparent()
            assert parent is not None  # noqa: S101 - only <domain> has none, refused above
            at = parent.index(element)
            parent.remove(element)
            for offset, item in enumerate(new):
                parent.insert(at + offset, item)


def _one_commandline(root: etree._Element) -> None:
    """libvirt takes one <qemu:commandline>: a patch's own is merged into the first
    (the appliance's, for a restricted NIC), so that an admin need not know of it."""
    found = root.findall(f"{{{QEMU_NS}}}commandline")
    for extra in found[1:]:
        found[0].extend(list(extra))
        root.remove(extra)


def apply(xml: str, patches: list[dict]) -> str:
    """The domain XML with the patches applied in order; PatchError for the first that fails."""
    if not patches:
        return xml
    root = etree.fromstring(xml.encode(), parser=_PARSER)
    for index, patch in enumerate(patches):
        _apply_one(root, index, patch)
    _one_commandline(root)
    etree.cleanup_namespaces(root)
    etree.indent(root)
    return etree.tostring(root, encoding="unicode")


def libvirt_check(xml: str) -> str | None:
    """What libvirt says of this domain XML without a hypervisor: its schema
    (domain.rng) and its generic parser, through the test driver, which runs in
    this process (nothing is defined anywhere). None when it accepts it."""
    root = etree.fromstring(xml.encode(), parser=_PARSER)
    # The test driver is one instance per process: a name and uuid of its own per check.
    checked = str(uuid.uuid4())
    for tag, value in (("name", f"check-{checked}"), ("uuid", checked)):
        element = root.find(tag)
        if element is not None:
            element.text = value
    libvirt.registerErrorHandler(lambda *_: None, None)  # the error is raised, not printed
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXMLFlags(etree.tostring(root, encoding="unicode"),
                                  libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        dom.undefine()
        return None
    except libvirt.libvirtError as err:
        return (err.get_error_message() or str(err)).strip()
    finally:
        conn.close()


def blame(xml_of: XmlOf, patches: list[dict]) -> tuple[int, str] | None:
    """(the patch, libvirt's message) when libvirt refuses the patched XML; None when it
    accepts it. The patch blamed is the first after which libvirt says what it says of
    the whole set (a patch valid only with a later one is not blamed for a later fault)."""
    whole = libvirt_check(xml_of(patches))
    if whole is None:
        return None
    for count in range(1, len(patches)):
        if libvirt_check(xml_of(patches[:count])) == whole:
            return count - 1, whole
    return len(patches) - 1, whole


class XmlOf:
    """The domain XML of a VM with the given patches (a callable, for blame())."""

    def __init__(self, base: str):
        self.base = base

    def __call__(self, patches: list[dict]) -> str:
        return apply(self.base, patches)
