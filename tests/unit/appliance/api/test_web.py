"""The web page's files (appliance/api/web.py): public, an allowlist, no way out of it,
the right types, and the headers that confine what the page may load."""
from __future__ import annotations

import os
from pathlib import Path

import falcon
import pytest
from falcon import testing

from appliance.api import error_shape, web
from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store

TOKEN = "web-token"


@pytest.fixture
def client(tmp_path):
    config = Config(home=tmp_path / "home", libvirt_uri="test:///default")
    config.prepare()
    store = Store(config.db_path)
    yield testing.TestClient(create_app(Service(store, config), TOKEN))
    store.close()


@pytest.fixture
def folder(tmp_path) -> Path:
    """A web folder with a page, a vendored module, and what must never be served."""
    root = tmp_path / "web"
    (root / "vendor" / "lib").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "app.js").write_text("export const x = 1;\n")
    (root / "vendor" / "lib" / "mod.mjs").write_text("export default 2;\n")
    (root / ".hidden.js").write_text("secret")
    (root / "notes.py").write_text("secret")
    (tmp_path / "outside.js").write_text("secret")
    (root / "link.js").symlink_to(tmp_path / "outside.js")
    (root / "vendor" / "linked").symlink_to(tmp_path, target_is_directory=True)
    return root


def test_the_allowlist_holds_the_plain_files_of_known_types_only(folder):
    assert set(web.allowlist(folder)) == {"index.html", "app.js", "vendor/lib/mod.mjs"}


def test_the_page_is_public_with_its_types_and_headers(client):
    page = client.simulate_get("/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/ui/app.js">' in page.text
    assert "<script>" not in page.text  # no inline script: the CSP allows none
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self' ws: wss:",
                      "img-src 'self' data: blob:", "frame-ancestors 'none'"):
        assert directive in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    script = client.simulate_get("/ui/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"  # ES modules need it
    assert client.simulate_get("/ui/app.css").headers["content-type"] == "text/css; charset=utf-8"


def test_an_unchanged_file_is_a_304(client):
    first = client.simulate_get("/ui/app.js")
    again = client.simulate_get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", [
    "/ui/../appliance/api/web.py", "/ui/%2e%2e/%2e%2e/pyproject.toml", "/ui/..%2F..%2Fsetup.py",
    "/ui//etc/passwd", "/ui/%2Fetc%2Fpasswd", "/ui/vendor/../app.js", "/ui/./app.js",
    "/ui/web.py", "/ui/", "/ui/APP.JS", "/ui/app.js%00.css", "/ui/vendor",
])
def test_nothing_outside_the_allowlist_is_served(client, path):
    resp = client.simulate_get(path)
    assert resp.status_code in (400, 401, 404), (path, resp.status_code, resp.text[:200])
    assert "export" not in resp.text and "import" not in resp.text


def test_traversal_finds_nothing_even_with_the_files_there(folder, tmp_path):
    files = web.WebFiles(folder)
    app = falcon.App()
    error_shape.install(app)
    app.add_route("/ui/{path:path}", files, suffix="file")
    c = testing.TestClient(app)
    assert c.simulate_get("/ui/vendor/lib/mod.mjs").status_code == 200
    for path in ("/ui/../outside.js", "/ui/link.js", "/ui/vendor/linked/outside.js",
                 "/ui/.hidden.js", "/ui/notes.py", f"/ui/{tmp_path}/outside.js"):
        assert c.simulate_get(path).status_code == 404, path


def test_the_api_still_wants_its_token(client):
    assert client.simulate_get("/v1/vms").status_code == 401
    # /ui/ lets a request without a token reach the page's files only; any other
    # resource under that prefix would still be refused by process_resource.
    assert client.simulate_get("/ui/v1/vms").status_code == 404
    assert client.simulate_get("/uix/app.js").status_code == 401


@pytest.mark.skipif(not os.path.isdir(web.WEB_DIR / "vendor" / "novnc"),
                    reason="the vendored libraries come from `make web`")
def test_the_vendored_modules_are_served_as_javascript(client):
    for path in ("/ui/vendor/novnc/core/rfb.js", "/ui/vendor/xterm/lib/xterm.mjs",
                 "/ui/vendor/xterm-addon-fit/lib/addon-fit.mjs"):
        resp = client.simulate_get(path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/javascript")
    assert client.simulate_get("/ui/vendor/xterm/css/xterm.css").status_code == 200


MARKUP_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function", "javascript:")


def test_the_page_renders_data_as_text_only():
    """Every value reaches the DOM through textContent / el(): no sink that parses markup
    or code in the page's own scripts (the vendored libraries are theirs)."""
    scripts = sorted(web.WEB_DIR.glob("*.js"))
    assert {p.name for p in scripts} >= {"app.js", "api.js", "vm.js", "consoles.js"}
    for script in scripts:
        text = script.read_text()
        assert [sink for sink in MARKUP_SINKS if sink in text] == [], script.name
    assert "<script>" not in (web.WEB_DIR / "index.html").read_text()
