"""Console tickets (appliance/access/tickets.py, POST /v1/tickets): what the
answer says, and each property a ticket's safety rests on, each a test that
fails without it: one use, an expiry, its token's validity at use (revoked,
expired, user disabled), its VM and kind, its project, stored hashed, bounded
in number per token."""
from __future__ import annotations

import sqlite3
import time

import pytest
from falcon import testing

from appliance.access import tickets
from appliance.access.principal import Role
from appliance.api.app import create_app
from tests.unit.appliance.teams import bearer_client as client
from tests.unit.appliance.teams import user_over_rest

HOME_TOKEN = "home-token-of-the-tickets-tests-0123456789"  # noqa: S105 - a test's


@pytest.fixture
def app(service):
    service.store.insert_project({"name": "web", "description": "", "quota": {}, "created": 0.0})
    service.create_vm({"name": "web1", "state": "stopped"})
    # as the controller records it once the guest runs: a stopped VM has no console
    vm_id = service.store.get_vm("web1")["id"]
    service.store.update_vm(vm_id, bump=False, observed_state="running", host="local")
    return create_app(service, HOME_TOKEN)


@pytest.fixture
def admin(app):
    return client(app, HOME_TOKEN)


def user(admin, name: str, role: str, projects=("default",)) -> tuple[str, str]:
    """(token id, token) of a new user."""
    return user_over_rest(admin, name, role, projects)


def ask(caller, vm="web1", kind="console", **params):
    return caller.simulate_post("/v1/tickets", json={"vm": vm, "kind": kind}, params=params)


def test_the_answer_names_the_ticket_its_vm_kind_write_expiry_and_path(app, admin):
    resp = ask(admin, kind="vnc")
    assert resp.status_code == 201, resp.text
    body = resp.json
    assert body["ticket"].startswith("vmt_") and len(body["ticket"]) == 4 + 43
    assert (body["vm"], body["kind"], body["write"], body["path"]) == (
        "web1", "vnc", True, "/v1/vms/web1/vnc")
    assert body["expires"].endswith("+00:00")
    assert resp.headers["cache-control"] == "no-store"


def test_write_says_whether_the_role_may_type(app, admin):
    _, operator = user(admin, "olga", "operator")
    _, viewer = user(admin, "vic", "viewer")
    assert ask(client(app, operator)).json["write"] is True
    assert ask(client(app, viewer)).json["write"] is False


def test_monitors_and_the_anonymous_get_no_ticket(app, admin):
    _, monitor = user(admin, "mon", "monitor")
    assert ask(client(app, monitor)).status_code == 403
    assert testing.TestClient(app).simulate_post(
        "/v1/tickets", json={"vm": "web1", "kind": "console"}).status_code == 401


def test_bad_bodies_are_refused_with_their_field(admin):
    assert ask(admin, kind="spice").json["field"] == "kind"
    assert ask(admin, vm="../etc").json["field"] == "vm"
    refused = admin.simulate_post("/v1/tickets", json={"vm": "web1"})
    assert refused.status_code == 422 and refused.json["field"] == "kind"


def test_another_project_s_vm_is_not_found(app, admin):
    _, webop = user(admin, "webop", "operator", ("web",))
    refused = ask(client(app, webop))  # web1 is the default project's
    assert refused.status_code == 404
    assert ask(client(app, webop), project="default").status_code == 404  # not theirs either


def test_no_vnc_ticket_for_a_vm_without_graphics(service, admin):
    service.create_vm({"name": "headless", "state": "stopped", "graphics": "none"})
    service.store.update_vm(service.store.get_vm("headless")["id"], bump=False,
                            observed_state="running", host="local")
    refused = ask(admin, vm="headless", kind="vnc")
    assert refused.status_code == 409 and refused.json["field"] == "kind"
    assert ask(admin, vm="headless", kind="console").status_code == 201


def test_a_ticket_works_once(service, admin):
    ticket = ask(admin).json["ticket"]
    granted = tickets.redeem(service.store, ticket)
    assert granted is not None and granted.kind == "console"
    assert granted.vm_id == service.get_vm("web1")["id"]
    assert granted.principal.user == "admin" and granted.principal.project == "default"
    assert tickets.redeem(service.store, ticket) is None


def test_a_ticket_raced_by_many_upgrades_works_once(service, admin):
    """One DELETE ... RETURNING: threads (a worker's pool, or two workers) presenting
    the same ticket at once get it once between them."""
    import concurrent.futures
    import threading

    for _ in range(5):
        ticket = ask(admin).json["ticket"]
        start = threading.Barrier(8)

        def use(ticket=ticket, start=start):
            start.wait()
            return tickets.redeem(service.store, ticket)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            granted = [g for g in pool.map(lambda _: use(), range(8)) if g is not None]
        assert len(granted) == 1


def test_a_ticket_expires(service, admin):
    ticket = ask(admin).json["ticket"]
    ttl = service.config.ticket_ttl
    assert ttl == 60
    late = time.time() + ttl + 1
    assert tickets.redeem(service.store, ticket, clock=lambda: late) is None
    # and it is gone: not usable even by a clock put back
    assert tickets.redeem(service.store, ticket) is None


def test_the_ttl_is_the_config_s(service, admin):
    service.config.ticket_ttl = 2.0
    ticket = ask(admin).json["ticket"]
    assert tickets.redeem(service.store, ticket, clock=lambda: time.time() + 3) is None


def test_a_revoked_token_s_tickets_are_useless(app, service, admin):
    token_id, token = user(admin, "olga", "operator")
    ticket = ask(client(app, token)).json["ticket"]
    assert admin.simulate_delete(f"/v1/tokens/{token_id}").status_code == 204
    assert tickets.redeem(service.store, ticket) is None


def test_a_disabled_user_s_tickets_are_useless(app, service, admin):
    _, token = user(admin, "olga", "operator")
    ticket = ask(client(app, token)).json["ticket"]
    assert admin.simulate_patch("/v1/users/olga", json={"disabled": True}).status_code == 200
    assert tickets.redeem(service.store, ticket) is None


def test_an_expired_token_s_tickets_are_useless(app, service, admin):
    _, token = user(admin, "olga", "operator")
    ticket = ask(client(app, token)).json["ticket"]
    service.store.db.execute("UPDATE tokens SET expires = ? WHERE user = 'olga'", [time.time() - 1])
    assert tickets.redeem(service.store, ticket) is None


def test_the_role_at_use_is_the_one_the_console_gets(app, service, admin):
    _, token = user(admin, "olga", "operator")
    ticket = ask(client(app, token)).json["ticket"]
    admin.simulate_patch("/v1/users/olga", json={"role": "viewer"})
    granted = tickets.redeem(service.store, ticket)
    assert granted is not None and granted.principal.role == Role.VIEWER


def test_a_user_taken_out_of_the_project_loses_its_tickets(app, service, admin):
    _, token = user(admin, "olga", "operator", ("default", "web"))
    ticket = ask(client(app, token)).json["ticket"]
    admin.simulate_patch("/v1/users/olga", json={"projects": ["web"]})
    assert tickets.redeem(service.store, ticket) is None


def test_tickets_are_stored_hashed(service, admin, config):
    ticket = ask(admin).json["ticket"]
    with sqlite3.connect(config.db_path) as db:
        rows = db.execute("SELECT * FROM tickets").fetchall()
    assert rows and not any(ticket in str(row) or ticket[4:] in str(row) for row in rows)
    dump = "\n".join(sqlite3.connect(config.db_path).iterdump())
    assert ticket[4:] not in dump


def test_malformed_tickets_are_refused_without_a_lookup(service):
    for presented in ("", "vmt_", "vmt_" + "x" * 44, "vma_" + "x" * 43, "vmt_" + "é" * 43):
        assert tickets.redeem(service.store, presented) is None


def test_a_token_holds_a_bounded_number_of_live_tickets(service, admin):
    for _ in range(tickets.MAX_LIVE_PER_TOKEN):
        assert ask(admin).status_code == 201
    refused = ask(admin)
    assert refused.status_code == 409 and refused.json["field"] == "ticket"
    # expired ones are dropped when the next is asked
    service.store.db.execute("UPDATE tickets SET expires = ?", [time.time() - 1])
    assert ask(admin).status_code == 201
    assert service.store.db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 1


def test_a_stopped_vm_gets_no_ticket(app, admin, service):
    """Refused when asked (409), not in a browser tab after the URL was handed on."""
    row = service.store.get_vm("web1")
    service.store.update_vm(row["id"], bump=False, observed_state="stopped")
    for kind in ("console", "vnc"):
        resp = ask(admin, kind=kind)
        assert resp.status_code == 409, resp.text
        assert resp.json["reason"] == "web1 is stopped: start it first"
    assert service.store.db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 0
