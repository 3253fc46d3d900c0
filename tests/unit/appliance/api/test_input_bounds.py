"""Issue 9, findings 6, 9 and 12: every input is bounded, every validator
matches whole values, and a malformed body is a 4xx that changes nothing.

- 6: a 100 MB JSON body was parsed; a 100 MB PUT .../state came back inside a
  524 MB error; 30 MB of cloud_init.meta_data was stored and then returned by
  every GET /v1/vms.
- 9: `$` in Python regexes matches before a final newline: {"name": "x\\n"}
  left a record stuck in provisioning; `mv` to a name with a newline renamed.
- 12: deeply nested JSON answered 500 (RecursionError).
"""
from __future__ import annotations

import io

import pytest
from falcon import testing

from appliance import jsonio
from appliance import spec as specs
from appliance.api.app import create_app
from appliance.api.limits import LimitedStream
from appliance.errors import Invalid
from appliance.files import VM_FILES

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIB = 1024 * 1024


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


def _names(client) -> list[str]:
    return [vm["name"] for vm in client.simulate_get("/v1/vms").json["items"]]


# -- 6: sizes ----------------------------------------------------------------------------
def test_a_body_over_the_cap_is_413_and_not_read(client, service):
    body = b'{"name": "big", "labels": {"a": "' + b"x" * (2 * MIB) + b'"}}'
    resp = client.simulate_post("/v1/vms", body=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert len(resp.content) < 1000
    assert _names(client) == []


def test_a_huge_state_write_is_refused_without_echoing_it(client, service):
    service.create_vm({"name": "web1", "state": "stopped"})
    for body in (b"x" * (2 * MIB), b"x" * (MIB - 100)):
        resp = client.simulate_put("/v1/vms/web1/state", body=body, headers={"Content-Type": "text/plain"})
        assert resp.status_code in (413, 422), resp.status_code
        assert len(resp.content) < 1000, len(resp.content)
    assert client.simulate_get("/v1/vms/web1").json["desired_state"] == "stopped"


def test_a_stream_without_length_is_cut_at_the_cap():
    stream = LimitedStream(io.BytesIO(b"y" * (MIB + 10)), MIB)
    with pytest.raises(Exception) as caught:
        stream.read()
    assert "413" in str(getattr(caught.value, "status", ""))
    assert LimitedStream(io.BytesIO(b"z" * 10), MIB).read() == b"z" * 10


@pytest.mark.parametrize("cloud_init, field", [
    ({"meta_data": {"k": "v" * (17 * 1024)}}, "cloud_init.meta_data"),
    ({"meta_data": "a: " + "b" * (17 * 1024)}, "cloud_init.meta_data"),
    ({"network_config": {"k": ["v" * 1024] * 17}}, "cloud_init.network_config"),
    ({"user_data": "#!/bin/sh\n" + "x" * (65 * 1024)}, "cloud_init.user_data"),
])
def test_each_cloud_init_part_is_bounded(client, cloud_init, field):
    resp = client.simulate_post("/v1/vms", json={"name": "ci", "state": "stopped", "cloud_init": cloud_init})
    assert resp.status_code == 422 and resp.json["field"] == field, resp.text
    assert _names(client) == []


def test_cloud_init_parts_within_bounds_pass(client):
    resp = client.simulate_post("/v1/vms", json={"name": "ci", "state": "stopped", "cloud_init": {
        "user_data": "#!/bin/sh\n" + "x" * (60 * 1024), "meta_data": {"k": "v" * (15 * 1024)}}},
                                params={"wait": "false"})
    assert resp.status_code == 202, resp.text
    assert _names(client) == ["ci"]


def test_labels_are_bounded_in_number(client):
    resp = client.simulate_post("/v1/vms", json={"name": "l", "state": "stopped",
                                                 "labels": {f"k{i}": "v" for i in range(65)}})
    assert resp.status_code == 422 and resp.json["field"] == "labels"


def test_an_unknown_field_of_any_size_is_named_short(client):
    resp = client.simulate_post("/v1/vms", json={"name": "u", "network": {"k" * 500_000: 1}})
    assert resp.status_code == 422 and len(resp.content) < 1000


# -- 12: nesting -----------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [40, 5000, 200_000])
def test_deeply_nested_json_is_400_not_500(client, service, depth):
    body = "[" * depth + "]" * depth
    for method, path in (("POST", "/v1/vms"), ("POST", "/v1/hosts"), ("POST", "/v1/groups"),
                         ("PATCH", "/v1/vms/web1"), ("PUT", "/v1/vms/web1/host")):
        resp = client.simulate_request(method, path, body=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400, (method, path, resp.status_code, resp.text[:200])
    nested = '{"name": "n", "cloud_init": {"meta_data": ' + '{"a": ' * depth + "1" + "}" * depth + "}}"
    resp = client.simulate_post("/v1/vms", body=nested, headers={"Content-Type": "application/json"})
    assert resp.status_code == (400 if len(nested) <= MIB else 413)
    assert _names(client) == []


def test_nested_spec_json_written_as_a_file_is_invalid(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    with pytest.raises(Invalid) as caught:
        VM_FILES.write(service, "web1", "spec.json", "[" * 100_000 + "]" * 100_000)
    assert caught.value.field == "spec.json"


def test_moderate_nesting_in_cloud_init_is_refused_by_the_spec():
    with pytest.raises(Invalid) as caught:
        specs.validate({"name": "a", "image": "demo",
                        "cloud_init": {"meta_data": jsonio.loads('{"a": ' * 20 + "1" + "}" * 20)}})
    assert caught.value.field == "cloud_init.meta_data"


# -- 9: whole-value matching ---------------------------------------------------------------
BAD_ENDINGS = ["\n", "\r", "\x00", " ", "\r\n", "\t"]


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_every_validated_string_field_refuses_control_characters_and_trailing_space(client, service, ending):
    service.create_vm({"name": "base", "state": "stopped"})
    service.create_group({"name": "grp", "policy": "anti-affinity"})
    creates = [
        ({"name": "x" + ending}, "name"),
        ({"name": "ok1", "image": "demo" + ending}, "image"),
        ({"name": "ok2", "group": "grp" + ending}, "group"),
        ({"name": "ok3", "labels": {"k" + ending: "v"}}, "labels"),
        ({"name": "ok4", "labels": {"k": "v" + ending}}, "labels.k"),
        ({"name": "ok5", "node_selector": {"zone": "a" + ending}}, "node_selector.zone"),
        ({"name": "ok6", "network": {"type": "user", "mac": "52:54:00:12:34:56" + ending}}, "network.mac"),
        ({"name": "ok7", "network": {"type": "network", "name": "default" + ending}}, "network.name"),
        ({"name": "ok8", "disks": [{"name": "data" + ending, "size": "1G"}]}, "disks[0].name"),
    ]
    for body, field in creates:
        resp = client.simulate_post("/v1/vms", json={"state": "stopped", **body})
        assert resp.status_code in (404, 422), (body, resp.text)
        assert resp.json["field"] == field, (body, resp.json)
    assert sorted(_names(client)) == ["base"]
    resp = client.simulate_patch("/v1/vms/base", json={"name": "renamed" + ending})
    assert resp.status_code == 422 and resp.json["field"] == "name"
    assert client.simulate_put("/v1/vms/base/state", body="running" + ending + "x").status_code == 422
    hosts = [
        ({"name": "h9" + ending, "uri": "qemu+ssh://h9/system"}, "name"),
        ({"name": "h9", "uri": "qemu+ssh://h9/system" + ending}, "uri"),
        ({"name": "h9", "uri": "qemu+ssh://h9/system", "storage": "nfs" + ending}, "storage"),
        ({"name": "h9", "uri": "qemu+ssh://h9/system", "migration_address": "10.0.0.9" + ending}, "migration_address"),
        ({"name": "h9", "uri": "qemu+ssh://h9/system", "labels": {"zone": "b" + ending}}, "labels.zone"),
    ]
    for body, field in hosts:
        resp = client.simulate_post("/v1/hosts", json=body)
        assert resp.status_code == 422 and resp.json["field"] == field, (body, resp.text)
    resp = client.simulate_post("/v1/groups", json={"name": "g" + ending, "policy": "affinity"})
    assert resp.status_code == 422 and resp.json["field"] == "name"
    resp = client.simulate_post("/v1/images", json={"name": "img" + ending, "path": "/nonexistent"})
    assert resp.status_code == 422 and resp.json["field"] == "name"
    assert [h["name"] for h in client.simulate_get("/v1/hosts").json["items"]] == ["local"]
    assert [g["name"] for g in client.simulate_get("/v1/groups").json["items"]] == ["grp"]


def test_a_name_with_a_newline_leaves_no_record_stuck(client, service):
    """The reproduction: {"name": "x\\n"} was recorded and stayed in provisioning."""
    resp = client.simulate_post("/v1/vms", json={"name": "x\n"})
    assert resp.status_code == 422
    assert service.store.list_vms() == []


def test_numbers_and_sizes_take_the_newline_a_shell_writes(service):
    """Numeric files are parsed to numbers; the newline of `echo 2 > cpus` is no part of the value."""
    assert specs.parse_cpus("2\n") == 2
    assert specs.parse_size_mib("512M\n", "memory", 32, 4096) == 512
    with pytest.raises(Invalid):
        specs.parse_size_mib("512M\n1", "memory", 32, 4096)
    with pytest.raises(Invalid):
        specs.parse_size_mib("9" * 500, "memory", 32, 4096)


def test_cloud_init_values_with_a_newline_are_quoted_in_the_seed():
    """A meta_data value ending in a newline was written bare into the YAML (re.match and $)."""
    from appliance.virt.cloudinit import _yaml_mapping

    assert _yaml_mapping({"local-hostname": "web1"}) == "local-hostname: web1\n"
    assert _yaml_mapping({"local-hostname": "web1\n"}) == '{\n  "local-hostname": "web1\\n"\n}\n' or \
        _yaml_mapping({"local-hostname": "web1\n"}) == 'local-hostname: "web1\\n"\n'


# -- review of issue 9's fixes: digits str.isdigit() takes and int() does not ----------------------
# "²".isdigit() is True and int("²") a ValueError; so is int() of more than 4,300 digits.
NOT_INTS = ["\u00b2", "1\u00b3", "\u2460", "9" * 5000]


@pytest.mark.parametrize("value", NOT_INTS, ids=["superscript", "digit-superscript", "circled", "5000-digits"])
def test_cpus_that_only_look_like_digits_are_422_not_500(client, service, value):
    """They answered 500 (and EIO in the mount) with a traceback in the log."""
    resp = client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped", "cpus": value})
    assert resp.status_code == 422 and resp.json["field"] == "cpus", resp.text[:300]
    assert service.store.list_vms() == []
    service.create_vm({"name": "web1", "state": "stopped"})
    before = client.simulate_get("/v1/vms/web1").json
    resp = client.simulate_patch("/v1/vms/web1", json={"cpus": value})
    assert resp.status_code == 422 and resp.json["field"] == "cpus", resp.text[:300]
    resp = client.simulate_put("/v1/vms/web1/cpus", body=value.encode())
    assert resp.status_code == 422 and resp.json["field"] == "cpus", resp.text[:300]
    assert len(resp.text) < 1000  # not echoed at length
    assert client.simulate_get("/v1/vms/web1").json == before


@pytest.mark.parametrize("value", NOT_INTS, ids=["superscript", "digit-superscript", "circled", "5000-digits"])
def test_an_if_match_that_only_looks_like_digits_is_422_not_500(client, service, value):
    service.create_vm({"name": "web1", "state": "stopped"})
    before = client.simulate_get("/v1/vms/web1").json
    # A header is latin-1 on the wire: the superscripts (in latin-1) arrive as they are; the
    # circled digit only as the bytes of its UTF-8 (no digits at all); the 5000 digits as ASCII.
    header = f'"{value}"'
    if not all(ord(c) < 256 for c in header):
        header = header.encode().decode("latin-1")
    resp = client.simulate_patch("/v1/vms/web1", json={"cpus": 2}, headers={"If-Match": header})
    assert resp.status_code == 422 and resp.json["field"] == "If-Match", resp.text[:300]
    assert client.simulate_get("/v1/vms/web1").json == before


# -- review of issue 9's fixes: a wait of NaN seconds --------------------------------------------
def _answer_within(seconds: float, call) -> object:
    """call() in a thread; its answer, or AssertionError when it has none after `seconds`."""
    import threading

    box: dict = {}
    worker = threading.Thread(target=lambda: box.setdefault("answer", call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert "answer" in box, f"no answer after {seconds} s"
    return box["answer"]


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_a_wait_of_nan_seconds_is_refused_not_endless(client, service, value):
    """float('nan') passes Falcon's min/max checks (every comparison with NaN is false), and
    a deadline of now + NaN is never reached: GET /v1/operations/ID?wait=nan (and a write's
    ?timeout=nan) held its thread until the operation ended - past max_wait, for good
    when it never does. Here no controller runs, so the operation stays pending."""
    _, op = service.create_vm({"name": "web1", "state": "stopped"})
    resp = _answer_within(5, lambda: client.simulate_get(f"/v1/operations/{op['id']}", params={"wait": value}))
    assert resp.status_code == 422 and resp.json.get("field") == "wait", resp.text
    resp = _answer_within(5, lambda: client.simulate_put("/v1/vms/web1/state", body="running",
                                                         params={"timeout": value}))
    assert resp.status_code == 422 and resp.json.get("field") == "timeout", resp.text
    assert service.get_vm("web1")["desired_state"] == "stopped"


# -- review of issue 9's fixes: the one list of a spec without a bound ----------------------------
def test_port_forwards_are_bounded_in_number(client, service):
    """disks (16), labels (64) and cloud-init parts are bounded; port_forwards took as many as a
    1 MiB body holds (~15,000), each a socket QEMU binds as root on the host's loopback: enough
    to take every ephemeral port of 127.0.0.1 from the host's own clients."""
    limit = 64  # spec.MAX_PORT_FORWARDS
    many = [{"host_port": 20000 + i, "guest_port": 80} for i in range(limit + 1)]
    resp = client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped",
                                                 "network": {"type": "user", "port_forwards": many}},
                              params={"wait": "false"})
    assert resp.status_code == 422 and resp.json["field"] == "network.port_forwards", resp.text[:300]
    assert service.store.list_vms() == []
    resp = client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped", "network": {
        "type": "user", "port_forwards": many[:limit]}}, params={"wait": "false"})
    assert resp.status_code == 202, resp.text[:300]
    assert len(service.get_vm("web1")["spec"]["network"]["port_forwards"]) == limit


# -- issue 17's stateful API fuzzing: a write's wait/timeout parsed after the write ----------------
@pytest.mark.parametrize("params, field", [({"wait": "maybe"}, "wait"), ({"timeout": "-1"}, "timeout"),
                                           ({"timeout": "soon"}, "timeout")])
def test_a_bad_wait_or_timeout_refuses_the_write_before_it_happens(client, service, params, field):
    """The responders read `wait` and `timeout` once the write was recorded, to wait for its
    operation: DELETE /v1/pools/NAME?wait=maybe deleted the pool, then answered 400 (the
    fuzzing's 'changed on a 4xx'); a create or a state change likewise."""
    service.create_pool({"name": "p1", "replicas": 0})
    resp = client.simulate_delete("/v1/pools/p1", params=params)
    assert resp.status_code == 400 and field in resp.text, resp.text
    assert [p["name"] for p in service.list_pools()] == ["p1"]
    resp = client.simulate_post("/v1/vms", params=params, json={"name": "web1", "state": "stopped"})
    assert resp.status_code == 400, resp.text
    assert _names(client) == []
    service.create_vm({"name": "web2", "state": "stopped"})
    resp = client.simulate_put("/v1/vms/web2/state", body="running", params=params)
    assert resp.status_code == 400, resp.text
    assert service.get_vm("web2")["desired_state"] == "stopped"
    # a read's wait is seconds, as before
    assert client.simulate_get("/v1/vms/web2").status_code == 200
