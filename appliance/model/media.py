"""Install media and boot order in the spec (issue 14, part B): CD-ROM drives
holding ISO images of the image store, and the order the firmware tries devices.

`cdroms` is a list of image names, one per drive ("" = an empty drive): at most
MAX_CDROMS. A name is only ever an image store name (a DNS label); the service
checks that it names an ISO image, and the domain gets that image's file from the
store (never a path a user gave). `boot_order` lists "hd" (the root disk),
"cdrom" (the drives holding media, in order) and "network" (the NIC, whose
option ROM is then enabled), each at most once.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from appliance.errors import Invalid
from appliance.model import values
from appliance.model.fields import must_be_list, one_of, refused

MAX_CDROMS = 4  # the drives of one virtio-scsi controller's first targets (sda..sdd)
BOOT_DEVICES = ("hd", "cdrom", "network")
DEFAULT_BOOT_ORDER = ("hd",)
# mkdir vms/NAME/disks/D (and `vmctl disk add` without a size) makes a disk this big;
# `echo 10G > size` grows it at once.
DEFAULT_NEW_DISK_MIB = 1024


def _cdroms(value: Any) -> list[str]:
    must_be_list(value)
    if len(value) > MAX_CDROMS:
        raise refused(f"at most {MAX_CDROMS} CD-ROM drives")
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise refused('must be an ISO image name, or "" for an empty drive', f"[{i}]")
        if name:
            try:
                values.validate_image(name, "")
            except Invalid as err:
                raise refused(err.reason, f"[{i}]") from None
        names.append(name)
    return names


def _boot_order(value: Any) -> list[str]:
    must_be_list(value)
    if not value:
        raise refused(f"must name at least one of {', '.join(BOOT_DEVICES)}")
    seen: set[str] = set()
    for i, device in enumerate(value):
        if device not in BOOT_DEVICES:
            raise refused(one_of(BOOT_DEVICES), f"[{i}]")
        if device in seen:
            raise refused("named twice", f"[{i}]")
        seen.add(device)
    return list(value)


Cdroms = Annotated[list[str], BeforeValidator(_cdroms), WithJsonSchema({
    "type": "array", "maxItems": MAX_CDROMS,
    "items": {"type": "string", "maxLength": 63,
              "description": 'an ISO image of the image store, or "" for an empty drive'},
})]
BootOrder = Annotated[list[str], BeforeValidator(_boot_order), WithJsonSchema({
    "type": "array", "minItems": 1, "maxItems": len(BOOT_DEVICES), "uniqueItems": True,
    "items": {"type": "string", "enum": list(BOOT_DEVICES)},
})]


def cdroms_field() -> Any:
    return Field(default_factory=list, description=(
        f"CD-ROM drives (at most {MAX_CDROMS}), each an ISO image's name or \"\" "
        "(empty); the media changes live, a drive added or removed waits for a restart"))


def boot_order_field() -> Any:
    return Field(default_factory=lambda: list(DEFAULT_BOOT_ORDER), description=(
        "the devices the firmware boots from, in order: hd (the root disk), cdrom, network"))
