"""The consoles' WebSockets (appliance/api/websocket.py): the refusals before the
upgrade (each with its HTTP status, never an accepted socket), tickets at the
upgrade, read-only sessions (a viewer's keystrokes, VNC keys), the bounds, and
the attach in the VM's events. The role x route matrix: test_websocket_matrix.py."""
from __future__ import annotations

import json
import struct

import pytest

from appliance.consoles.client import ConsoleUnavailable
from tests.unit.appliance.api import websocket_harness as harness

CONSOLE = "/v1/vms/web1/console"
VNC = "/v1/vms/web1/vnc"


@pytest.fixture
def world(service):
    return harness.build(service)


def refused(outcome, status: int) -> dict:
    assert outcome.status == status, outcome.sent
    assert not outcome.accepted
    return json.loads(outcome.body)


# -- refused before the upgrade ---------------------------------------------------------------
def test_no_credentials_is_401_before_the_upgrade(world):
    outcome = world.upgrade(CONSOLE)
    body = refused(outcome, 401)
    assert outcome.header(b"www-authenticate") == b"Bearer"
    assert "ticket" in body["reason"]
    assert world.broker.opened == []


def test_a_token_naming_nobody_is_401(world):
    refused(world.upgrade(CONSOLE, caller="bad-token"), 401)


def test_a_monitor_may_not_attach(world):
    body = refused(world.upgrade(CONSOLE, caller="monitor"), 403)
    assert body["field"] == "role" and "needs viewer" in body["reason"]


def test_another_project_s_vm_is_not_found(world):
    refused(world.upgrade(CONSOLE, caller="webop"), 404)
    # nor by naming the project: it is not theirs (404 as for REST)
    refused(world.upgrade(CONSOLE, "project=default", caller="webop"), 404)
    assert world.upgrade("/v1/vms/www1/console", caller="webop").accepted


def test_only_the_two_routes_are_websockets(world):
    for path in ("/v1/vms/web1", "/v1/vms/web1/spec.json", "/v1/vms/web1/console/x", "/v1/vms"):
        refused(world.upgrade(path, caller="admin"), 404)
    # Falcon's forgiving spellings reach the route as they do in REST
    assert world.upgrade("//v1/vms/web1/console/", caller="admin").accepted


@pytest.mark.parametrize("query, field", [
    ("mode=rx", "mode"), ("history=-1", "history"), ("history=65537", "history"),
    ("force=maybe", "force"), ("mode=ro&mode=rw", "mode")])
def test_bad_query_values_are_422(world, query, field):
    assert refused(world.upgrade(CONSOLE, query, caller="admin"), 422)["field"] == field


def test_a_stopped_vm_is_409_and_a_vm_without_display_has_no_vnc(world):
    world.service.store.db.execute("UPDATE vms SET observed_state = 'stopped' WHERE name = 'web2'")
    refused(world.upgrade("/v1/vms/web2/console", caller="admin"), 409)
    refused(world.upgrade("/v1/vms/headless/vnc", caller="admin"), 409)
    assert world.upgrade("/v1/vms/headless/console", caller="admin").accepted


def test_the_broker_s_refusal_is_the_answer(world):
    world.broker.refuse = ConsoleUnavailable("the console broker is not running")
    body = refused(world.upgrade(CONSOLE, caller="admin"), 503)
    assert "broker" in body["reason"]


def test_without_the_denial_extension_a_close_code_says_it(world):
    outcome = world.upgrade(CONSOLE, extensions=False)
    assert not outcome.accepted and outcome.close_code == 4401


def test_the_worker_holds_a_bounded_number_of_websockets(world):
    world.endpoint.sessions = world.endpoint.max_sessions
    outcome = world.upgrade(CONSOLE, caller="admin")
    refused(outcome, 503)
    assert outcome.header(b"retry-after") == b"5"
    world.endpoint.sessions = 0
    assert world.upgrade(CONSOLE, caller="admin").accepted
    assert world.endpoint.sessions == 0  # counted down when a session ends


# -- tickets ------------------------------------------------------------------------------------
def test_a_ticket_opens_one_websocket_once(world):
    ticket = world.ticket("viewer")
    assert world.upgrade(CONSOLE, f"ticket={ticket}").accepted
    refused(world.upgrade(CONSOLE, f"ticket={ticket}"), 401)


def test_a_ticket_is_for_its_vm_and_kind(world):
    refused(world.upgrade("/v1/vms/web2/console", f"ticket={world.ticket('admin')}"), 404)
    refused(world.upgrade(VNC, f"ticket={world.ticket('admin')}"), 401)
    refused(world.upgrade(CONSOLE, f"ticket={world.ticket('admin', kind='vnc')}"), 401)


def test_a_ticket_is_for_its_project(world):
    ticket = world.ticket("admin", vm="www1", project="web")
    refused(world.upgrade("/v1/vms/www1/console", f"ticket={ticket}&project=default"), 404)
    ticket = world.ticket("admin", vm="www1", project="web")
    refused(world.upgrade("/v1/vms/web1/console", f"ticket={ticket}"), 404)  # web1 of default
    ticket = world.ticket("admin", vm="www1", project="web")
    assert world.upgrade("/v1/vms/www1/console", f"ticket={ticket}").accepted


def test_a_revoked_token_s_ticket_is_refused_at_the_upgrade(world):
    ticket = world.ticket("operator")
    world.service.store.update_token(world.token_ids["operator"], revoked=1.0)
    refused(world.upgrade(CONSOLE, f"ticket={ticket}"), 401)


def test_a_viewer_s_ticket_gives_a_read_only_console(world):
    outcome = world.upgrade(CONSOLE, f"ticket={world.ticket('viewer')}",
                            messages=[{"bytes": b"reboot\r"}])
    assert outcome.accepted and world.broker.opened[-1]["write"] is False
    assert world.broker.received() == b""


# -- sessions -----------------------------------------------------------------------------------
def test_an_operator_types_and_sees_the_guest(world):
    outcome = world.upgrade(CONSOLE, "history=100&force=true", caller="operator",
                            messages=[{"bytes": b"echo hi\r"}, {"text": "é\r"}])
    assert outcome.accepted and outcome.frames == harness.GUEST_SAYS
    assert world.broker.opened == [{"kind": "console", "vm_id": world.service.get_vm("web1")["id"],
                                    "write": True, "force": True, "history": 100}]
    assert world.broker.received() == b"echo hi\r" + "é\r".encode()


def test_a_viewer_s_keystrokes_never_reach_the_console(world):
    outcome = world.upgrade(CONSOLE, caller="viewer", messages=[{"bytes": b"rm -rf /\r"},
                                                                {"text": "halt\r"}])
    assert outcome.accepted and outcome.frames == harness.GUEST_SAYS
    assert world.broker.opened[-1]["write"] is False
    assert world.broker.received() == b""


def test_mode_ro_makes_an_operator_read_only(world):
    world.upgrade(CONSOLE, "mode=ro", caller="operator", messages=[{"bytes": b"x"}])
    assert world.broker.opened[-1]["write"] is False and world.broker.received() == b""


def test_a_message_over_64_kib_closes_the_websocket_unsent(world):
    outcome = world.upgrade(CONSOLE, caller="admin",
                            messages=[{"bytes": b"a" * (64 * 1024 + 1)}, {"bytes": b"b"}])
    assert outcome.close_code == 1009
    assert world.broker.received() == b""


def test_binary_is_the_subprotocol_when_offered(world):
    accept = [m for m in world.upgrade(CONSOLE, caller="admin", subprotocols=("binary",)).sent
              if m["type"] == "websocket.accept"]
    assert accept[0]["subprotocol"] == "binary"
    accept = [m for m in world.upgrade(CONSOLE, caller="admin").sent
              if m["type"] == "websocket.accept"]
    assert accept[0]["subprotocol"] is None


def test_the_attach_is_in_the_vm_s_events(world):
    world.upgrade(CONSOLE, caller="viewer")
    world.upgrade(VNC, caller="operator")
    events = [e for e in world.service.store.list_events(world.service.get_vm("web1")["id"])
              if e["kind"].endswith("-attached")]
    assert [(e["kind"], e["message"], e["actor"], e["source"]) for e in events] == [
        ("console-attached", "console attached read-only", "viewer", "127.0.0.9"),
        ("vnc-attached", "VNC console attached read-write", "operator", "127.0.0.9")]
    assert events[0]["credential"] == f"token {world.token_ids['viewer']}"


# -- VNC ------------------------------------------------------------------------------------------
HANDSHAKE = b"RFB 003.008\n\x01\x00"
KEY = b"\x04\x01\x00\x00" + struct.pack(">I", 0x61)
UPDATE = b"\x03\x01" + struct.pack(">HHHH", 0, 0, 640, 480)


def test_vnc_relays_the_server_s_banner(world):
    outcome = world.upgrade(VNC, caller="viewer")
    assert outcome.frames == harness.RFB_BANNER


def test_a_viewer_s_vnc_keys_are_dropped_and_its_client_init_made_shared(world):
    world.upgrade(VNC, caller="viewer", messages=[{"bytes": HANDSHAKE}, {"bytes": KEY + UPDATE}])
    assert world.broker.received() == b"RFB 003.008\n\x01\x01" + UPDATE


def test_an_operator_s_vnc_is_not_filtered(world):
    world.upgrade(VNC, caller="operator", messages=[{"bytes": HANDSHAKE}, {"bytes": KEY + UPDATE}])
    assert world.broker.received() == HANDSHAKE + KEY + UPDATE


def test_a_viewer_s_unparsable_vnc_stream_closes_the_session(world):
    outcome = world.upgrade(VNC, caller="viewer",
                            messages=[{"bytes": HANDSHAKE + b"\x07junk"}, {"bytes": UPDATE}])
    assert outcome.close_code == 1008
    assert world.broker.received() == b""  # nothing of the message that failed, nor after


def test_the_front_hands_websockets_to_the_endpoint_and_refuses_them_without_one():
    import asyncio

    from appliance.api import asgi

    seen = []

    async def endpoint(scope, receive, send):
        seen.append(scope["path"])

    front = asgi.Front(lambda environ, start_response: [], threads=2)
    scope = {"type": "websocket", "path": CONSOLE}
    asyncio.run(front(scope, None, None))  # no endpoint: nothing is accepted (uvicorn: 403)
    front.websockets = endpoint
    asyncio.run(front(scope, None, None))
    assert seen == [CONSOLE]


# -- a session outlives its upgrade: the caller's token is asked again --------------------------
def _during_session(world, change, caller: str = "operator", path: str = CONSOLE,
                    query: str = "", linger: float = 2.0):
    """Open a session, make `change` to the store a moment after, keep the client for `linger`
    s; the session is asked again every 0.05 s here (every few seconds in the API)."""
    import threading
    import time

    world.endpoint.recheck_every = 0.05
    timer = threading.Timer(0.3, change)
    timer.start()
    started = time.monotonic()
    outcome = world.upgrade(path, query, caller=caller, linger=linger,
                            messages=[{"bytes": b"typed\r"}])
    timer.join()
    return outcome, time.monotonic() - started


@pytest.mark.parametrize("change", ["revoked", "disabled", "demoted"])
def test_a_session_ends_when_its_caller_may_no_longer_type(world, change):
    """An operator's read-write console (a root shell on the guest, often) went on after
    the token was revoked, or the user disabled or made a viewer: it is closed (1008) as
    soon as it is asked again, when REST would refuse the token's next request."""
    import time

    store = world.service.store

    def make() -> None:
        if change == "revoked":
            store.update_token(world.token_ids["operator"], revoked=time.time())
        elif change == "disabled":
            store.update_user("operator", disabled=1)
        else:
            store.update_user("operator", role="viewer")

    # The client would stay 20 s: an end before that is the check's (a loaded machine may
    # take seconds to run it; a bound near the 0.3 s change would fail there, not here).
    outcome, took = _during_session(world, make, linger=20.0)
    assert outcome.accepted
    assert outcome.close_code == 1008, outcome.sent
    assert took < 20.0  # closed by the check, not by the client's leaving


def test_a_ticket_s_session_ends_when_its_token_is_revoked(world):
    store = world.service.store
    ticket = world.ticket("viewer", kind="vnc")
    outcome, _took = _during_session(
        world, lambda: store.update_token(world.token_ids["viewer"], revoked=1.0),
        caller=None, path=VNC, query=f"ticket={ticket}", linger=20.0)
    assert outcome.accepted and outcome.close_code == 1008, outcome.sent


def test_a_session_whose_caller_is_unchanged_goes_on(world):
    outcome, took = _during_session(world, lambda: None)
    assert outcome.accepted and outcome.close_code is None and took >= 2.0, outcome.sent
    assert b"typed\r" in world.broker.received()


# -- force: taking the console over from another holder ---------------------------------------
def test_a_viewer_may_not_take_the_console_over(world):
    """force=true opens the VM's console with VIR_DOMAIN_CONSOLE_FORCE, which cuts off
    whoever held it (an admin's `virsh console` on the host): the act of one who may
    type into it, not of a viewer, who watches (403, field force, nothing opened)."""
    body = refused(world.upgrade(CONSOLE, "force=true", caller="viewer"), 403)
    assert body["field"] == "force"
    ticket = world.ticket("viewer")
    refused(world.upgrade(CONSOLE, f"ticket={ticket}&force=true"), 403)
    assert world.broker.opened == []
    # an operator may, read-only too (watching a console someone left held)
    assert world.upgrade(CONSOLE, "force=true&mode=ro", caller="operator").accepted
    assert world.broker.opened[-1]["force"] is True


def test_one_user_holds_a_bounded_share_of_the_worker_s_websockets(world):
    """The worker's bound (64) was the only one: a viewer's token (or a script gone wrong)
    could hold every WebSocket of every worker, and an operator come to fix a VM got 503.
    One user holds at most max_per_user of them (429 beyond); others still attach."""
    import asyncio

    endpoint = world.endpoint
    endpoint.max_per_user = 3
    accepted = []
    peers = []  # the broker's ends, kept open (the stand-in remembers only the last)
    pair = world.broker._pair
    world.broker._pair = lambda greeting: (peers.append(world.broker.peer), pair(greeting))[1]

    async def hold(caller: str, release: asyncio.Event) -> list[dict]:
        scope = {"type": "websocket", "path": CONSOLE, "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {world.tokens[caller]}".encode())],
                 "client": ("127.0.0.9", 4242), "subprotocols": [],
                 "extensions": {"websocket.http.response": {}}}
        sent: list[dict] = []
        connected = False

        async def receive():
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await release.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message):
            sent.append(message)
            if message["type"] == "websocket.accept":
                accepted.append(caller)

        await endpoint(scope, receive, send)
        return sent

    async def scenario():
        release = asyncio.Event()
        viewers = [asyncio.create_task(hold("viewer", release)) for _ in range(3)]
        while len(accepted) < 3:
            await asyncio.sleep(0.01)
        fourth = await asyncio.wait_for(hold("viewer", release), 5)
        operator = asyncio.create_task(hold("operator", release))
        while len(accepted) < 4:
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*viewers, operator)
        return fourth

    fourth = asyncio.run(scenario())
    starts = [m for m in fourth if m["type"] == "websocket.http.response.start"]
    assert starts and starts[0]["status"] == 429, fourth
    assert accepted == ["viewer"] * 3 + ["operator"]
    assert endpoint.by_user == {}  # every slot given back


def test_an_unexpected_error_before_the_upgrade_is_a_500_answer(world):
    """A bug or a store error while authorizing is an HTTP answer with a reason, not an
    exception out of the app: uvicorn closed the socket as it wrote its own 500, so the
    client saw the connection end with no answer at all."""
    world.broker.refuse = RuntimeError("a bug in the broker's client")
    body = refused(world.upgrade(CONSOLE, caller="admin"), 500)
    assert "log has the details" in body["reason"]
