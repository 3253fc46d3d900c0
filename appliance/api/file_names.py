"""The mount's file names under /v1/ (issue 16: "every file in the mount is the
resource at the same path"). The mount shows a resource that is one JSON
document as NAME.json (images/, groups/, networks/, backup-targets/,
templates/); REST names it NAME. So that the mount's path works in both views,
GET, HEAD and DELETE of /v1/COLLECTION/NAME.json are those of
/v1/COLLECTION/NAME: the same route, policy, audit and answer, and the same
content as the file (for templates/NAME.json, which holds the template's spec,
the spec: `req.context.mount_file`). Other methods keep REST's own names (a
body's shape is REST's, not a file's).

The path is rewritten before routing (Falcon routes after process_request), so
nothing after this middleware sees the .json name.
"""
from __future__ import annotations

import re

import falcon

COLLECTIONS = ("images", "groups", "networks", "backup-targets", "templates")
METHODS = frozenset({"GET", "HEAD", "DELETE"})
_FILE = re.compile(r"/v1/(" + "|".join(map(re.escape, COLLECTIONS)) + r")/([^/]+)\.json")


class MountFileNames:
    """Falcon middleware, first in the list: /v1/COLLECTION/NAME.json as /v1/COLLECTION/NAME."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.mount_file = False
        if req.method not in METHODS:
            return
        found = _FILE.fullmatch(req.path)
        if found is not None:
            req.path = f"/v1/{found[1]}/{found[2]}"
            req.context.mount_file = True
