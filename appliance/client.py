"""A small REST client for vmctl: the URL and token come from the home directory."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from appliance.config import Config


class APIError(Exception):
    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        if isinstance(body, dict):
            reason = body.get("reason") or body.get("description") or body.get("title") or ""
            field = body.get("field")
            message = f"{reason} (field: {field})" if field else reason
        else:
            message = str(body)
        super().__init__(f"HTTP {status}: {message}")


class Client:
    def __init__(self, base_url: str, token: str | None, timeout: float = 600,
                 project: str | None = None):
        """project: the project every request acts in (`?project=`); None: the token's own."""
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            # urlopen would also take file: and ftp: URLs, and send the token there
            raise ValueError(
                f"the appliance's URL must start with http:// or https://, not {base_url[:40]!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.project = project

    @classmethod
    def from_home(cls, home: str, project: str | None = None) -> Client:
        config = Config.load(home)
        url = os.environ.get("VMCTL_URL") or f"http://{config.listen}"
        token = os.environ.get("VMCTL_TOKEN")
        if token is None and config.token_path.exists():
            token = config.token()
        return cls(url, token, project=project)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        headers: dict | None = None,
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        url = self.base_url + path
        if self.project is not None:
            query = {**(query or {}), "project": self.project}
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = raw
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        elif content_type:
            all_headers["Content-Type"] = content_type
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310 - http(s), see __init__
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) only, see __init__
                payload = resp.read()
                kind = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload.decode(errors="replace")
            raise APIError(err.code, parsed) from None
        except urllib.error.URLError as err:
            raise APIError(
                0, {"reason": f"cannot reach the appliance at {self.base_url}: {err.reason}"}
            ) from None
        if not payload:
            return None
        if "json" in kind:
            return json.loads(payload)
        return payload.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)
