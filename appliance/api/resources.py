"""REST resources: each responder reads input, calls one service method, writes the answer.

No rules here. Writes wait for their operation by default (bounded); with
`?wait=false` they answer 202 and the operation's URL to poll.
"""
from __future__ import annotations

import falcon

from appliance import jsonio
from appliance.api.limits import dump_json
from appliance.errors import Invalid, TooLarge
from appliance.files import (
    CONSOLE_INPUT_MAX_BYTES,
    HOST_FILES,
    MAX_INT,
    VM_FILES,
    File,
    events_text,
)
from appliance.model import FINAL_OP_STATES
from appliance.service import Service


def _if_match(req: falcon.Request) -> int | None:
    header = req.get_header("If-Match")
    if header is None or header.strip() == "*":
        return None
    value = header.strip()
    value = value.removeprefix("W/")
    value = value.strip('"')
    # ASCII digits, at most a 64-bit integer's: "²".isdigit() is True and int("²") a
    # ValueError, as is int() of more than 4,300 digits (each was a 500).
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise Invalid('must be an ETag from a GET, like "3"', "If-Match")
    return int(value)


def _all_projects(req: falcon.Request) -> bool:
    """?all_projects=true: a listing of every project's (the service refuses it but to admins)."""
    return req.get_param_as_bool("all_projects", default=False)


def _etag(resp: falcon.Response, generation: int) -> None:
    resp.etag = f'"{generation}"'


def created(resp: falcon.Response, location: str, item: dict) -> None:
    """A POST that made `item`: 201, where it is now, and it."""
    resp.status = falcon.HTTP_201
    resp.location = location
    resp.media = item


def _wanted(req: falcon.Request) -> bool:
    return req.get_param_as_bool("wait", default=True)


def _timeout(req: falcon.Request, service: Service) -> float:
    timeout = req.get_param_as_float("timeout", min_value=0, max_value=3600)
    return min(service.config.wait_timeout if timeout is None else timeout, service.config.max_wait)


def _accepted(resp: falcon.Response, op: dict) -> None:
    resp.status = falcon.HTTP_202
    resp.location = f"/v1/operations/{op['id']}"
    resp.media = {"operation": op}


def _complete(req: falcon.Request, resp: falcon.Response, service: Service,
              op: dict | None) -> bool:
    """Wait for the operation (bounded). False when it is still under way: the
    answer is then 202 with the operation, as with wait=false."""
    if op is None:
        return True
    if not _wanted(req):
        _accepted(resp, op)
        return False
    op = service.wait_operation(op["id"], _timeout(req, service))
    if op["status"] not in FINAL_OP_STATES:
        _accepted(resp, op)
        return False
    service.finish(op, 0)  # raises for a failed or cancelled operation
    return True


def _text(resp: falcon.Response, text: str, content_type: str = falcon.MEDIA_TEXT) -> None:
    resp.content_type = content_type
    resp.text = text


def _wants_text(req: falcon.Request) -> bool:
    return req.get_param("format") == "text" or (
        req.client_prefers([falcon.MEDIA_JSON, falcon.MEDIA_TEXT]) == falcon.MEDIA_TEXT
        and "json" not in (req.accept or ""))


def _body_text(req: falcon.Request, file: File) -> str:
    """The text a shell would write: a value file's JSON form ({"state": "running"}), or the
    raw body."""
    raw = req.bounded_stream.read()
    content_type = (req.content_type or "").split(";")[0].strip()
    if content_type == falcon.MEDIA_JSON and file.from_json is not None:
        try:
            body = jsonio.loads(raw or b"null")
        except ValueError:
            raise falcon.HTTPBadRequest(title="Invalid JSON",
                                        description="the body is not JSON") from None
        if not isinstance(body, dict) or file.name not in body:
            raise Invalid(f'expected {{"{file.name}": ...}}', file.name)
        return file.from_json(body)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the body must be UTF-8 text", file.name) from None


def _body_bytes(req: falcon.Request, file: File, limit: int) -> bytes:
    """The bytes a shell would write to a bytes file (the console): a JSON body's
    {"console": "text"} as its UTF-8 (control characters as JSON escapes), any other body
    (text/plain, application/octet-stream) as it is. TooLarge (413) past limit, before
    more than limit + 1 bytes are read."""
    if req.content_length is not None and req.content_length > limit:
        raise TooLarge(f"at most {limit} bytes are typed at once, not {req.content_length}",
                       file.name)
    content_type = (req.content_type or "").split(";")[0].strip()
    if content_type == falcon.MEDIA_JSON:
        return _body_text(req, file).encode()
    return req.bounded_stream.read(limit + 1)  # the writer refuses what passes limit


def _read_file(req: falcon.Request, resp: falcon.Response, service: Service, file: File,
               name: str) -> None:
    """GET of one file of a directory, as the table has it; a log (the console) is read
    from `?offset=` (negative: from the end); a binary file (screen.png) is made now."""
    if file.snapshot is not None:
        data = file.snapshot(service, name)  # first: a refusal (409: stopped) answers JSON
        resp.content_type = file.content_type
        resp.cache_control = ["no-store"]  # a new one at each GET
        resp.data = data
        return
    if file.log is not None:
        offset = req.get_param_as_int("offset", default=0, min_value=-MAX_INT, max_value=MAX_INT)
        data = file.log.read_at(service, name, offset, None)  # first: a refusal answers JSON
        resp.content_type = file.content_type
        resp.data = data
        return
    text = file.read(service, name)
    if file.as_json is not None and not _wants_text(req):
        resp.media = file.as_json(service, name, text, req)
    else:
        _text(resp, text, file.content_type)


class Health:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    def on_get_ready(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Public (load balancers ask it without a token): the verdict alone.
        The checks name the hosts and why they fail, for token holders only."""
        report = self.service.readiness()
        authenticated = getattr(req.context, "authenticated", False)
        resp.media = report if authenticated else {"ready": report["ready"]}
        if not report["ready"]:
            resp.status = falcon.HTTP_503


class VMs:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_vms(
            state=req.get_param("state"), label=req.get_param("label"), host=req.get_param("host"),
            all_projects=_all_projects(req))}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        vm, op = self.service.create_vm(req.get_media())
        resp.location = f"/v1/vms/{vm['name']}"
        if not _complete(req, resp, self.service, op):
            return
        op = self.service.get_operation(op["id"])
        vm = self.service.get_vm(vm["name"])
        resp.status = falcon.HTTP_201
        _etag(resp, vm["generation"])
        resp.media = {**vm, "operation": op}


class VM:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        # The view's JSON as resp.media would write it, kept while nothing is committed
        # (Service.rendered_vm): a client polling its VM costs no decoding or encoding.
        body, generation = self.service.rendered_vm(name, "json", dump_json)
        _etag(resp, generation)
        resp.data = body
        resp.content_type = falcon.MEDIA_JSON

    def on_patch(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        vm, op = self.service.update_vm(name, req.get_media(), _if_match(req))
        self._answer(req, resp, vm, op)

    def _answer(self, req: falcon.Request, resp: falcon.Response, vm: dict,
                op: dict | None) -> None:
        if not _complete(req, resp, self.service, op):
            return
        vm = self.service.get_vm(vm["name"])
        _etag(resp, vm["generation"])
        resp.media = {**vm, "operation": op and self.service.get_operation(op["id"])}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        op = self.service.delete_vm(name, force=req.get_param_as_bool("force", default=False),
                                    if_match=_if_match(req))
        if _complete(req, resp, self.service, op):
            resp.status = falcon.HTTP_204


class VMFile:
    """The files of a VM directory (appliance.files.VM_FILES), at the same paths as in the mount."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        entry = VM_FILES.file(file)
        _read_file(req, resp, self.service, entry, name)
        # A log (the console) grows and a screen changes without a new generation.
        if entry.log is None and entry.snapshot is None:
            _etag(resp, self.service.get_vm(name)["generation"])

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        entry = VM_FILES.file(file)
        if entry.write_bytes is not None:
            # Typed into the console: answered once sent, {"name", "typed": N}; no
            # operation, no generation (If-Match and wait do not apply).
            data = _body_bytes(req, entry, CONSOLE_INPUT_MAX_BYTES)
            resp.media = entry.write_bytes(self.service, name, data).answer
            return
        text = _body_text(req, entry)
        written = VM_FILES.writer(file)(self.service, name, text, _if_match(req))
        op = next(iter(written.operations), None)  # a VM file's write starts one operation at most
        if not _complete(req, resp, self.service, op):
            return
        vm = self.service.get_vm(written.name)
        _etag(resp, vm["generation"])
        resp.media = {**vm, "operation": op and self.service.get_operation(op["id"])}

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        """An action at a file's path: rebuild alone (Nova's POST {"image": IMAGE}, or
        {} or no body for the VM's own image); others are 405."""
        if file != "rebuild":
            VM_FILES.file(file)  # 404 for a file that is not there
            raise falcon.HTTPMethodNotAllowed(["GET", "PUT"])
        if (req.content_type or "").split(";")[0].strip() in ("", falcon.MEDIA_JSON):
            op = self.service.rebuild_vm(name, req.get_media(default_when_empty=None),
                                         _if_match(req))
        else:  # the text a shell would write: an image name, or nothing for its own
            text = _body_text(req, VM_FILES.file(file))
            written = VM_FILES.writer(file)(self.service, name, text, _if_match(req))
            op = written.operations[0]  # a rebuild always starts its operation
        if not _complete(req, resp, self.service, op):
            return
        vm = self.service.get_vm(name)
        _etag(resp, vm["generation"])
        resp.media = {**vm, "operation": self.service.get_operation(op["id"])}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        """Remove a file, as `rm` in the mount: the lock alone (unlock); others are 403."""
        VM_FILES.clearer(file)(self.service, name)
        resp.status = falcon.HTTP_204


class Operations:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_operations(
            vm=req.get_param("vm"), status=req.get_param("status"),
            limit=req.get_param_as_int("limit", default=100, min_value=1, max_value=1000),
            all_projects=_all_projects(req))}

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, op_id: str) -> None:
        wait = req.get_param_as_float("wait", min_value=0, max_value=3600)
        if wait:
            resp.media = self.service.wait_operation(op_id, min(wait, self.service.config.max_wait))
        else:
            resp.media = self.service.get_operation(op_id)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, op_id: str) -> None:
        resp.media = self.service.cancel_operation(op_id)


class Events:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        events = self.service.list_events(
            vm=req.get_param("vm"),
            since=req.get_param_as_int("since", default=0, min_value=0, max_value=MAX_INT),
            limit=req.get_param_as_int("limit", default=1000, min_value=1, max_value=10000),
            all_projects=_all_projects(req), user=req.get_param("user"))
        if req.get_param("format") == "text":
            _text(resp, events_text(events))
        else:
            resp.media = {"items": events}


class Images:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_images()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        if not isinstance(body, dict):
            raise Invalid("expected {\"name\": ..., \"path\": ...}", None)
        for field in ("name", "path"):
            if not isinstance(body.get(field), str):
                raise Invalid("required string", field)
        image = self.service.import_image(body["name"], body["path"])
        created(resp, f"/v1/images/{image['name']}", image)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_image(name)

    def on_put_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        image = self.service.upload_image(name, req.bounded_stream, req.content_length)
        created(resp, f"/v1/images/{image['name']}", image)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_image(name)
        resp.status = falcon.HTTP_204


class Hosts:
    """The libvirt hosts VMs are placed on: a collection and its items."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_hosts(), "cluster_cpu": self.service.cluster_cpu()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """201 with the host once the controller's first connection attempt has
        finished (up, or down with the reason), waiting as other writes do
        (?wait=false: at once, `connecting`)."""
        host = self.service.add_host(req.get_media())
        if _wanted(req):  # with what the add found (ssh: the keys; appliance/ssh_access.py)
            extra = {key: host[key] for key in ("ssh",) if key in host}
            host = {**self.service.wait_host_attempt(host["name"], _timeout(req, self.service)),
                    **extra}
        created(resp, f"/v1/hosts/{host['name']}", host)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_host(name)

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.update_host(name, req.get_media())

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_host(name)
        resp.status = falcon.HTTP_204


class HostFile:
    """The files of a host directory (appliance.files.HOST_FILES), at the same paths as in the
    mount."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        _read_file(req, resp, self.service, HOST_FILES.file(file), name)

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        """state: the answer is the host with its drain report (what migrates, moves, stays),
        at once: the drain's operations are not waited for."""
        text = _body_text(req, HOST_FILES.file(file))
        written = HOST_FILES.writer(file)(self.service, name, text, None)
        answer = written.answer
        resp.media = answer if answer is not None else self.service.get_host(written.name)


class Groups:
    """Server groups: VMs naming one in their spec's `group` are placed by its policy."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_groups()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        group = self.service.create_group(req.get_media())
        created(resp, f"/v1/groups/{group['name']}", group)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_group(name)

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.update_group(name, req.get_media())

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_group(name)
        resp.status = falcon.HTTP_204
