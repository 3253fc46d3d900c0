"""/v1/keys over REST (issue 15): one's own keys, viewers included (a key changes no
VM), the monitor role refused, a bad key's 422 naming the field."""
from __future__ import annotations

import pytest
from tests.unit.appliance.teams import add_user, bearer_client
from tests.unit.appliance.test_keys import ED

from appliance.api.app import create_app

HOME_TOKEN = "home-token-of-the-appliance-0123456789abcdef"  # noqa: S105 - a test's


@pytest.fixture
def app(service):
    return create_app(service, HOME_TOKEN)


def test_keys_over_rest_are_one_s_own_and_not_the_monitor_s(service, app):
    people = service
    viewer = add_user(people.store, "vic", "viewer")
    monitor = add_user(people.store, "mon", "monitor")
    client = bearer_client(app, viewer["Authorization"].split()[1])
    made = client.simulate_post("/v1/keys", json={"name": "laptop", "public_key": ED})
    assert made.status_code == 201 and made.headers["location"] == "/v1/keys/laptop"
    assert client.simulate_get("/v1/keys").json["items"][0]["fingerprint"].startswith("SHA256:")
    bad = client.simulate_post("/v1/keys", json={"name": "x", "public_key": "ssh-rsa AAAA"})
    assert bad.status_code == 422 and bad.json["field"] == "public_key"
    mon = bearer_client(app, monitor["Authorization"].split()[1])
    assert mon.simulate_get("/v1/keys").status_code == 403
    assert client.simulate_delete("/v1/keys/laptop").status_code == 204
    assert client.simulate_get("/v1/keys/laptop").status_code == 404
