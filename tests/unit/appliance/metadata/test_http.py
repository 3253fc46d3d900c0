"""The metadata service's documents and HTTP (appliance/metadata/documents.py,
http.py): Nova's OpenStack and EC2 paths, the same files as the config drive's,
404s, and the bounds on what a client may send or hold."""
from __future__ import annotations

import asyncio
import json

import pytest

from appliance.metadata import documents, http
from appliance.metadata.documents import Instance, answer, tree
from appliance.virt import cloudinit
from tests.unit.appliance.metadata.fakes import vm

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0p71RU5w8rFUB514vcOWH7sWRRe+Lslf0KY8aTOaDN me@laptop"
VM_ID = "11111111-1111-1111-1111-111111111111"
NICS = [{"mac": "52:54:00:00:00:01", "address": "10.20.0.10", "prefix": 24,
         "gateway": "10.20.0.1", "dns": "10.20.0.1"}]


def instance(user_data: str | None = "#cloud-config\n# hello\n", **row) -> Instance:
    record = vm(VM_ID, "web1", {"type": "network", "name": "lab", "ip": "10.20.0.10"},
                image="demo", cpus=2, memory="256M", labels={"role": "web"},
                cloud_init={"user_data": user_data} if user_data else {})
    record.update(public_keys=json.dumps({"laptop": KEY}), **row)
    return Instance(record, "10.20.0.10", NICS)


def get(path: str, vm: Instance | None = None) -> tuple[int, str, bytes]:
    return answer(tree(vm or instance()), path)


def test_the_openstack_files_are_the_config_drives():
    vm = instance()
    drive = cloudinit.configdrive_files(VM_ID, "web1", vm.row["spec"]["cloud_init"],
                                        {"laptop": KEY}, NICS, {"role": "web"})
    for path, data in drive.items():
        assert get("/" + path) == (200, documents.JSON if path.endswith(".json")
                                   else documents.TEXT, data), path
    meta = json.loads(get("/openstack/latest/meta_data.json")[2])
    assert (meta["uuid"], meta["name"], meta["meta"]) == (VM_ID, "web1", {"role": "web"})
    assert meta["public_keys"] == {"laptop": KEY}
    assert json.loads(get("/openstack/2015-10-15/network_data.json")[2])["networks"][0][
        "ip_address"] == "10.20.0.10"


def test_the_listings():
    assert get("/openstack") == (200, documents.TEXT, b"2012-08-10\n2015-10-15\nlatest")
    assert get("/openstack/") == get("/openstack")
    assert get("/openstack/latest/")[2].split() == [
        b"meta_data.json", b"network_data.json", b"user_data", b"vendor_data.json"]
    assert b"network_data.json" not in get("/openstack/2012-08-10")[2]
    assert get("/")[2].split() == [b"1.0", b"2009-04-04", b"latest"]
    assert get("/latest")[2].split() == [b"meta-data/", b"user-data"]
    assert get("/latest/meta-data/")[2].split() == [
        b"ami-id", b"ami-launch-index", b"hostname", b"instance-id", b"instance-type",
        b"local-hostname", b"local-ipv4", b"placement/", b"public-keys/", b"tags/"]
    # No user data: none listed, and 404 for it in both layouts.
    bare = instance(user_data=None)
    assert get("/latest", bare)[2] == b"meta-data/"
    assert b"user_data" not in get("/openstack/latest", bare)[2]
    assert get("/latest/user-data", bare)[0] == 404
    assert get("/openstack/latest/user_data", bare)[0] == 404


def test_ec2_values():
    assert get("/latest/meta-data/instance-id")[2] == VM_ID.encode()
    assert get("/2009-04-04/meta-data/hostname")[2] == b"web1"
    assert get("/latest/meta-data/local-ipv4")[2] == b"10.20.0.10"
    assert get("/latest/meta-data/placement/availability-zone")[2] == b"nova"
    assert get("/latest/meta-data/instance-type")[2] == b"2cpu-256M"
    assert get("/latest/meta-data/public-keys/")[2] == b"0=laptop"
    assert get("/latest/meta-data/public-keys/0/")[2] == b"openssh-key"
    assert get("/latest/meta-data/public-keys/0/openssh-key")[2] == (KEY + "\n").encode()
    assert get("/latest/meta-data/tags/instance/role")[2] == b"web"
    assert get("/latest/user-data")[2] == b"#cloud-config\n# hello\n"
    # A rebuilt VM's instance id is the new one, in both layouts.
    rebuilt = instance(instance_id="99999999-9999-9999-9999-999999999999")
    assert get("/latest/meta-data/instance-id", rebuilt)[2] == b"99999999-9999-9999-9999-999999999999"
    assert json.loads(get("/openstack/latest/meta_data.json", rebuilt)[2])["uuid"] == \
        "99999999-9999-9999-9999-999999999999"


@pytest.mark.parametrize("path", ["/nothing", "/openstack/latest/nothing", "/openstack/1999-01-01",
                                  "/latest/meta-data/instance-id/more", "/../etc/passwd",
                                  "/openstack/latest/../../etc/passwd", "/latest/meta-data/" + "a/" * 9,
                                  "/" + "a" * 600])
def test_unknown_paths_are_404(path):
    assert get(path) == (404, documents.TEXT, b"Not Found")


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /openstack HTTP/1.1\r\n\r\n", 405),
    (b"PUT /latest/user-data HTTP/1.1\r\n\r\n", 405),
    (b"GET /openstack HTTP/2.0\r\n\r\n", 505),
    (b"GET /openstack\r\n\r\n", 400),
    (b"GET openstack HTTP/1.1\r\n\r\n", 400),
    (b"GET /open\xffstack HTTP/1.1\r\n\r\n", 400),
    (b"GET /open\x01stack HTTP/1.1\r\n\r\n", 400),
])
def test_refused_requests(head, status):
    with pytest.raises(http.BadRequest) as err:
        http.parse_head(head)
    assert err.value.status == status


def test_a_query_is_ignored():
    assert http.parse_head(b"GET /openstack?x=1 HTTP/1.0\r\nHost: a\r\n\r\n") == ("GET", "/openstack")


# -- the handler on a real socket -------------------------------------------------
def exchange(request: bytes, resolve=None, max_connections=http.MAX_CONNECTIONS,
             hold: int = 0) -> list[bytes]:
    """Each answer the server gives to `request`, sent on hold+1 connections at once."""
    async def known(ip, port):
        assert ip == "127.0.0.1" and port > 0
        return tree(instance())

    async def main() -> list[bytes]:
        handler = http.Handler(resolve or known, max_connections)
        server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=http.MAX_HEAD)
        port = server.sockets[0].getsockname()[1]
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(hold)]
            await asyncio.sleep(0.1)  # the held ones are open in the handler
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answers = [await asyncio.wait_for(reader.read(), 10)]
            writer.close()
            for r, w in held:
                w.write(b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n")
                answers.append(await asyncio.wait_for(r.read(), 10))
                w.close()
            return answers
        finally:
            server.close()
    return asyncio.run(main())


def test_get_and_head():
    [answer_] = exchange(b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer_.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["name"] == "web1"
    [answer_] = exchange(b"HEAD /latest/meta-data/hostname HTTP/1.0\r\n\r\n")
    assert answer_.endswith(b"Content-Length: 4\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n")


def test_an_unknown_source_gets_404_and_no_data():
    async def nobody(ip, port):
        return None
    [answer_] = exchange(b"GET /openstack/latest/meta_data.json HTTP/1.1\r\n\r\n", nobody)
    assert answer_.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert answer_.endswith(b"\r\n\r\nNot Found")


def test_a_head_too_long_is_refused_unread():
    [answer_] = exchange(b"GET /openstack HTTP/1.1\r\nX: " + b"a" * (http.MAX_HEAD + 10) + b"\r\n\r\n")
    assert answer_.startswith(b"HTTP/1.1 431 ")


def test_connections_past_the_bound_get_503(monkeypatch):
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 5.0)
    answers = exchange(b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n", max_connections=2, hold=2)
    assert answers[0].startswith(b"HTTP/1.1 503 ")
    assert all(a.endswith(b"\r\n\r\nweb1") for a in answers[1:])


def test_a_client_that_sends_no_head_is_dropped(monkeypatch):
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.3)
    [answer_] = exchange(b"GET /openstack HTTP/1.1\r\n")  # never ends its head
    assert answer_ == b""


def test_one_source_cannot_take_every_connection(monkeypatch):
    """A guest holding its share of connections (each up to HEAD_TIMEOUT without a
    byte) gets 503 for more; another source is still answered. Before: the bound was
    the listener's only, so one guest's connections left every other guest 503."""
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 5.0)
    request = b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n"

    async def anyone(ip, port):
        return tree(instance())

    async def ask(port: int, source: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(request)
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    async def main() -> tuple[bytes, bytes]:
        handler = http.Handler(anyone, max_connections=8, max_per_source=2)
        server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=http.MAX_HEAD)
        port = server.sockets[0].getsockname()[1]
        try:
            held = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
                    for _ in range(2)]
            for _ in range(100):  # until the handler has both
                if handler.by_source.get("127.0.0.1") == 2:
                    break
                await asyncio.sleep(0.05)
            same, other = await ask(port, "127.0.0.1"), await ask(port, "127.0.0.2")
            for _r, w in held:
                w.close()
            return same, other
        finally:
            server.close()

    same, other = asyncio.run(main())
    assert same.startswith(b"HTTP/1.1 503 ")
    assert other.startswith(b"HTTP/1.1 200 ") and other.endswith(b"\r\n\r\nweb1")
