"""REST resources of a VM's data disks and CD-ROM drives (issue 14, part B), at the
mount's paths:

    GET    /v1/vms/{name}/disks                 the data disks (name, size, attached size)
    GET    /v1/vms/{name}/disks/{disk}          one (its info.json)
    PUT    /v1/vms/{name}/disks/{disk}          {"size": "10G"}: add it (hot-plugged), or grow it
    DELETE /v1/vms/{name}/disks/{disk}          detach (live) and delete it
    GET    /v1/vms/{name}/disks/{disk}/size     its size in MiB, as text
    PUT    /v1/vms/{name}/disks/{disk}/size     "20G": grow it (smaller: 422)
    GET    /v1/vms/{name}/cdroms                the drives and their media
    GET    /v1/vms/{name}/cdroms/{index}        a drive's ISO image name ("" empty), as text
    PUT    /v1/vms/{name}/cdroms/{index}        "debian-12" inserts, "" ejects (live)

Each responder calls one service method (appliance/service/disks.py) and waits for
its operation as every write does (`?wait=false`: 202 at once).
"""
from __future__ import annotations

import falcon

from appliance import jsonio
from appliance.api.resources import _complete, _if_match
from appliance.errors import Invalid
from appliance.service import Service

MAX_VALUE_BYTES = 4096  # a size or an image name, as text or JSON


def _value(req: falcon.Request, key: str) -> str:
    """The value a body carries: {"KEY": value} as JSON, or the text a shell writes."""
    raw = req.bounded_stream.read(MAX_VALUE_BYTES + 1)
    if len(raw) > MAX_VALUE_BYTES:
        raise Invalid(f"at most {MAX_VALUE_BYTES} bytes", key)
    if (req.content_type or "").split(";")[0].strip() == falcon.MEDIA_JSON:
        try:
            body = jsonio.loads(raw or b"null")
        except ValueError:
            raise Invalid("not JSON", key) from None
        if not isinstance(body, dict) or key not in body:
            raise Invalid(f'expected {{"{key}": ...}}', key)
        value = body[key]
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise Invalid("must be a string", key)
        return value
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Invalid("not UTF-8 text", key) from None


def _done(req: falcon.Request, resp: falcon.Response, service: Service, op: dict | None,
          answer: object) -> None:
    if _complete(req, resp, service, op):
        resp.media = answer


class Disks:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = {"items": self.service.list_disks(name)}

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                    disk: str) -> None:
        resp.media = self.service.get_disk(name, disk)

    def on_put_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                    disk: str) -> None:
        size = _value(req, "size")
        if all(d["name"] != disk for d in self.service.list_disks(name)):  # 404 for no VM
            op = self.service.add_disk(name, disk, size, _if_match(req))
            if _complete(req, resp, self.service, op):
                resp.status = falcon.HTTP_201
                resp.media = self.service.get_disk(name, disk)
            return
        op = self.service.resize_disk(name, disk, size, _if_match(req))
        if _complete(req, resp, self.service, op):
            resp.media = self.service.get_disk(name, disk)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                       disk: str) -> None:
        op = self.service.remove_disk(name, disk, _if_match(req))
        if _complete(req, resp, self.service, op):
            resp.status = falcon.HTTP_204

    def on_get_size(self, req: falcon.Request, resp: falcon.Response, name: str,
                    disk: str) -> None:
        size = self.service.get_disk(name, disk)["size"]  # first: a refusal answers JSON
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"{size}\n"

    def on_put_size(self, req: falcon.Request, resp: falcon.Response, name: str,
                    disk: str) -> None:
        op = self.service.resize_disk(name, disk, _value(req, "size"), _if_match(req))
        if _complete(req, resp, self.service, op):
            resp.media = self.service.get_disk(name, disk)


class Cdroms:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        drives = self.service.vm_row(name, with_xml=False)["spec"].get("cdroms") or []
        resp.media = {"items": [{"index": i, "image": image} for i, image in enumerate(drives)]}

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                    index: str) -> None:
        image = self.service.get_cdrom(name, index)  # first: a refusal answers JSON
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"{image}\n"

    def on_put_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                    index: str) -> None:
        op = self.service.set_cdrom(name, index, _value(req, "image"), _if_match(req))
        _done(req, resp, self.service, op,
              {"index": int(index), "image": self.service.get_cdrom(name, index)})
