"""The web page: its static files at `/` (index.html) and `/ui/{path}`, public.

Public because the files hold no data: the page asks the API for everything
with the token the user signs in with (sent as `Authorization: Bearer`).

Only files on an allowlist are served. It is made once, when the app is
built, by listing appliance/web/ (the page) and appliance/web/vendor/ (the
libraries `make web` unpacks): regular files (no symbolic links) whose every
path part is plain ([A-Za-z0-9_.-], not starting with a dot) and whose suffix
has a content type below. A request's path is looked up in that table and
never joined to a directory, so `..`, encoded slashes or absolute paths
cannot name anything else: they are 404.

Every answer carries a Content-Security-Policy (scripts from this origin
only, none inline; fetches to this origin and WebSockets: `ws: wss:` because
browsers that predate CSP 3 do not count ws://this-host as 'self'; images
from here and data:/blob: URLs, which noVNC's cursor uses), nosniff, no
framing and no Referer (a `#vnc` URL holds a ticket in its fragment, which
browsers never send, but nothing needs the Referer either). `style-src`
allows inline styles: xterm.js writes its theme and cell sizes into <style>
elements it creates (tests/web/test_browser.py fails on Chromium's refusals
without it); the page never renders data as markup (textContent only), so
no markup of an attacker's can carry a style. Cache: `no-cache` with an
ETag, so a browser revalidates (304) and never runs a stale page after an
upgrade.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import falcon

from appliance.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
INDEX = "index.html"
CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    # ES modules need a JavaScript type (browsers refuse a module served as text/plain).
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
PLAIN_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
MAX_FILES = 1000  # a bound on the table, whatever lies in the folder
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "connect-src 'self' ws: wss:; img-src 'self' data: blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def allowlist(root: Path = WEB_DIR) -> dict[str, Path]:
    """URL path below /ui/ -> the file, for every servable file under root."""
    table: dict[str, Path] = {}
    if not root.is_dir():
        return table
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (path.is_symlink() or not path.is_file() or path.suffix not in CONTENT_TYPES
                or not all(PLAIN_PART.fullmatch(part) for part in relative.parts)
                or any(parent.is_symlink() for parent in path.parents if root in parent.parents)):
            continue
        table[relative.as_posix()] = path
        if len(table) >= MAX_FILES:
            break
    return table


class WebFiles:
    """GET / and GET /ui/{path}: the page's files from the allowlist."""

    auth_public = True

    def __init__(self, root: Path = WEB_DIR):
        self.files = allowlist(root)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._send(req, resp, INDEX)

    def on_get_file(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        self._send(req, resp, path)

    def _send(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        file = self.files.get(name)
        if file is None:
            raise NotFound(f"no file {name[:100]!r} in the web page", "path")
        try:
            data = file.read_bytes()
        except OSError:  # removed since the table was made (`make web` again)
            raise NotFound(f"no file {name[:100]!r} in the web page", "path") from None
        resp.set_headers(HEADERS)
        etag = hashlib.sha256(data).hexdigest()[:32]
        resp.etag = etag  # Falcon quotes it; req.if_none_match gives the tags unquoted
        if etag in (req.if_none_match or ()):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = CONTENT_TYPES[file.suffix]
        resp.data = data


OPENAPI_PATHS = {
    "/": {"get": {"summary": "the web page (index.html): it holds no data and asks the API "
                             "with the token the user signs in with",
                  "security": [],
                  "responses": {"200": {"description": "the page",
                                        "content": {"text/html": {"schema": {"type": "string"}}}},
                                "304": {"description": "not modified (If-None-Match)"}}}},
    "/ui/{path}": {"get": {
        "summary": "the web page's files (scripts, styles, the vendored xterm.js and noVNC): "
                   "an allowlist, 404 for any other path",
        "security": [],
        "parameters": [{"name": "path", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the file", "content": {
            "text/javascript": {"schema": {"type": "string"}},
            "text/css": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}}}},
            "304": {"description": "not modified (If-None-Match)"},
            "404": {"description": "not a file of the page", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}},
}
