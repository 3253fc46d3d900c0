"""The role x route matrix of the WebSockets (policy.WEBSOCKETS), as
test_policy_matrix.py has it for the router's routes: generated from the
policy table and the OpenAPI document (x-websocket), never listed here.

Each caller (each role, no token, a token naming nobody) x each WebSocket:
no credentials, or bad ones, 401 before the upgrade; a role that may not
attach, 403 before it; any other is attached, read-write exactly when its
role may WEBSOCKET_INPUT (the broker is asked write=true, and what the client
types reaches it), read-only otherwise (nothing it types reaches it)."""
from __future__ import annotations

import pytest

from appliance.access import policy
from appliance.access.principal import Role
from appliance.api.openapi import DOCUMENT
from tests.unit.appliance.api import websocket_harness as harness
from tests.unit.appliance.api.matrix_sources import websockets

CALLERS = ("admin", "operator", "viewer", "monitor", "no-token", "bad-token")
ROLE_OF = {"admin": Role.ADMIN, "operator": Role.OPERATOR, "viewer": Role.VIEWER,
           "monitor": Role.MONITOR}
CASES = [(caller, template) for template in sorted(policy.WEBSOCKETS) for caller in CALLERS]
# What a client sends on each WebSocket, and what reaches the broker when it may type.
TYPED = {"console": b"echo typed\r", "vnc": b"RFB 003.008\n\x01\x00" + b"\x04\x01\x00\x00abcd"}


def test_the_document_describes_exactly_the_policy_s_websockets():
    assert set(websockets()) == set(policy.WEBSOCKETS)


@pytest.mark.parametrize("template", sorted(policy.WEBSOCKETS))
def test_the_documented_websocket(template):
    operation = websockets()[template]
    assert {"101", "401", "403", "404", "409", "503"} <= set(operation["responses"])
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"][-1] == "project"
    assert {"ticket": []} in operation["security"]
    assert DOCUMENT["components"]["securitySchemes"]["ticket"]["in"] == "query"
    refusal = operation["responses"]["403"]["description"]
    attach = [r.value for r in Role if policy.allows(r, policy.WEBSOCKETS[template])]
    typing = [r.value for r in Role if policy.allows(r, policy.WEBSOCKET_INPUT)]
    assert f"only {', '.join(attach[:-1])} or {attach[-1]} may" in refusal
    assert f"only {' or '.join(typing)} may type" in refusal
    assert "frame" in operation["description"].lower() or "Frames" in operation["description"]


def test_the_matrix_covers_each_role_and_the_anonymous():
    assert {caller for caller, _ in CASES} == {*(r.value for r in Role), "no-token", "bad-token"}
    assert len(CASES) >= 12


@pytest.mark.parametrize("caller, template", CASES, ids=[f"{c}-{t}" for c, t in CASES])
def test_matrix(service, caller, template):
    world = harness.build(service)
    kind = template.rsplit("/", 1)[1]
    path = template.replace("{name}", "web1")
    outcome = world.upgrade(path, caller=None if caller == "no-token" else caller,
                            messages=[{"bytes": TYPED[kind]}])
    if caller in ("no-token", "bad-token"):
        assert outcome.status == 401 and not outcome.accepted
        return
    role = ROLE_OF[caller]
    if not policy.allows(role, policy.WEBSOCKETS[template]):
        assert outcome.status == 403 and not outcome.accepted
        assert world.broker.opened == []
        return
    assert outcome.accepted, outcome.sent
    writes = policy.allows(role, policy.WEBSOCKET_INPUT)
    reached = world.broker.received()
    if kind == "console":
        assert world.broker.opened[-1]["write"] is writes
        assert reached == (TYPED[kind] if writes else b"")
    else:  # the handshake passes either way (made shared); the key only for writers
        assert reached == (TYPED[kind] if writes else b"RFB 003.008\n\x01\x01")
