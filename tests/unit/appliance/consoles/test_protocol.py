"""The broker's wire format: requests checked field by field, replies as errors."""
import asyncio
import json
import uuid

import pytest

from appliance.consoles import protocol
from appliance.consoles.protocol import BadRequest, ConsoleUnavailable
from appliance.errors import Conflict, Failed, NotFound

VM = str(uuid.uuid4())


def line(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def test_a_console_request_with_every_field():
    req = protocol.parse_request(line(op="console", vm=VM, write=True, force=True, history=65536))
    assert (req.op, req.vm, req.write, req.force, req.history) == ("console", VM, True, True, 65536)
    assert protocol.parse_request(line(op="input", vm=VM, size=3)).size == 3


@pytest.mark.parametrize("fields, field", [
    ({"op": "shell", "vm": VM}, "op"),
    ({"vm": VM}, "op"),
    ({"op": "console", "vm": "../../etc"}, "vm"),
    ({"op": "console", "vm": VM.upper()}, "vm"),  # not the canonical form a folder has
    ({"op": "console", "vm": 5}, "vm"),
    ({"op": "console", "vm": VM, "write": "yes"}, "write"),
    ({"op": "console", "vm": VM, "force": 1}, "force"),
    ({"op": "console", "vm": VM, "history": 65537}, "history"),
    ({"op": "console", "vm": VM, "history": -1}, "history"),
    ({"op": "console", "vm": VM, "history": True}, "history"),
    ({"op": "input", "vm": VM, "size": 65537}, "size"),
    ({"op": "input", "vm": VM, "size": 1.5}, "size"),
    ({"op": "console", "vm": VM, "uri": "qemu+ext:///system?command=/bin/sh"}, "uri"),
])
def test_a_bad_field_is_named(fields, field):
    with pytest.raises(BadRequest) as err:
        protocol.parse_request(line(**fields))
    assert err.value.field == field


@pytest.mark.parametrize("raw", [b"not json\n", b"[1, 2]\n", b"\xff\xfe\n",
                                 b'{"op": "console", "vm": "' + b"x" * 5000 + b'"}\n'])
def test_a_line_that_is_no_request_is_refused(raw):
    with pytest.raises(BadRequest):
        protocol.parse_request(raw)


def test_a_refusal_line_becomes_the_error_it_stands_for():
    for err, kind in [(NotFound("no VM", "vm"), NotFound), (Conflict("stopped", "vm"), Conflict),
                      (Failed("broke"), Failed), (ConsoleUnavailable("down"), ConsoleUnavailable)]:
        reply = protocol.refusal(err)
        assert reply.endswith(b"\n") and reply.count(b"\n") == 1
        with pytest.raises(kind) as raised:
            protocol.parse_reply(reply)
        assert raised.value.reason == err.reason and raised.value.field == err.field
    assert json.loads(protocol.refusal(BadRequest("nope", "op")))["status"] == 400
    assert protocol.parse_reply(protocol.ok(size=3)) == {"ok": True, "size": 3}
    assert ConsoleUnavailable("x").http_status == 503


def test_a_cut_or_missing_reply_means_the_broker_is_unavailable():
    with pytest.raises(ConsoleUnavailable):
        protocol.parse_reply(b"")
    with pytest.raises(ConsoleUnavailable):
        protocol.parse_reply(b'{"ok": tr')


def read(data: bytes, eof: bool = True, timeout: float = 1.0) -> bytes:
    async def go():
        reader = asyncio.StreamReader(limit=protocol.HEADER_MAX * 2)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await protocol.read_line(reader, protocol.HEADER_MAX, timeout)
    return asyncio.run(go())


def test_read_line_is_bounded_in_size_and_time():
    assert read(b'{"a": 1}\nrest') == b'{"a": 1}\n'
    with pytest.raises(BadRequest, match="longer"):
        read(b"x" * 5000 + b"\n")
    with pytest.raises(BadRequest, match="longer"):
        read(b"x" * 20000, eof=False)  # past the reader's limit, no newline: not waited for
    with pytest.raises(BadRequest, match="closed"):
        read(b'{"a"')
    with pytest.raises(BadRequest, match="within"):
        read(b'{"a"', eof=False, timeout=0.1)
