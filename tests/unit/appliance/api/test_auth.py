"""Issue 9, finding 1: nobody gets past the token by spelling a path differently.

The check used to skip every path not starting with "/v1", while Falcon's
router forgives extra leading slashes and decodes %2F: `GET //v1/vms`
answered 200 without a token and `POST //v1/vms?wait=false` created a VM.
Every route of the OpenAPI document, every method, every spelling: 401.
"""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.api.openapi import DOCUMENT

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# "/" and "/ui/...": the web page (appliance/api/web.py), whose files hold no data
PUBLIC = {"/healthz", "/readyz", "/v1/openapi.json", "/", "/ui/app.js"}
SAMPLE = {"{name}": "web1", "{file}": "state", "{op_id}": "0" * 32, "{path}": "app.js"}


def _concrete(template: str) -> str:
    for field, value in SAMPLE.items():
        template = template.replace(field, value)
    return template


def _routes() -> list[tuple[str, str]]:
    paths = DOCUMENT["paths"]
    out = []
    for template, item in paths.items():
        for method in item:
            if method in ("get", "put", "post", "patch", "delete"):
                out.append((method.upper(), _concrete(template)))
    return out


def _spellings(path: str) -> list[str]:
    upper = path[:1] + path[1:2].upper() + path[2:]  # /V1/vms, /Healthz
    return [
        path, "/" + path, "//" + path, "/." + path, path + "/", path + "//",
        "/%2F" + path.lstrip("/"), path.replace("/", "%2F", 2).replace("%2F", "/", 1),
        upper, path.upper(), path + "/.", "/v1/../" + path.lstrip("/"),
    ]


ROUTES = _routes()


def test_the_walk_covers_every_route_of_the_document():
    templates = set(DOCUMENT["paths"])
    assert {"/v1/vms", "/v1/vms/{name}", "/v1/vms/{name}/{file}", "/v1/hosts", "/v1/images", "/metrics"} <= templates
    assert len(ROUTES) >= 20


@pytest.fixture
def bare(service):
    return testing.TestClient(create_app(service, TOKEN))


@pytest.mark.parametrize("method, path", [r for r in ROUTES if r[1] not in PUBLIC])
def test_every_spelling_of_every_route_wants_the_token(bare, method, path):
    for spelling in _spellings(path):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": "Basic " + TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
            resp = bare.simulate_request(method, spelling, headers=headers, body="{}",
                                         query_string="wait=false")
            assert resp.status_code == 401, (method, spelling, headers, resp.status_code, resp.text[:200])
            assert resp.headers.get("www-authenticate") == "Bearer"


def test_no_vm_is_made_through_a_respelled_path(bare, service):
    for spelling in ("//v1/vms", "/%2Fv1/vms", "/v1/vms/", "///v1/vms", "/./v1/vms"):
        resp = bare.simulate_post(spelling, json={"name": "sneaky", "state": "stopped"}, query_string="wait=false")
        assert resp.status_code == 401, spelling
    assert service.list_vms() == []


def test_unknown_paths_want_the_token_too(bare):
    """A caller without the token learns nothing of which paths exist."""
    for path in ("/nope", "/v2/vms", "/v1/secret", "/index.html", "/ui", "/uix/app.js",
                 "/healthz/extra"):
        assert bare.simulate_get(path).status_code == 401, path


def test_the_public_routes_are_exactly_the_listed_ones(bare):
    for path in PUBLIC:
        assert bare.simulate_get(path).status_code in (200, 503), path  # /readyz may be unready
    # the same public routes spelled otherwise are not public
    for path in ("//healthz", "/%2Fhealthz", "/HEALTHZ", "//ui/app.js", "/%2Fui/app.js", "/UI/app.js"):
        assert bare.simulate_get(path).status_code == 401, path


def test_with_the_token_every_route_is_reached(service):
    client = testing.TestClient(create_app(service, TOKEN), headers=AUTH)
    for method, path in ROUTES:
        resp = client.simulate_request(method, path)
        assert resp.status_code != 401, (method, path, resp.text[:200])


def test_an_empty_token_is_refused_at_start(service):
    with pytest.raises(ValueError):
        create_app(service, "")


def test_readyz_tells_its_checks_to_token_holders_only(service):
    """Public, so that a load balancer may ask it; but the checks name every host."""
    service.store.upsert_host({"name": "secret-host", "uri": "qemu+ssh://secret-host/system", "state": "enabled",
                               "up": 0, "last_seen": None, "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5,
                               "disk_ratio": 1.0, "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    app = create_app(service, TOKEN)
    bare = testing.TestClient(app).simulate_get("/readyz")
    assert set(bare.json) == {"ready"} and "secret-host" not in bare.text
    full = testing.TestClient(app, headers=AUTH).simulate_get("/readyz")
    assert full.status_code == bare.status_code and "host:secret-host" in full.json["checks"]
